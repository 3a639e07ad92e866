"""The one group of engine options shared by every command that loads a model.

``signal``, ``rollouts`` and ``bench`` declare it with ``add_engine_arguments`` and read it with
``engine_options(args)``; the trainer's config carries the same names as keys (``dtype``,
``tensor_parallel_size``, ``engine_args``...). Every value is checked here, before any model
loads, and a bad one is an ``InputError`` naming its flag (exit 2). ``make_engine`` then hands
every value to the engine:

* ``hf``: ``device``, ``dtype`` and ``attn_implementation`` to ``HFEngine`` (which passes them to
  ``from_pretrained``), and ``--engine-arg`` pairs to ``from_pretrained`` unchanged;
  ``max_model_len`` bounds prompt + response. ``--tensor-parallel-size``, ``--data-parallel-size``,
  ``--gpu-memory-utilization`` and ``--enforce-eager`` are vLLM's and refused with ``hf`` (spread
  an hf run over GPUs with ``torchrun``, docs/gpus.md).
* ``vllm``: ``dtype``, ``tensor_parallel_size``, ``data_parallel_size``, ``max_model_len``,
  ``gpu_memory_utilization``, ``enforce_eager`` and the ``--engine-arg`` pairs to ``vllm.LLM``
  unchanged. vLLM places the model itself, so ``--device`` must stay ``auto`` and
  ``--attn-implementation`` unset (vLLM's attention backend is chosen by vLLM; see its docs).

``--device auto`` is ``cuda:LOCAL_RANK`` when CUDA is present (``LOCAL_RANK`` is 0 outside
torchrun, so each torchrun rank gets its own GPU) and ``cpu`` otherwise. ``--dtype auto`` is
bfloat16 on a GPU that supports it (else float16) and float32 on CPU (docs/gpus.md says why the
CPU default stays float32).
"""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from mopd_eval.engines.base import MASK_ATTENTION
from mopd_eval.errors import InputError

ENGINES = ("hf", "vllm")
DTYPES = ("auto", "float32", "bfloat16", "float16")
# Options that only vLLM takes, with the value meaning "not given".
VLLM_ONLY = {
    "tensor_parallel_size": 1,
    "data_parallel_size": 1,
    "gpu_memory_utilization": None,
    "enforce_eager": False,
}
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class EngineOptions:
    """How to build the engine; the defaults are the suite's CPU defaults."""

    engine: str = "hf"
    device: str = "auto"
    dtype: str = "auto"
    attn_implementation: str | None = None  # None: sdpa for hf, vLLM's choice for vllm
    tensor_parallel_size: int = 1
    data_parallel_size: int = 1
    max_model_len: int | None = None
    gpu_memory_utilization: float | None = None  # None: vLLM engine's default (0.9 GPU, 0.3 CPU)
    enforce_eager: bool = False
    engine_args: dict[str, Any] = field(default_factory=dict)

    def validated(self, flags: bool = True) -> EngineOptions:
        """``self`` after checking every value; ``InputError`` names the field (``--dtype`` with
        ``flags``, else the config key ``dtype``). Touches no model and no GPU memory."""
        check_options(self, flags)
        return self

    def resolved_device(self) -> str:
        """The torch device string ``auto`` stands for here (see the module docstring)."""
        return resolve_device(self.device)

    def resolved_dtype(self, device: str | None = None) -> str:
        """The dtype name ``auto`` stands for on ``device`` (default: the resolved device)."""
        if self.dtype != "auto" or self.engine == "vllm":
            return self.dtype
        dev = device or self.resolved_device()
        if not dev.startswith("cuda"):
            return "float32"
        import torch

        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"

    def key_fields(self) -> dict[str, Any]:
        """What changes the numbers, for a run's content key: the engine, the resolved dtype and
        attention implementation, the device kind, ``max_model_len``, tensor parallelism and the
        ``--engine-arg`` pairs. Not the memory fraction, the data-parallel size or the GPU index
        (they change speed, not scores)."""
        dev = self.resolved_device() if self.engine == "hf" else "auto"
        key: dict[str, Any] = {
            "engine": self.engine,
            "dtype": self.resolved_dtype(dev),
            "attn_implementation": self.hf_attention() if self.engine == "hf" else self.attn_implementation,
            "device_type": dev.split(":")[0],
            "max_model_len": self.max_model_len,
        }
        if self.engine == "vllm":
            key["tensor_parallel_size"] = self.tensor_parallel_size
            key["enforce_eager"] = self.enforce_eager
        if self.engine_args:
            key["engine_args"] = dict(sorted(self.engine_args.items()))
        return key

    def hf_attention(self) -> str:
        """The attention implementation the hf engine scores with: the one asked for when it takes
        tree masks, else sdpa (``HFEngine`` warns when it falls back)."""
        want = self.attn_implementation or "sdpa"
        return want if want in MASK_ATTENTION else "sdpa"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def add_engine_arguments(p: argparse.ArgumentParser) -> None:
    """The engine flags of ``signal``, ``rollouts`` and ``bench`` (docs/gpus.md)."""
    g = p.add_argument_group("engine (docs/gpus.md)")
    g.add_argument("--engine", choices=ENGINES, default="hf", help="hf (transformers) or vllm (default hf)")
    g.add_argument("--device", default="auto",
                   help="auto, cpu, cuda or cuda:N (default auto: cuda:LOCAL_RANK when CUDA exists, else cpu)")
    g.add_argument("--dtype", default="auto", choices=DTYPES,
                   help="weights and activations (default auto: bfloat16 on GPU, float32 on CPU)")
    g.add_argument("--attn-implementation", default=None,
                   help="transformers attention (hf: sdpa (default) or eager take the scoring masks; "
                        "flash attention falls back to sdpa)")
    g.add_argument("--tensor-parallel-size", type=int, default=1, help="vllm: GPUs per model (default 1)")
    g.add_argument("--data-parallel-size", type=int, default=1,
                   help="vllm: model replicas (default 1); for hf use torchrun")
    g.add_argument("--max-model-len", type=int, default=None, help="longest prompt + response in tokens")
    g.add_argument("--gpu-memory-utilization", type=float, default=None,
                   help="vllm: fraction of GPU memory to reserve (default 0.9; 0.3 of host memory on CPU)")
    g.add_argument("--enforce-eager", action="store_true", help="vllm: no CUDA graphs")
    g.add_argument("--engine-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="passed unchanged to vllm.LLM or from_pretrained; VALUE is read as YAML "
                        "(8, true, null, text); repeatable")


