"""The trainer's configuration: one dataclass, loaded from YAML, overridden by ``key=value``.

Field names follow TRL's ``GRPOConfig`` / ``GKDConfig`` where TRL has the concept
(``learning_rate``, ``num_generations``, ``max_completion_length``, ``epsilon`` for the clip range,
``scale_rewards``, ``gradient_accumulation_steps``, ``save_steps``, ``resume_from_checkpoint``,
``report_to``...). ``beta`` means what it means in the TRL trainer of the same kind: for GRPO
(``GRPOConfig.beta``) the KL coefficient against the reference policy, default 0; for the
distillation algorithms (``GKDConfig.beta``) the divergence's mixing weight, 0 = forward
``KL(teacher || student)``, 1 = reverse ``KL(student || teacher)``, default 0.5 (the JSD).
Renamed keys (``RENAMED``) are refused with a message naming the new key. Precedence: dataclass
defaults < the algorithm's defaults (``training.algorithms``) < the YAML file < command-line
overrides.

An override is ``key=value`` with the value parsed as YAML (``max_steps=4``, ``bf16=true``,
``condition=2s1f``, ``task_kwargs.per_level=5``); a dotted key sets one entry of a mapping field.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import yaml

from mopd_eval.contexts import BUILTIN_CONDITIONS, Condition
from mopd_eval.errors import InputError
from training.algorithms import TRAINING_CONDITIONS, AlgorithmSpec, get_algorithm

TEACHERS = ("ema", "frozen", "external", "none")
DISTILL_VARIANTS = ("topk", "full", "sampled")
SCALE_REWARDS = ("group", "batch", "none")
REPORTERS = ("tensorboard", "wandb")
SAVE_DTYPES = ("float32", "bfloat16", "float16")
# Old key -> the message that names its replacement (refused, never silently mapped: a mapped
# ``alpha`` would collide with a GRPO-style ``beta`` in the same file).
RENAMED = {
    "alpha": "renamed to beta (TRL GKDConfig's name): the divergence's mixing weight, "
             "0 = forward KL(teacher||student), 1 = reverse KL(student||teacher)",
}
# Default ``beta`` by loss kind, as in TRL: GRPOConfig.beta = 0.0, GKDConfig.beta = 0.5.
BETA_DEFAULTS = {"policy_gradient": 0.0, "distill": 0.5}


@dataclass
class TrainConfig:
    """Everything a run needs; ``to_dict`` is written next to every checkpoint."""

    algo: str = "mopd"  # a name in training.algorithms.ALGORITHMS
    # --- model and teacher
    model_name_or_path: str = "smollm2-135m"
    teacher: str = "ema"  # ema | frozen | external | none (grpo)
    teacher_model_name_or_path: str | None = None  # the external teacher (must share the tokenizer)
    teacher_ema_rate: float = 0.05  # theta_T <- (1 - rate) theta_T + rate theta per update
    # --- data
    task: str = "arith"
    task_kwargs: dict = field(default_factory=dict)  # e.g. {per_level: 20} for arith
    data_path: str | None = None  # task data file; None = the task's built-in source
    data_seed: int = 2000  # seed of generated problems (arith); 0 is the signal set, 1000 the bench set
    max_prompts: int | None = None  # keep the first N problems
    # --- rollouts
    engine: Literal["hf", "vllm"] = "hf"
    # The engine options of signal/rollouts/bench under the same names (mopd_eval.engine_options,
    # docs/gpus.md). The hf engine samples from the policy itself, so only max_model_len applies
    # to it; the others are vllm's (its dtype, parallelism, memory, and LLM kwargs in engine_args).
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    attn_implementation: str | None = None
    tensor_parallel_size: int = 1
    data_parallel_size: int = 1
    max_model_len: int | None = None
    gpu_memory_utilization: float | None = None
    enforce_eager: bool = False
    engine_args: dict = field(default_factory=dict)
    # vllm (colocated, training.vllm_colocate): sleep between generations to free the GPU for the
    # update (TRL's name); gpu_memory_utilization defaults to 0.3 there, as in TRL's colocate mode.
    vllm_enable_sleep_mode: bool = False
    num_prompts_per_step: int = 32  # global, over all ranks
    num_generations: int = 8  # rollouts per prompt
    max_completion_length: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    # --- teacher context
    condition: str | dict = "2s1f"  # a built-in/training condition name or Condition fields
    peer_order: Literal["group", "random"] = "group"
    # --- the loss's beta (TRL's meaning per trainer kind; module docstring). None: 0.0 for GRPO
    # (KL coefficient, no reference model), 0.5 for distillation (0: KL(T||S), 1: KL(S||T), 0.5: JSD)
    beta: float | None = None
    # --- distillation loss (docs/training.md)
    distill_topk: int = 100
    distill_variant: Literal["topk", "full", "sampled"] = "topk"
    # --- GRPO
    epsilon: float = 0.2  # clip range of the ratio
    scale_rewards: str = "group"  # group | batch | none: divide group-centred rewards by that std
    # --- optimisation
    learning_rate: float = 1e-5
    lr_scheduler_type: str = "constant_with_warmup"  # any transformers.get_scheduler name
    warmup_steps: int = 10
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    max_steps: int = 100
    gradient_accumulation_steps: int = 1  # micro-batches per rank per step
    # --- distributed / precision
    fsdp: bool | None = None  # None: FSDP2 when more than one process
    bf16: bool | None = None  # None: bf16 mixed precision on GPU, fp32 on CPU (true: AVX512-BF16/AMX CPUs)
    gradient_checkpointing: bool = False
    # --- outputs
    output_dir: str = "out/train"
    save_steps: int = 0  # 0: checkpoint only at the end
    save_total_limit: int | None = None  # keep the newest N checkpoints
    save_dtype: str = "float32"  # dtype of the saved policy/teacher weights (bfloat16 halves them)
    resume_from_checkpoint: bool | str = False  # True: the newest in output_dir; or a path
    seed: int = 0
    # "none", "tensorboard", "wandb", "all" or a list; "auto": tensorboard when it is installed.
    # W&B follows its environment (WANDB_MODE=offline writes output_dir/wandb without network).
    report_to: str | list = "auto"

    def __post_init__(self) -> None:
        if self.beta is None:
            self.beta = BETA_DEFAULTS[self.spec.loss]
        self._coerce_floats()
        self.validate()

    def _coerce_floats(self) -> None:
        # YAML 1.1 reads "1e-5" (no dot) as a string; accept it, and ints, for float fields.
        for f in fields(self):
            v = getattr(self, f.name)
            if str(f.type).startswith("float") and isinstance(v, (str, int)) and not isinstance(v, bool):
                try:
                    setattr(self, f.name, float(v))
                except ValueError:
                    raise InputError(f"expected a number, got {v!r}", field=f.name) from None

    def validate(self) -> None:
        def bad(name: str, msg: str) -> InputError:
            return InputError(msg, field=name)

        spec = self.spec
        if self.teacher not in TEACHERS:
            raise bad("teacher", f"unknown teacher {self.teacher!r}; choose from {', '.join(TEACHERS)}")
        if not spec.uses_teacher and self.teacher != "none":
            raise bad("teacher", f"{self.algo} uses no teacher; set teacher=none")
        if spec.uses_teacher and self.teacher == "none":
            raise bad("teacher", f"{self.algo} distils from a teacher: ema, frozen or external")
        if self.teacher == "external" and not self.teacher_model_name_or_path:
            raise bad("teacher_model_name_or_path", "teacher=external needs teacher_model_name_or_path")
        self._validate_beta()
        if self.distill_variant not in DISTILL_VARIANTS:
            raise bad("distill_variant", f"choose from {', '.join(DISTILL_VARIANTS)}")
        if self.scale_rewards not in SCALE_REWARDS:
            hint = " (true was 'group', false 'none')" if isinstance(self.scale_rewards, bool) else ""
            raise bad("scale_rewards", f"choose from {', '.join(SCALE_REWARDS)}, got {self.scale_rewards!r}{hint}")
        if self.save_dtype not in SAVE_DTYPES:
            raise bad("save_dtype", f"choose from {', '.join(SAVE_DTYPES)}, got {self.save_dtype!r}")
        self.reporters()
        if not 0.0 < self.teacher_ema_rate <= 1.0:
            raise bad("teacher_ema_rate", "must lie in (0, 1]")
        for name in ("num_prompts_per_step", "num_generations", "max_completion_length",
                     "distill_topk", "gradient_accumulation_steps", "max_steps"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise bad(name, f"must be a positive integer, got {v!r}")
        if spec.loss == "policy_gradient" and self.num_generations < 2:
            raise bad("num_generations", "GRPO's group-normalised advantages need at least 2 rollouts")
        if self.save_steps < 0:
            raise bad("save_steps", "must be >= 0")
        self.engine_options()
        self.resolve_condition()

    def engine_options(self):
        """The checked ``EngineOptions`` of the generation engine (``InputError`` names the key)."""
        from mopd_eval.engine_options import EngineOptions

        opts = EngineOptions(
            engine=self.engine, dtype=self.dtype, attn_implementation=self.attn_implementation,
            tensor_parallel_size=self.tensor_parallel_size, data_parallel_size=self.data_parallel_size,
            max_model_len=self.max_model_len, gpu_memory_utilization=self.gpu_memory_utilization,
            enforce_eager=self.enforce_eager, engine_args=self.engine_args,
        ).validated(flags=False)
        if self.data_parallel_size != 1:
            # Under torchrun each rank already runs its own colocated engine on its own prompts:
            # that is the trainer's data parallelism; vLLM's own would double it.
            raise InputError("training scales data parallelism with torchrun processes; vLLM's own "
                             "data_parallel_size is for sampling and scoring commands", field="data_parallel_size")
        if self.engine == "hf":
            for name in ("dtype", "attn_implementation", "engine_args"):
                if getattr(opts, name) not in ("auto", None, {}):
                    raise InputError("the hf engine samples from the policy itself (its precision is "
                                     "bf16=); this key is for engine=vllm", field=name)
        return opts

    def _validate_beta(self) -> None:
        if self.spec.uses_teacher:
            if not 0.0 <= self.beta <= 1.0:
                raise InputError(f"{self.algo}: beta is the divergence's mixing weight (TRL GKD) and must lie "
                                 f"in [0, 1], got {self.beta}", field="beta")
            if self.distill_variant == "sampled" and self.beta != 1.0:
                raise InputError("the sampled-token variant estimates the reverse KL only: set beta=1", field="beta")
        elif self.beta < 0.0:
            raise InputError(f"grpo: beta is the KL coefficient (TRL GRPO) and must be >= 0, got {self.beta}",
                             field="beta")

    def reporters(self) -> list[str]:
        """The integrations ``report_to`` names (``auto``: tensorboard when installed)."""
        raw = self.report_to
        items = [raw] if isinstance(raw, str) else list(raw) if isinstance(raw, (list, tuple)) else None
        if items is None or not all(isinstance(x, str) for x in items):
            raise InputError(f"expected a name or a list of names, got {raw!r}", field="report_to")
        if items in (["none"], []):
            return []
        if items == ["all"]:
            return list(REPORTERS)
        if items == ["auto"]:
            import importlib.util

            return ["tensorboard"] if importlib.util.find_spec("tensorboard") is not None else []
        bad = [x for x in items if x not in REPORTERS]
        if bad:
            raise InputError(f"unknown integration {bad[0]!r}; choose none, all, auto or from "
                             f"{', '.join(REPORTERS)}", field="report_to")
        return items

    @property
    def spec(self) -> AlgorithmSpec:
        """The algorithm's registry entry (``training.algorithms``)."""
        return get_algorithm(self.algo)

    def resolve_condition(self) -> Condition:
        """The ``Condition`` the teacher's context is built with."""
        if isinstance(self.condition, dict):
            try:
                return Condition(**self.condition)
            except TypeError as e:
                raise InputError(str(e), field="condition") from None
        known = {**BUILTIN_CONDITIONS, **TRAINING_CONDITIONS}
        if self.condition not in known:
            raise InputError(f"unknown condition {self.condition!r}; known: {', '.join(known)}", field="condition")
        return known[self.condition]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["a=1", "b.c=x"]`` -> ``{"a": 1, "b": {"c": "x"}}``; values parsed as YAML scalars."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"expected key=value, got {item!r}", field="overrides")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        parts = key.strip().split(".")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise InputError(f"{key}: {p} is not a mapping", field=key)
        node[parts[-1]] = value
    return out


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | dict | None = None,
    *,
    algo: str | None = None,
) -> TrainConfig:
    """Build a ``TrainConfig`` from a YAML file, ``key=value`` overrides and ``algo``.

    ``algo`` (the ``--algo`` flag) picks the algorithm's defaults and wins over an ``algo`` key in
    the file. Unknown keys and bad values raise ``InputError`` naming the file and the field.
    """
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise InputError("config file not found", path=path)
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            raise InputError(f"cannot parse YAML: {e}", path=path,
                             line=None if mark is None else mark.line + 1) from None
        if loaded is not None and not isinstance(loaded, dict):
            raise InputError("expected a mapping of config keys", path=path)
        data = loaded or {}
    extra = overrides if isinstance(overrides, dict) else parse_overrides(list(overrides or []))
    data = _merge(data, extra)
    chosen = algo or data.get("algo") or TrainConfig.algo
    merged = _merge(get_algorithm(chosen).config_defaults(), data)
    merged["algo"] = chosen
    for old, msg in RENAMED.items():
        if old in merged:
            raise InputError(f"{old} was {msg}", path=path, field=old)
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(merged) - known)
    if unknown:
        raise InputError(f"unknown config keys {unknown}", path=path, field=unknown[0])
    try:
        return TrainConfig(**merged)
    except InputError as e:
        raise InputError(e.message, path=path, field=e.field) from None
