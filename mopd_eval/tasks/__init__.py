"""Task registry: ``get_task(name)`` returns a loader + prompt builder + verifier."""

from __future__ import annotations

import importlib

from mopd_eval.errors import InputError
from mopd_eval.tasks.base import Problem, Task

# name -> "module:Class"; imported on demand so a task's heavy dependencies load only when used.
TASKS: dict[str, str] = {
    "arith": "mopd_eval.tasks.arith:ArithTask",
}


def get_task(name: str, **kwargs) -> Task:
    if name not in TASKS:
        raise InputError(f"unknown task {name!r}; known: {', '.join(TASKS)}", field="--task")
    module, cls = TASKS[name].split(":")
    return getattr(importlib.import_module(module), cls)(**kwargs)


__all__ = ["Problem", "Task", "TASKS", "get_task"]
