"""Task registry: each task declares, once, its class, its options and its sampling defaults.

``mopd-eval bench``, ``rollouts`` and ``verify`` build their task flags from these declarations
(``add_task_arguments``) and construct tasks with ``task_from_args``; the trainer constructs them
with ``get_task(name, **task_kwargs)``. Adding a task is one ``TaskSpec`` entry here plus its
module (docs/extending.md). Task classes are imported on demand, so a task's heavy dependencies
load only when it is used.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mopd_eval.errors import InputError
from mopd_eval.tasks.base import Problem, Task

if TYPE_CHECKING:
    from mopd_eval.pipeline import SamplingConfig


def int_list(text: str) -> tuple[int, ...]:
    """``"1,2,3"`` -> ``(1, 2, 3)`` (an argparse type)."""
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


@dataclass(frozen=True)
class TaskOption:
    """One command-line option of a task: ``--flag`` becomes constructor keyword ``kwarg``.

    ``affects_results=False`` (worker counts) keeps the option out of the run's content key.
    """

    flag: str
    kwarg: str
    help: str
    type: Callable[[str], Any] | None = str
    default: Any = None
    action: str | None = None  # "store_true" for switches
    affects_results: bool = True

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


@dataclass(frozen=True)
class TaskSpec:
    """A registered task: where its class lives, its options and its sampling defaults."""

    name: str
    target: str  # "module:Class"
    options: tuple[TaskOption, ...] = ()
    max_tokens: int = 512  # default --max-tokens of bench and rollouts for this task
    temperature: float = 1.0

    def kwargs(self, args: argparse.Namespace, *, results_only: bool = False) -> dict[str, Any]:
        return {o.kwarg: getattr(args, o.dest) for o in self.options
                if hasattr(args, o.dest) and (o.affects_results or not results_only)}


CODE_TIMEOUT = TaskOption("--code-timeout", "timeout_s", "code tasks: seconds per test (default 6)", float, 6.0)
MATH_TIMEOUT = TaskOption("--math-timeout", "timeout_s",
                          "math tasks: wall clock of one math-verify call in seconds (default 10)", float, 10.0)
WORKERS = TaskOption("--workers", "workers", "code tasks: parallel sandbox runs (default: one per core)", int,
                     affects_results=False)

TASK_SPECS: dict[str, TaskSpec] = {s.name: s for s in [
    TaskSpec("arith", "mopd_eval.tasks.arith:ArithTask", (
        TaskOption("--per-level", "per_level", "arith: problems per difficulty level (default 20)", int, 20),
        TaskOption("--levels", "levels", "arith: comma-separated difficulty levels (default 1,2,3,4,5)",
                   int_list, (1, 2, 3, 4, 5)),
    ), max_tokens=256),
    TaskSpec("humaneval", "mopd_eval.tasks.humaneval:HumanEvalTask", (CODE_TIMEOUT, WORKERS)),
    TaskSpec("lcb", "mopd_eval.tasks.lcb:LCBTask", (
        TaskOption("--lcb-start", "start", "lcb: first contest date kept (default 2025-02-01, v6)",
                   str, "2025-02-01"),
        TaskOption("--lcb-end", "end", "lcb: contest dates before this are kept (default 2025-05-01)",
                   str, "2025-05-01"),
        TaskOption("--partial-credit", "partial_credit",
                   "lcb: run every test (not stopping at the first failure) so partial credit is exact",
                   None, False, action="store_true"),
        TaskOption("--lcb-prompt-style", "prompt_style",
                   "lcb: prompt wording: 'lcb' = lcb_runner's generic chat prompt (system + user turn, as "
                   "the leaderboard), 'mopd' = this project's earlier single user turn (default lcb)", str, "lcb"),
        TaskOption("--lcb-code-extraction", "code_extraction",
                   "lcb: how the program is cut from a response: 'lcb' = LiveCodeBench's rule (lines between "
                   "the last two lines containing ```; fewer than two: empty), 'general' = the last closed "
                   "Python block (default lcb)", str, "lcb"),
        CODE_TIMEOUT, WORKERS,
    ), max_tokens=2048),
    TaskSpec("aime24", "mopd_eval.tasks.math_tasks:AIME24Task", (MATH_TIMEOUT,), max_tokens=2048),
    TaskSpec("aime25", "mopd_eval.tasks.math_tasks:AIME25Task", (MATH_TIMEOUT,), max_tokens=2048),
    TaskSpec("hmmt25", "mopd_eval.tasks.math_tasks:HMMT25Task", (MATH_TIMEOUT,), max_tokens=2048),
    TaskSpec("deepmath", "mopd_eval.tasks.math_tasks:DeepMathTask", (
        MATH_TIMEOUT,
        TaskOption("--min-difficulty", "min_difficulty", "deepmath: keep problems with difficulty >= this", float),
    ), max_tokens=2048),
    TaskSpec("gsm8k", "mopd_eval.tasks.gsm8k:GSM8KTask", (
        MATH_TIMEOUT,
        TaskOption("--gsm8k-answer-marker", "answer_marker",
                   "gsm8k: the gold answer is the number after the last such marker (default ####)", str, "####"),
    ), max_tokens=1024),
    TaskSpec("sciknoweval", "mopd_eval.tasks.sciknoweval:SciKnowEvalTask", (
        TaskOption("--sciknoweval-levels", "levels", "sciknoweval: comma-separated levels kept (default L3)",
                   lambda text: tuple(x.strip() for x in text.split(",") if x.strip()), ("L3",)),
    ), max_tokens=1024),
    TaskSpec("toolalpaca", "mopd_eval.tasks.toolalpaca:ToolAlpacaTask"),
]}
TASKS: dict[str, str] = {name: s.target for name, s in TASK_SPECS.items()}


def get_spec(name: str) -> TaskSpec:
    if name not in TASK_SPECS:
        raise InputError(f"unknown task {name!r}; known: {', '.join(TASK_SPECS)}", field="--task")
    return TASK_SPECS[name]


def get_task(name: str, **kwargs: Any) -> Task:
    module, cls = get_spec(name).target.split(":")
    return getattr(importlib.import_module(module), cls)(**kwargs)


def add_task_arguments(p: argparse.ArgumentParser, names: Sequence[str] | None = None) -> None:
    """The options of the tasks ``names`` (default: all), each flag once, in one argument group."""
    g = p.add_argument_group("task options")
    seen: dict[str, TaskOption] = {}
    for spec in (TASK_SPECS[n] for n in (names or TASK_SPECS)):
        for o in spec.options:
            if o.flag in seen:
                if seen[o.flag] != o:  # a shared flag must mean one thing
                    raise ValueError(f"task option {o.flag} declared twice with different meanings")
                continue
            seen[o.flag] = o
            if o.action:
                g.add_argument(o.flag, dest=o.dest, action=o.action, default=o.default, help=o.help)
            else:
                g.add_argument(o.flag, dest=o.dest, type=o.type, default=o.default, help=o.help)


def task_options(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Constructor keywords of task ``name`` that change results (recorded in run keys)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in get_spec(name).kwargs(args, results_only=True).items()}


def task_from_args(name: str, args: argparse.Namespace) -> Task:
    """Task ``name`` built with its declared options as parsed into ``args``."""
    return get_task(name, **get_spec(name).kwargs(args))


def add_sampling_arguments(p: argparse.ArgumentParser) -> None:
    """Sampling flags of ``bench`` and ``rollouts``: one declaration, task-specific defaults."""
    g = p.add_argument_group("sampling")
    g.add_argument("-n", type=int, default=8, help="samples per problem (default 8)")
    g.add_argument("--temperature", type=float, help="sampling temperature (default: the task's, 1.0)")
    g.add_argument("--top-p", type=float, default=1.0)
    g.add_argument("--max-tokens", type=int,
                   help="new tokens per sample (default: the task's: "
                        + ", ".join(f"{s.name} {s.max_tokens}" for s in TASK_SPECS.values()) + ")")
    g.add_argument("--seed", type=int, default=0, help="seed of sampling and of generated problems (arith)")


def sampling_for(name: str, args: argparse.Namespace) -> SamplingConfig:
    """The ``SamplingConfig`` of task ``name``: the flags given, else the task's defaults."""
    # Imported here: pipeline imports tasks.base, so a module-level import would run this
    # package's __init__ half-done whenever pipeline is imported first.
    from mopd_eval.pipeline import SamplingConfig

    spec = get_spec(name)
    cfg = SamplingConfig(
        n=args.n, temperature=spec.temperature if args.temperature is None else args.temperature,
        top_p=args.top_p, max_tokens=spec.max_tokens if args.max_tokens is None else args.max_tokens,
        seed=args.seed,
    )
    for flag, v in (("-n", cfg.n), ("--max-tokens", cfg.max_tokens)):
        if v < 1:
            raise InputError(f"must be >= 1, got {v}", field=flag)
    if cfg.temperature < 0:
        raise InputError(f"must be >= 0, got {cfg.temperature}", field="--temperature")
    if not 0 < cfg.top_p <= 1:
        raise InputError(f"must lie in (0, 1], got {cfg.top_p}", field="--top-p")
    return cfg


__all__ = ["Problem", "Task", "TaskOption", "TaskSpec", "TASKS", "TASK_SPECS", "add_sampling_arguments",
           "add_task_arguments", "get_spec", "get_task", "sampling_for", "task_from_args", "task_options"]
