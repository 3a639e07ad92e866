"""Benchmark a checkpoint on a task: sample n responses per problem, verify, summarise.

Files of one task's run in ``DIR``:

* ``samples.jsonl``: one row a sample, in problem order then sample order: ``task, problem_id,
  sample_index, response, success, reward, partial, status, feedback, finish_reason, n_tokens,
  chunk, timings {generate_s, verify_s}``. Generation is batched per chunk of problems, so a
  row's timings are its share (chunk wall time / samples in the chunk).
* ``results.json``: mean@n and unbiased pass@k for k = 1..n, partial credit in its own labelled
  field, counts, per-problem successes, timings, the full config and package versions.
* ``table.md``: the results as a Markdown table.
* ``results_lmeval.json`` and ``samples_<task>.jsonl``: the same in lm-evaluation-harness's layout
  (``mopd_eval/lmeval_format.py``), for tools that read the harness's output; pass@k carries a
  bootstrap standard error over problems.

Resumable (``resumable.ResumableRun``): finished chunks of problems are appended to
``samples.jsonl.partial`` (flushed), and ``bench_config.json`` records the run's content key
(task options, data file hashes, model identity, engine, sampling). A rerun skips the problems
already there and refuses a different key (``--rescore`` starts over); when every problem is done
the partial file becomes ``samples.jsonl``. A rerun on a finished directory only rewrites results
and table.

Scoring rules: a problem whose verdicts say ``invalid_test`` (its own tests or gold answer are
broken) is left out of every metric and counted under ``counts.problems_invalid``; every other
problem counts, whatever its samples did. mean@n = mean over problems of c/n with strict
success; pass@k = mean over problems of 1 - C(n-c, k)/C(n, k).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mopd_eval.diversity import pass_at_k_curve
from mopd_eval.errors import InputError
from mopd_eval.jsonl import write_json_atomic, write_jsonl_atomic, write_text_atomic
from mopd_eval.lmeval_format import results_file, sample_lines
from mopd_eval.pipeline import SampledRecord, SamplingConfig
from mopd_eval.rollout_gen import SampledRun, sample_into
from mopd_eval.scaleout import ONE_PROCESS, Shard
from mopd_eval.tasks.base import Problem, Task
from mopd_eval.versions import package_versions

SAMPLES = "samples.jsonl"
PARTIAL = "samples.jsonl.partial"
CONFIG = "bench_config.json"
RESULTS = "results.json"
TABLE = "table.md"

def _ranked(name: str, sfx: str) -> str:
    """``samples.jsonl`` -> ``samples.rank0-of-2.jsonl``: a torchrun rank's own file."""
    stem, _, rest = name.partition(".")
    return f"{stem}{sfx}.{rest}"


PARTIAL_LABEL = (
    "partial credit: mean over problems and samples of the fraction of tests passed (the "
    "reference code's LiveCodeBench 'mean@8'); equals the reward for single-verdict tasks; a lower "
    "bound when tests stop at the first failure"
)


def sample_row(record: SampledRecord, task_name: str) -> dict:
    """One line of ``samples.jsonl`` (see the module docstring)."""
    s, v = record.sample, record.verdict
    return {
        "task": task_name, "problem_id": record.problem.problem_id, "sample_index": record.index,
        "response": s.text, "success": v.success, "reward": v.reward, "partial": v.partial,
        "status": v.status, "feedback": v.feedback, "finish_reason": s.finish_reason,
        "n_tokens": len(s.token_ids), "chunk": record.chunk,
        "timings": {"generate_s": record.generate_s, "verify_s": record.verify_s},
    }


@dataclass
class TaskRun:
    """One task of a bench call: its problems, where its files go, and its content key."""

    task: Task
    problems: list[Problem]
    out_dir: Path
    config: dict


