"""Checkpoints: a Hugging Face directory that ``mopd-eval bench --model DIR`` loads, plus resume state.

Layout of ``OUTPUT_DIR/checkpoint-STEP/``::

    config.json, model.safetensors, generation_config.json, tokenizer files   (the policy)
    teacher/            the EMA teacher, also a Hugging Face directory (EMA runs only)
    optimizer/          optimizer state, sharded: torch.distributed.checkpoint (DCP) files
    trainer_state.pt    scheduler, step, data position, world size
    trainer_state.json  the same in Hugging Face Trainer's format (global_step, log_history...)
    rng_state_RANK.pt   Python, NumPy and torch RNG states of each rank
    train_config.json   the run's configuration

The weights are saved in ``save_dtype`` (float32 by default; bfloat16 halves the files). The
optimizer state is written with ``torch.distributed.checkpoint``: each rank saves its own shards
of the FSDP-sharded state (nothing is gathered on rank 0), keyed by parameter names, and DCP
reshards on load, so a checkpoint resumes on another number of processes as well. Checkpoints
of earlier versions, with the full optimizer state inside ``trainer_state.pt``, still resume.
A checkpoint is written into ``checkpoint-STEP.tmp`` and renamed when complete: a directory
named ``checkpoint-STEP`` is always whole, and a killed save leaves only a ``.tmp`` to delete.
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
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from mopd_eval.errors import InputError
from training.distributed import DistInfo, barrier

_CKPT_RE = re.compile(r"^checkpoint-(\d+)$")
STATE_FILE = "trainer_state.pt"
HF_STATE_FILE = "trainer_state.json"
OPTIMIZER_DIR = "optimizer"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The unsharded weights on CPU (on rank 0 only when sharded; an empty dict elsewhere)."""
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def save_hf_dir(model: torch.nn.Module, state: dict[str, torch.Tensor], path: Path, tokenizer: Any = None,
                dtype: str = "float32") -> None:
    """Write ``state`` with ``model``'s config as a Hugging Face directory (safetensors).

    Floating-point tensors are cast to ``dtype`` and ``config.json`` names it, so that
    ``from_pretrained(dtype="auto")`` loads what was saved.
    """
    path.mkdir(parents=True, exist_ok=True)
    # Full state dicts of sharded models hold separate copies of tied parameters (a tied LM
    # head), which save_pretrained would then store twice: keep the first name of each tie.
    seen: dict[int, str] = {}
    tied = set()
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in seen:
            tied.add(name)
        seen.setdefault(id(p), name)
    target = DTYPES[dtype]
    state = {k: (v.detach().to("cpu", target) if v.is_floating_point() else v.detach().to("cpu")).contiguous()
             for k, v in state.items() if k not in tied}
    _drop_gguf_origin(model)
    model.save_pretrained(path, state_dict=state, safe_serialization=True)
    # save_pretrained records the in-memory (float32) dtype; the files hold ``dtype``.
    cfg_file = path / "config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg.update({k: dtype for k in ("dtype", "torch_dtype") if k in cfg} or {"dtype": dtype})
    cfg_file.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
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
    save_dtype: str = "float32",
    hf_state: dict | None = None,
) -> Path:
    """Write ``checkpoint-STEP`` (collective: every rank must call it). Returns its path.

    ``hf_state``: the ``trainer_state.json`` content (``hf_trainer_state``), written by rank 0.
    """
    root = Path(output_dir)
    final = root / f"checkpoint-{step}"
    tmp = root / f"checkpoint-{step}.tmp"
    if info.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier(info)
    weights = full_state_dict(policy)
    teacher_weights = full_state_dict(teacher) if teacher is not None else None
    # Sharded state (DTensors under FSDP): every rank writes its own part, none gathers it all.
    # With a lower save dtype the float32 master weights go there too, so a resume is exact.
    shards = {"optimizer": get_optimizer_state_dict(policy, optimizer)}
    if save_dtype != "float32":
        shards["model"] = get_model_state_dict(policy)
        if teacher is not None:
            shards["teacher"] = get_model_state_dict(teacher)
    dcp.save(shards, checkpoint_id=tmp / OPTIMIZER_DIR)
    torch.save(_rng_state(), tmp / f"rng_state_{info.rank}.pt")
    if info.is_main:
        save_hf_dir(policy, weights, tmp, tokenizer, save_dtype)
        if teacher_weights is not None:
            save_hf_dir(teacher, teacher_weights, tmp / "teacher", tokenizer, save_dtype)
        torch.save({"scheduler": scheduler.state_dict(), "world_size": info.world_size,
                    "master_weights": sorted(set(shards) - {"optimizer"}), **state}, tmp / STATE_FILE)
        (tmp / "train_config.json").write_text(json.dumps(config, indent=2, default=str) + "\n")
        if hf_state is not None:
            (tmp / HF_STATE_FILE).write_text(json.dumps(hf_state, indent=2, default=str) + "\n")
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


