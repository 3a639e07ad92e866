"""Task registry: ``get_task(name)`` returns a loader + prompt builder + verifier."""

from __future__ import annotations

import importlib

from mopd_eval.errors import InputError
from mopd_eval.tasks.base import Problem, Task

# name -> "module:Class"; imported on demand so a task's heavy dependencies load only when used.
TASKS: dict[str, str] = {
    "arith": "mopd_eval.tasks.arith:ArithTask",
    "humaneval": "mopd_eval.tasks.humaneval:HumanEvalTask",
    "lcb": "mopd_eval.tasks.lcb:LCBTask",
    "aime24": "mopd_eval.tasks.math_tasks:AIME24Task",
    "aime25": "mopd_eval.tasks.math_tasks:AIME25Task",
    "hmmt25": "mopd_eval.tasks.math_tasks:HMMT25Task",
    "deepmath": "mopd_eval.tasks.math_tasks:DeepMathTask",
    "sciknoweval": "mopd_eval.tasks.sciknoweval:SciKnowEvalTask",
    "toolalpaca": "mopd_eval.tasks.toolalpaca:ToolAlpacaTask",
}


def get_task(name: str, **kwargs) -> Task:
    if name not in TASKS:
        raise InputError(f"unknown task {name!r}; known: {', '.join(TASKS)}", field="--task")
    module, cls = TASKS[name].split(":")
    return getattr(importlib.import_module(module), cls)(**kwargs)


__all__ = ["Problem", "Task", "TASKS", "get_task"]