def run_task(run: TaskRun, get_engine: Callable[[], object], cfg: SamplingConfig, *,
             chunk_problems: int = 4, rescore: bool = False, shard: Shard = ONE_PROCESS) -> dict | None:
    """Generate and verify the missing samples of ``run``, then write results and table.

    ``get_engine()`` is called only when samples are missing, so a finished run never loads the
    model. Returns the results dict (as written to ``results.json``); under torchrun only rank 0
    writes and returns it (the others return ``None``).
    """
    out = run.out_dir

    def files(sfx: str) -> tuple[Path, Path, Path]:
        return tuple(out / _ranked(name, sfx) for name in (PARTIAL, CONFIG, SAMPLES))

    rows = sample_into(SampledRun(files, run.config, "bench"), run.task, get_engine, run.problems, cfg,
                       lambda r: sample_row(r, run.task.name), chunk_problems=chunk_problems, rescore=rescore,
                       shard=shard)
    if rows is None:
        return None
    try:
        results = summarize(rows, [p.problem_id for p in run.problems], cfg.n)
    except ValueError as e:  # the data file changed under a finished run
        raise InputError(f"the samples do not match the task's problems ({e}); rerun with --rescore or use "
                         "another --out", path=out / SAMPLES) from None
    results = {"task": run.task.name, **results, "config": run.config, "versions": package_versions()}
    write_json_atomic(out / RESULTS, results)
    write_text_atomic(out / TABLE, markdown_table([results]))
    write_lmeval(out, [results])
    write_jsonl_atomic(out / f"samples_{run.task.name}.jsonl",
                       sample_lines(run.task.name, rows, run.problems, cfg.n))
    return results


def write_lmeval(out: Path, results: Sequence[dict]) -> None:
    """``results_lmeval.json``: the results in lm-evaluation-harness's layout (``lmeval_format``)."""
    model = results[0]["config"].get("model_name") if results else None
    write_json_atomic(out / "results_lmeval.json", results_file(results, f"pretrained={model}"))


PASS_AT_K_BOOTSTRAP = 1000  # draws over problems for the pass@k standard errors (seed 0)


def bootstrap_stderr(per_problem: np.ndarray, draws: int = PASS_AT_K_BOOTSTRAP, seed: int = 0) -> list[float | None]:
    """Standard error of each column's mean over problems (rows), by a seeded bootstrap over
    problems: pass@k of a problem is not a Bernoulli draw, so the binomial formula does not
    apply. ``None`` with fewer than two problems."""
    p = per_problem.shape[0]
    if p < 2:
        return [None] * per_problem.shape[1]
    idx = np.random.default_rng(seed).integers(0, p, size=(draws, p))
    return [float(v) for v in per_problem[idx].mean(axis=1).std(axis=0, ddof=1)]


def summarize(rows: Sequence[dict], problem_ids: Sequence[str], n: int) -> dict:
    """Metrics of sample rows (see the module docstring for the rules).

    ``problem_ids`` fixes the problem set and order; every problem must have exactly ``n`` rows
    (``ValueError`` otherwise). Metrics of an empty scored set are None.
    """
    by_pid: dict[str, list[dict]] = {pid: [] for pid in problem_ids}
    for r in rows:
        if r["problem_id"] not in by_pid:
            raise ValueError(f"sample of unknown problem {r['problem_id']!r}")
        by_pid[r["problem_id"]].append(r)
    wrong = {pid: len(g) for pid, g in by_pid.items() if len(g) != n}
    if wrong:
        raise ValueError(f"problems without exactly n={n} samples: {dict(list(wrong.items())[:5])}")
    invalid = [pid for pid, g in by_pid.items() if any(r["status"] == "invalid_test" for r in g)]
    scored = [pid for pid in problem_ids if pid not in set(invalid)]
    succ = np.array([sum(bool(r["success"]) for r in by_pid[pid]) for pid in scored], dtype=float)
    part = np.array([np.mean([float(r["partial"]) for r in by_pid[pid]]) for pid in scored], dtype=float)
    curves = np.array([pass_at_k_curve(n, int(c)) for c in succ]).reshape(len(scored), n)
    has = len(scored) > 0
    frac = succ / n
    all_rows = [r for g in by_pid.values() for r in g]
    gen_s = sum(r.get("timings", {}).get("generate_s", 0.0) for r in all_rows)
    ver_s = sum(r.get("timings", {}).get("verify_s", 0.0) for r in all_rows)
    tokens = sum(int(r.get("n_tokens", 0)) for r in all_rows)
    return {
        "metrics": {
            "n": n,
            "problems_scored": len(scored),
            f"mean@{n}": float(frac.mean()) if has else None,
            f"mean@{n}_stderr": float(frac.std(ddof=1) / np.sqrt(len(scored))) if len(scored) > 1 else None,
            "pass@k": {str(k): (float(curves[:, k - 1].mean()) if has else None) for k in range(1, n + 1)},
            "pass@k_stderr": {str(k): v for k, v in zip(range(1, n + 1), bootstrap_stderr(curves), strict=True)},
            "partial_credit": {"value": float(part.mean()) if has else None, "label": PARTIAL_LABEL},
        },
        "counts": {
            "problems": len(problem_ids),
            "problems_scored": len(scored),
            "problems_invalid": len(invalid),
            "invalid_problem_ids": invalid,
            "problems_solved_at_least_once": int((succ > 0).sum()),
            "samples": len(all_rows),
            "successes": int(succ.sum()),
            "status": dict(Counter(r["status"] for r in all_rows).most_common()),
            "finish_reason": dict(Counter(r.get("finish_reason") for r in all_rows).most_common()),
        },
        "per_problem": {pid: {"successes": sum(bool(r["success"]) for r in g), "samples": len(g)}
                        for pid, g in by_pid.items()},
        "timing": {
            "generate_s": gen_s,
            "verify_s": ver_s,
            "generated_tokens": tokens,
            "generated_tokens_per_s": tokens / gen_s if gen_s > 0 else None,
        },
    }


def _fmt(x: float | None, pct: bool = True) -> str:
    if x is None:
        return "-"
    return f"{100 * x:.1f}" if pct else f"{x:.3g}"


def _ks(n: int) -> list[int]:
    ks = [k for k in (1, 2, 4, 8, 16, 32, 64, 128) if k < n]
    return ks + [n]


def markdown_table(results: Sequence[dict]) -> str:
    """One Markdown table for the results of one or several tasks (percentages).

    Columns: mean@n, pass@k for k = 1, 2, 4, ... and n, partial credit (labelled), problems
    scored (and invalid), samples, generation and verification time.
    """
    ks = sorted({k for r in results for k in _ks(r["metrics"]["n"])})
    head = ["task", "model", "n", "problems (invalid)", "mean@n", *[f"pass@{k}" for k in ks],
            "partial credit*", "gen s", "verify s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        m, c, t = r["metrics"], r["counts"], r["timing"]
        n = m["n"]
        se = m.get(f"mean@{n}_stderr")
        mean = _fmt(m[f"mean@{n}"]) + (f" ± {100 * se:.1f}" if se is not None else "")
        cells = [r["task"], str(r["config"].get("model_name", r["config"].get("model"))), str(n), f"{c['problems_scored']} ({c['problems_invalid']})",
                 mean, *[_fmt(m["pass@k"].get(str(k))) if k <= n else "" for k in ks],
                 _fmt(m["partial_credit"]["value"]), f"{t['generate_s']:.0f}", f"{t['verify_s']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [
        "",
        "Percentages. mean@n: mean over problems of successes/n (strict), ± one standard error over "
        "problems; pass@k: unbiased estimator (Chen et al., 2021). Problems whose own tests are "
        "invalid are excluded and counted in parentheses.",
        f"*{PARTIAL_LABEL[0].upper()}{PARTIAL_LABEL[1:]}.",
    ]
    return "\n".join(lines + notes) + "\n"