def restore_optimizer(policy: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict, path: Path) -> None:
    """Load the optimizer state of checkpoint ``path`` (DCP shards, or an older full state)."""
    if "optimizer" in state:  # written before the state was sharded
        set_optimizer_state_dict(policy, optimizer, state["optimizer"], options=StateDictOptions(full_state_dict=True))
        return
    # The target must hold every entry to be read: get_optimizer_state_dict creates the state
    # (a zero-lr step) when the optimizer has none yet; DCP then fills it in place, resharding.
    target = {"optimizer": get_optimizer_state_dict(policy, optimizer)}
    dcp.load(target, checkpoint_id=path / OPTIMIZER_DIR)
    set_optimizer_state_dict(policy, optimizer, target["optimizer"])


def restore_master_weights(models: dict[str, torch.nn.Module], state: dict, path: Path) -> None:
    """Overwrite ``models`` (``{"model": policy, "teacher": ...}``) with the float32 weights kept in
    the DCP shards when the Hugging Face files were saved in a lower dtype."""
    names = [n for n in state.get("master_weights", []) if n in models]
    if not names:
        return
    target = {n: get_model_state_dict(models[n]) for n in names}
    dcp.load(target, checkpoint_id=path / OPTIMIZER_DIR)
    for n in names:
        set_model_state_dict(models[n], target[n])


# Hugging Face / TRL names for our per-step metrics in trainer_state.json's log_history.
HF_LOG_KEYS = {
    "actor/loss": "loss", "actor/grad_norm": "grad_norm", "actor/lr": "learning_rate",
    "critic/rewards/mean": "reward", "rollouts/group_reward_std": "reward_std",
    "response_length/mean": "completions/mean_length", "response_length/clip_ratio": "completions/clipped_ratio",
    "teacher/context_fraction": "teacher/context_fraction", "timing_s/step": "step_time",
}


def hf_trainer_state(rows: list[dict], *, step: int, max_steps: int, save_steps: int, batch_size: int,
                     epoch: float) -> dict:
    """``trainer_state.json`` as Hugging Face's ``Trainer`` writes it, from our metrics rows.

    ``log_history`` has one entry per logged step up to ``step`` with HF/TRL names (``loss``,
    ``grad_norm``, ``learning_rate``, ``reward``...); NaN (a skipped update's loss) becomes null.
    """
    history = []
    for row in rows:
        if row.get("step", 0) > step:
            continue
        entry = {"step": row["step"]}
        for ours, theirs in HF_LOG_KEYS.items():
            if ours in row:
                v = row[ours]
                entry[theirs] = None if isinstance(v, float) and not np.isfinite(v) else v
        history.append(entry)
    return {
        "best_global_step": None, "best_metric": None, "best_model_checkpoint": None,
        "epoch": epoch, "eval_steps": None, "global_step": step, "is_hyper_param_search": False,
        "is_local_process_zero": True, "is_world_process_zero": True, "log_history": history,
        "logging_steps": 1, "max_steps": max_steps, "num_input_tokens_seen": 0, "num_train_epochs": None,
        "save_steps": save_steps, "stateful_callbacks": {}, "total_flos": 0.0, "train_batch_size": batch_size,
        "trial_name": None, "trial_params": None,
    }


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