def engine_options(args: argparse.Namespace) -> EngineOptions:
    """The checked ``EngineOptions`` of parsed flags (``InputError`` naming the flag when bad)."""
    opts = EngineOptions(
        engine=args.engine,
        device=args.device,
        dtype=args.dtype,
        attn_implementation=args.attn_implementation,
        tensor_parallel_size=args.tensor_parallel_size,
        data_parallel_size=args.data_parallel_size,
        max_model_len=args.max_model_len,
        gpu_memory_utilization=args.gpu_memory_utilization,
        enforce_eager=args.enforce_eager,
        engine_args=parse_engine_args(args.engine_arg),
    )
    return opts.validated(flags=True)


def parse_engine_args(values: list[str] | None, name: str = "--engine-arg") -> dict[str, Any]:
    """``KEY=VALUE`` strings -> {key: YAML value}; a missing ``=``, a bad key or a repeated key is
    an ``InputError``."""
    import yaml

    out: dict[str, Any] = {}
    for v in values or []:
        key, sep, raw = v.partition("=")
        key = key.strip()
        if not sep or not _KEY.fullmatch(key):
            raise InputError(f"expected KEY=VALUE with KEY a Python identifier, got {v!r}", field=name)
        if key in out:
            raise InputError(f"{key!r} given twice", field=name)
        try:
            out[key] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as e:
            raise InputError(f"{key}: value {raw!r} is not YAML ({e.__class__.__name__})", field=name) from None
    return out


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda:LOCAL_RANK`` when CUDA is available, else ``cpu``; others unchanged."""
    if device != "auto":
        return device
    import torch

    if torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0')) % max(1, torch.cuda.device_count())}"
    return "cpu"


def check_options(o: EngineOptions, flags: bool = True) -> None:
    """Raise ``InputError`` on the first bad value of ``o`` (see ``EngineOptions.validated``)."""

    def bad(name: str, msg: str) -> InputError:
        flag = "--engine-arg" if name == "engine_args" else f"--{name.replace('_', '-')}"
        return InputError(msg, field=flag if flags else name)

    if o.engine not in ENGINES:
        raise bad("engine", f"unknown engine {o.engine!r}; choose from {', '.join(ENGINES)}")
    if o.dtype not in DTYPES:
        raise bad("dtype", f"unknown dtype {o.dtype!r}; choose from {', '.join(DTYPES)}")
    _check_device(o, bad)
    _check_numbers(o, bad)
    if not isinstance(o.engine_args, dict) or not all(isinstance(k, str) and _KEY.fullmatch(k) for k in o.engine_args):
        raise bad("engine_args", "must map identifiers to values")
    if o.engine == "hf":
        _check_hf(o, bad)
    else:
        _check_vllm(o, bad)


def _check_device(o: EngineOptions, bad) -> None:
    if not isinstance(o.device, str) or not _DEVICE.fullmatch(o.device):
        raise bad("device", f"expected auto, cpu, cuda or cuda:N, got {o.device!r}")
    if o.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise bad("device", f"{o.device!r} asked for, but torch sees no CUDA device "
                                f"(torch {torch.__version__}); use --device cpu or auto")
        index = int(o.device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise bad("device", f"{o.device!r}: only {torch.cuda.device_count()} CUDA device(s) visible")


def _check_numbers(o: EngineOptions, bad) -> None:
    for name in ("tensor_parallel_size", "data_parallel_size"):
        v = getattr(o, name)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise bad(name, f"must be a positive integer, got {v!r}")
    if o.max_model_len is not None and (
        not isinstance(o.max_model_len, int) or isinstance(o.max_model_len, bool) or o.max_model_len < 2
    ):
        raise bad("max_model_len", f"must be an integer >= 2, got {o.max_model_len!r}")
    g = o.gpu_memory_utilization
    if g is not None and (isinstance(g, bool) or not isinstance(g, (int, float)) or not 0 < g <= 1):
        raise bad("gpu_memory_utilization", f"must lie in (0, 1], got {g!r}")
    if not isinstance(o.enforce_eager, bool):
        raise bad("enforce_eager", f"must be true or false, got {o.enforce_eager!r}")


def _check_hf(o: EngineOptions, bad) -> None:
    for name, unset in VLLM_ONLY.items():
        if getattr(o, name) != unset:
            hint = " (spread hf runs over processes or GPUs with torchrun)" if "parallel" in name else ""
            raise bad(name, f"is a vllm option; the hf engine does not take it{hint}")
    if o.attn_implementation is not None:
        known = attention_implementations()
        if o.attn_implementation not in known and "/" not in o.attn_implementation:
            raise bad("attn_implementation", f"unknown attention implementation {o.attn_implementation!r}; "
                                             f"transformers knows {', '.join(known)} (or a hub kernel org/name)")
    # These are set by the named options; two spellings of one setting would be ambiguous.
    for k in ("dtype", "torch_dtype", "attn_implementation", "device_map", "device"):
        if k in o.engine_args:
            named = {"torch_dtype": "dtype", "device_map": "device"}.get(k, k)
            raise bad("engine_args", f"{k} is set by --{named.replace('_', '-')}, not by an engine argument")


def _check_vllm(o: EngineOptions, bad) -> None:
    if o.device != "auto":
        raise bad("device", "vLLM places the model itself: keep auto (choose GPUs with CUDA_VISIBLE_DEVICES)")
    if o.attn_implementation is not None:
        raise bad("attn_implementation", "vLLM chooses its own attention backend (see vLLM's "
                                         "attention backend setting); this option is the hf engine's")
    named = {"model", "tensor_parallel_size", "data_parallel_size", "dtype", "max_model_len",
             "gpu_memory_utilization", "enforce_eager", "seed", "skip_tokenizer_init"}
    for k in o.engine_args:
        if k in named:
            raise bad("engine_args", f"{k} is set by its own option or by the engine, not by an engine argument")


def attention_implementations() -> list[str]:
    """The attention implementation names transformers registers, and ``eager``."""
    try:
        from transformers import AttentionInterface

        return ["eager", *AttentionInterface._global_mapping]
    except (ImportError, AttributeError):  # a transformers without the public registry
        return ["eager", "sdpa", "flash_attention_2", "flash_attention_3", "flex_attention"]


def make_engine(model: str | os.PathLike[str], options: EngineOptions, *, purpose: str = "both"):
    """Build ``options.engine`` on ``model`` with every option passed on (module docstring).

    ``purpose`` is ``score``, ``generate`` or ``both``: a vLLM engine that scores runs without
    prefix caching (``VLLMEngine``'s docstring says why).
    """
    from mopd_eval.engines import make_engine as build

    return build(options.engine, model, **engine_kwargs(options, purpose))


def engine_kwargs(options: EngineOptions, purpose: str = "both") -> dict[str, Any]:
    """The keyword arguments ``make_engine`` passes to ``HFEngine`` or ``VLLMEngine``."""
    if purpose not in ("score", "generate", "both"):
        raise ValueError(f"purpose must be score, generate or both, not {purpose!r}")
    o = options
    if o.engine == "hf":
        device = o.resolved_device()
        return {"device": device, "dtype": o.resolved_dtype(device), "attn_implementation": o.attn_implementation,
                "max_model_len": o.max_model_len, "model_kwargs": dict(o.engine_args)}
    return {"tensor_parallel_size": o.tensor_parallel_size, "data_parallel_size": o.data_parallel_size,
            "gpu_memory_utilization": o.gpu_memory_utilization, "dtype": o.dtype,
            "max_model_len": o.max_model_len, "enforce_eager": o.enforce_eager,
            "for_scoring": purpose != "generate", **o.engine_args}

