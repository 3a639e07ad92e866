"""Bench results in lm-evaluation-harness's shapes, for the tools that read its output.

``results_lmeval.json`` follows the harness's results file (0.4 layout): ``results`` keyed by
task with ``"<metric>,none"`` and ``"<metric>_stderr,none"`` entries (filter ``none``),
``configs``, ``versions``, ``n-shot``, ``higher_is_better``, ``n-samples`` (``original`` /
``effective``) and ``config`` (``model``, ``model_args``). ``samples_<task>.jsonl`` holds one line
per problem as the harness logs them: ``doc_id``, ``doc``, ``target``, ``arguments``, ``resps``,
``filtered_resps``, the per-problem metrics, and sha256 ``doc_hash``/``prompt_hash``/``target_hash``.
Pure functions of what ``bench`` already wrote; the harness itself is not needed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

FORMAT_VERSION = 1.0  # our task versions, as the harness records one per task


def _sha(obj: Any) -> str:
    text = obj if isinstance(obj, str) else json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def task_metrics(results: Mapping) -> dict[str, Any]:
    """``{"<metric>,none": value, "<metric>_stderr,none": stderr}`` of one task's results."""
    m = results["metrics"]
    n = m["n"]
    out = {"alias": results["task"], f"mean@{n},none": m[f"mean@{n}"],
           f"mean@{n}_stderr,none": m.get(f"mean@{n}_stderr")}
    for k, v in m["pass@k"].items():
        out[f"pass@{k},none"] = v
        out[f"pass@{k}_stderr,none"] = m.get("pass@k_stderr", {}).get(k)
    out["partial_credit,none"] = m["partial_credit"]["value"]
    return out


def results_file(results: Sequence[Mapping], model_args: str) -> dict:
    """The harness-shaped results object for the results of one or more bench tasks."""
    names = [r["task"] for r in results]
    by = dict(zip(names, results, strict=True))
    return {
        "results": {t: task_metrics(r) for t, r in by.items()},
        "group_subtasks": {t: [] for t in names},
        "configs": {t: {"task": t, "output_type": "generate_until", "num_fewshot": 0,
                        "repeats": r["metrics"]["n"], "generation_kwargs": r["config"].get("sampling", {}),
                        "metadata": {"task_options": r["config"].get("task_options", {}),
                                     "data": r["config"].get("data")}} for t, r in by.items()},
        "versions": dict.fromkeys(names, FORMAT_VERSION),
        "n-shot": dict.fromkeys(names, 0),
        "higher_is_better": {t: {k.split(",")[0]: True for k in task_metrics(r) if k != "alias"
                                 and "_stderr" not in k} for t, r in by.items()},
        "n-samples": {t: {"original": r["counts"]["problems"], "effective": r["counts"]["problems_scored"]}
                      for t, r in by.items()},
        "config": {"model": "mopd-eval", "model_args": model_args,
                   "random_seed": results[0]["config"].get("sampling", {}).get("seed") if results else None},
        "versions_of_packages": dict(results[0].get("versions", {})) if results else {},
    }


def sample_lines(task: str, rows: Sequence[Mapping], problems: Sequence[Any], n: int) -> list[dict]:
    """One harness-style sample line per problem (its ``n`` responses in ``resps``)."""
    by_pid: dict[str, list[Mapping]] = {}
    for r in rows:
        by_pid.setdefault(r["problem_id"], []).append(r)
    out = []
    for i, p in enumerate(problems):
        group = sorted(by_pid.get(p.problem_id, []), key=lambda r: r["sample_index"])
        successes = sum(bool(r["success"]) for r in group)
        doc = {"problem_id": p.problem_id, "question": p.question}
        out.append({
            "doc_id": i, "doc": doc, "target": p.ground_truth, "arguments": [[p.question, {"n": n}]],
            "resps": [[r["response"] for r in group]], "filtered_resps": [r["response"] for r in group],
            f"mean@{n}": successes / n if group else None,
            "success": [bool(r["success"]) for r in group], "status": [r["status"] for r in group],
            "doc_hash": _sha(doc), "prompt_hash": _sha(p.question), "target_hash": _sha(p.ground_truth),
            "task": task,
        })
    return out
