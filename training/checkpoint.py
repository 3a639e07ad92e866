"""Checkpoints: a Hugging Face directory that ``mopd-eval bench --model DIR`` loads, plus resume state.

Layout of ``OUTPUT_DIR/checkpoint-STEP/``::

    config.json, model.safetensors, generation_config.json, tokenizer files   (the policy)
    teacher/            the EMA teacher, also a Hugging Face directory (EMA runs only)
    trainer_state.pt    optimizer (full, keyed by parameter names), scheduler, step, data position
    rng_state_RANK.pt   Python, NumPy and torch RNG states of each rank
    train_config.json   the run's configuration

Optimizer state is stored unsharded and keyed by parameter names (``torch.distributed.checkpoint``'s
full state dicts), so a checkpoint resumes on another number of processes as well. A checkpoint
is written into ``checkpoint-STEP.tmp`` and renamed when complete: a directory named
``checkpoint-STEP`` is always whole, and a killed save leaves only a ``.tmp`` to delete.
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)

from mopd_eval.errors import InputError
from training.distributed import DistInfo, barrier

_CKPT_RE = re.compile(r"^checkpoint-(\d+)$")
STATE_FILE = "trainer_state.pt"


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The unsharded weights on CPU (on rank 0 only when sharded; an empty dict elsewhere)."""
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def save_hf_dir(model: torch.nn.Module, state: dict[str, torch.Tensor], path: Path, tokenizer: Any = None) -> None:
    """Write ``state`` with ``model``'s config as a Hugging Face directory (safetensors)."""
    path.mkdir(parents=True, exist_ok=True)
    # Full state dicts of sharded models hold separate copies of tied parameters (a tied LM
    # head), which save_pretrained would then store twice: keep the first name of each tie.
    seen: dict[int, str] = {}
    tied = set()
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in seen:
            tied.add(name)
        seen.setdefault(id(p), name)
    state = {k: v.detach().to("cpu").contiguous() for k, v in state.items() if k not in tied}
    _drop_gguf_origin(model)
    model.save_pretrained(path, state_dict=state, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(path)


def _drop_gguf_origin(model: torch.nn.Module) -> None:
    """Forget a GGUF ``quantization_config`` inherited from the model's source directory.

    The embedded model's converted checkpoint holds plain float32 weights but its config still
    names the GGUF file it came from, which makes transformers treat the model as quantized and
    refuse ``save_pretrained``. What we save are the trained float32 weights: a plain checkpoint.
    """
    q = getattr(model.config, "quantization_config", None)
    method = q.get("quant_method") if isinstance(q, dict) else getattr(q, "quant_method", None)
    if q is not None and str(getattr(method, "value", method)).lower() == "gguf":
        del model.config.quantization_config
        model.hf_quantizer = None
        if hasattr(model, "is_quantized"):
            with contextlib.suppress(AttributeError):
                model.is_quantized = False


def list_checkpoints(output_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under ``output_dir``, oldest first."""
    out = []
    root = Path(output_dir)
    if root.is_dir():
        for p in root.iterdir():
            m = _CKPT_RE.match(p.name)
            if m and p.is_dir() and (p / STATE_FILE).is_file():
                out.append((int(m.group(1)), p))
    return sorted(out)


def resolve_resume(resume: bool | str, output_dir: str | Path) -> Path | None:
    """``True``: the newest checkpoint in ``output_dir`` (None if there is none); a path: that one."""
    if resume is False or resume is None:
        return None
    if resume is True or str(resume).lower() in ("true", "latest", "auto"):
        found = list_checkpoints(output_dir)
        return found[-1][1] if found else None
    path = Path(resume)
    if not (path / STATE_FILE).is_file():
        raise InputError(f"not a training checkpoint (no {STATE_FILE})", path=path, field="resume_from_checkpoint")
    return path


def save_checkpoint(
    output_dir: str | Path,
    step: int,
    *,
    policy: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    tokenizer: Any,
    info: DistInfo,
    state: dict,
    config: dict,
    teacher: torch.nn.Module | None = None,
    save_total_limit: int | None = None,
) -> Path:
    """Write ``checkpoint-STEP`` (collective: every rank must call it). Returns its path."""
    root = Path(output_dir)
    final = root / f"checkpoint-{step}"
    tmp = root / f"checkpoint-{step}.tmp"
    if info.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier(info)
    weights = full_state_dict(policy)
    teacher_weights = full_state_dict(teacher) if teacher is not None else None
    optim = get_optimizer_state_dict(policy, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    torch.save(_rng_state(), tmp / f"rng_state_{info.rank}.pt")
    if info.is_main:
        save_hf_dir(policy, weights, tmp, tokenizer)
        if teacher_weights is not None:
            save_hf_dir(teacher, teacher_weights, tmp / "teacher", tokenizer)
        torch.save({"optimizer": optim, "scheduler": scheduler.state_dict(), "world_size": info.world_size, **state},
                   tmp / STATE_FILE)
        (tmp / "train_config.json").write_text(json.dumps(config, indent=2, default=str) + "\n")
    barrier(info)
    if info.is_main:
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        if save_total_limit:
            for _, old in list_checkpoints(root)[:-save_total_limit]:
                shutil.rmtree(old, ignore_errors=True)
    barrier(info)
    return final


def load_trainer_state(path: Path) -> dict:
    # weights_only=False: the file holds our own optimizer/scheduler dicts and plain Python values.
    return torch.load(path / STATE_FILE, map_location="cpu", weights_only=False)


def restore_optimizer(policy: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    set_optimizer_state_dict(policy, optimizer, state["optimizer"], options=StateDictOptions(full_state_dict=True))


def restore_rng(path: Path, info: DistInfo) -> None:
    """Restore this rank's RNG states (a rank the checkpoint did not have keeps its seeding)."""
    f = path / f"rng_state_{info.rank}.pt"
    if not f.is_file():
        return
    s = torch.load(f, map_location="cpu", weights_only=False)
    random.setstate(s["python"])
    np.random.set_state(s["numpy"])
    torch.set_rng_state(s["torch"])
    if s.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def _rng_state() -> dict:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }
