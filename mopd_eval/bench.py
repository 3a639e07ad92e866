"""Benchmark a checkpoint on a task: sample n responses per problem, verify, summarise.

Files of one task's run in ``DIR``:

* ``samples.jsonl``: one row a sample, in problem order then sample order: ``task, problem_id,
  sample_index, response, success, reward, partial, status, feedback, finish_reason, n_tokens,
  chunk, timings {generate_s, verify_s}``. Generation is batched per chunk of problems, so a
  row's timings are its share (chunk wall time / samples in the chunk).
* ``results.json``: mean@n and unbiased pass@k for k = 1..n, partial credit in its own labelled
  field, counts, per-problem successes, timings, the full config and package versions.
* ``table.md``: the results as a Markdown table.

Resumable: finished chunks of problems are appended to ``samples.jsonl.partial`` (flushed), and
``bench_config.json`` records the settings. A rerun skips the problems already there and refuses
to mix different settings; when every problem is done the partial file becomes
``samples.jsonl``. A rerun on a finished directory only rewrites results and table.

Scoring rules: a problem whose verdicts say ``invalid_test`` (its own tests or gold answer are
broken) is left out of every metric and counted under ``counts.problems_invalid``; every other
problem counts, whatever its samples did. mean@n = mean over problems of c/n with strict
success; pass@k = mean over problems of 1 - C(n-c, k)/C(n, k).
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mopd_eval.diversity import pass_at_k_curve
from mopd_eval.errors import InputError
from mopd_eval.jsonl import AppendLog, iter_jsonl, write_json_atomic, write_text_atomic
from mopd_eval.rollout_gen import SamplingConfig, chat_prompt_ids
from mopd_eval.tasks.base import Problem, Task
from mopd_eval.verdict import Verdict
from mopd_eval.versions import package_versions

SAMPLES = "samples.jsonl"
PARTIAL = "samples.jsonl.partial"
CONFIG = "bench_config.json"
RESULTS = "results.json"
TABLE = "table.md"

PARTIAL_LABEL = (
    "partial credit: mean over problems and samples of the fraction of tests passed (the "
    "reference code's LiveCodeBench 'mean@8'); equals the reward for single-verdict tasks; a lower "
    "bound when tests stop at the first failure"
)


def verify_safely(task: Task, problems: Sequence[Problem], responses: Sequence[str]) -> list[Verdict]:
    """``task.verify``, but a verifier that raises costs only the samples it raised on.

    Tasks must not raise for a bad response; if one does anyway (a bug, a broken sandbox), the
    chunk is re-verified sample by sample and each sample that still raises gets a
    ``verifier_error`` verdict naming the exception, so the run goes on and the count shows it.
    """
    try:
        return task.verify(problems, responses)
    except Exception:
        out = []
        for p, r in zip(problems, responses, strict=True):
            try:
                out.extend(task.verify([p], [r]))
            except Exception as e:
                out.append(Verdict.failed("verifier_error", f"the verifier failed: {type(e).__name__}: {e}"))
        return out


def bench_chunk(task: Task, engine, problems: Sequence[Problem], cfg: SamplingConfig,
                chunk_index: int) -> list[dict]:
    """Sample rows of ``problems`` (problem order, then sample order), generated and verified."""
    prompt_ids = [chat_prompt_ids(engine.tokenizer, task.messages(p)) for p in problems]
    t0 = time.perf_counter()
    samples = engine.generate(prompt_ids, cfg.n, cfg.temperature, cfg.top_p, cfg.max_tokens, cfg.seed)
    gen_s = time.perf_counter() - t0
    flat_p = [p for p, group in zip(problems, samples, strict=True) for _ in group]
    flat_s = [s for group in samples for s in group]
    t0 = time.perf_counter()
    verdicts = verify_safely(task, flat_p, [s.text for s in flat_s])
    ver_s = time.perf_counter() - t0
    rows: list[dict] = []
    k = 0
    for p, group in zip(problems, samples, strict=True):
        for j, s in enumerate(group):
            v = verdicts[k]
            k += 1
            rows.append({
                "task": task.name, "problem_id": p.problem_id, "sample_index": j, "response": s.text,
                "success": v.success, "reward": v.reward, "partial": v.partial, "status": v.status,
                "feedback": v.feedback, "finish_reason": s.finish_reason, "n_tokens": len(s.token_ids),
                "chunk": chunk_index,
                "timings": {"generate_s": gen_s / len(flat_s), "verify_s": ver_s / len(flat_s)},
            })
    return rows


@dataclass
class TaskRun:
    """One task of a bench call: its problems and where its files go."""

    task: Task
    problems: list[Problem]
    out_dir: Path
    config: dict


def run_task(run: TaskRun, get_engine: Callable[[], object], cfg: SamplingConfig, *,
             chunk_problems: int = 4) -> dict:
    """Generate and verify the missing samples of ``run``, then write results and table.

    ``get_engine()`` is called only when samples are missing, so a finished run never loads the
    model. Returns the results dict (as written to ``results.json``).
    """
    out = run.out_dir
    out.mkdir(parents=True, exist_ok=True)
    cfg_path = out / CONFIG
    if cfg_path.exists():
        old = json.loads(cfg_path.read_text())
        if old != run.config:
            diff = {k: (old.get(k), run.config.get(k)) for k in sorted(set(old) | set(run.config))
                    if old.get(k) != run.config.get(k)}
            raise InputError(f"a run with other settings is there ({diff}); delete it or use another --out", path=cfg_path)
    else:
        if (out / SAMPLES).exists() or (out / PARTIAL).exists():
            raise InputError(f"samples without {CONFIG} are there; delete them or use another --out", path=out)
        write_json_atomic(cfg_path, run.config)
    if not (out / SAMPLES).exists():
        _generate_missing(run, get_engine(), cfg, chunk_problems)
    rows = [obj for _, obj in iter_jsonl(out / SAMPLES)]
    try:
        results = summarize(rows, [p.problem_id for p in run.problems], cfg.n)
    except ValueError as e:  # the data file changed under a finished run
        raise InputError(f"the samples do not match the task's problems ({e}); delete the run or use another --out",
                         path=out / SAMPLES) from None
    results = {"task": run.task.name, **results, "config": run.config, "versions": package_versions()}
    write_json_atomic(out / RESULTS, results)
    write_text_atomic(out / TABLE, markdown_table([results]))
    return results


def _generate_missing(run: TaskRun, engine, cfg: SamplingConfig, chunk_problems: int) -> None:
    out = run.out_dir
    log = AppendLog(out / PARTIAL)
    counts = Counter(row["problem_id"] for row in log.done)
    todo = [p for p in run.problems if counts.get(p.problem_id, 0) < cfg.n]
    half_done = [p.problem_id for p in todo if counts.get(p.problem_id)]
    if half_done:  # appends are per chunk, so only a hand-edited log gets here
        raise InputError(f"problems with an incomplete set of samples: {half_done[:5]}", path=out / PARTIAL)
    first_chunk = max((row.get("chunk", -1) for row in log.done), default=-1) + 1
    bar = tqdm(total=len(run.problems), initial=len(run.problems) - len(todo),
               desc=f"bench {run.task.name}", unit="problem")
    for c, i in enumerate(range(0, len(todo), chunk_problems)):
        chunk = todo[i : i + chunk_problems]
        log.append(bench_chunk(run.task, engine, chunk, cfg, first_chunk + c))
        bar.update(len(chunk))
    bar.close()
    os.replace(out / PARTIAL, out / SAMPLES)


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
        cells = [r["task"], str(r["config"].get("model")), str(n), f"{c['problems_scored']} ({c['problems_invalid']})",
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

