"""Benchmark ``mopd-eval signal-metrics`` on a synthetic 100k-row scores file.

Prints: the end-to-end CLI time (bootstrap 2000 by default), the vectorised bootstrap against
the naive Python-loop bootstrap on the same per-prompt values (same draws; checked equal), and the
batched per-prompt metrics against one scipy/scikit-learn call per prompt on a sample of prompts
(extrapolated to all of them). Ratios are measured in the same run on the same data.

    .venv/bin/python benchmarks/bench_signal_metrics.py [--rows 100000] [--bootstrap 2000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analysis.aggregate import bootstrap_means, bootstrap_means_naive, per_prompt_table  # noqa: E402
from analysis.metric_specs import METRICS, prompt_metrics  # noqa: E402
from analysis.scores import load_scores  # noqa: E402
from mopd_eval.contexts import BUILTIN_CONDITIONS  # noqa: E402

# How much a condition's context sharpens the teacher's view of success (synthetic effect sizes).
SIGNAL = {
    "base": 0.3,
    "primary": 0.6,
    "second": 0.5,
    "failure": 0.45,
    "primary+failure": 0.7,
    "2s1f": 0.8,
    "all": 0.75,
    "all-capped": 0.78,
    "random_peer": 0.4,
    "score_ordered": 0.7,
    "feedback": 0.55,
}


def synthetic_scores(path: Path, *, rows: int, group: int = 8, seed: int = 0) -> int:
    """Write a scores file of about ``rows`` rows: every condition x prompt x ``group`` rollouts.

    Success rate per prompt drawn from Beta(0.7, 0.7) (many all-pass / all-fail prompts, as in
    real rollouts); teacher score = -1 + signal * success + noise; some rows not effective.
    """
    rng = np.random.default_rng(seed)
    conds = list(BUILTIN_CONDITIONS)
    n_prompts = max(1, rows // (group * len(conds)))
    p_success = rng.beta(0.7, 0.7, size=n_prompts)
    success = rng.random((n_prompts, group)) < p_success[:, None]
    reward = success.astype(float)
    lines = []
    for c in conds:
        noise = rng.normal(0.0, 0.5, size=(n_prompts, group))
        score = -1.0 + SIGNAL[c] * success + noise
        effective = rng.random((n_prompts, group)) > (0.0 if c == "base" else 0.1)
        for p in range(n_prompts):
            for k in range(group):
                lines.append(
                    json.dumps(
                        {
                            "condition": c,
                            "problem_id": f"p{p}",
                            "rollout_id": k,
                            "teacher_score": round(float(score[p, k]), 6),
                            "reward": float(reward[p, k]),
                            "success": bool(success[p, k]),
                            "effective": bool(effective[p, k]),
                        }
                    )
                )
    path.write_text("\n".join(lines) + "\n")
    return len(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--bootstrap", type=int, default=2000)
    ap.add_argument(
        "--naive-sample", type=int, default=300, help="prompts timed with per-prompt library calls"
    )
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        scores = Path(tmp) / "scores.jsonl"
        n = synthetic_scores(scores, rows=args.rows)
        print(f"synthetic scores: {n} rows, {scores.stat().st_size / 1e6:.1f} MB")

        # A fresh process, as a user runs it: interpreter start and imports included.
        cmd = [sys.executable, "-m", "mopd_eval.cli", "signal-metrics", "--scores", str(scores),
               "--out", str(Path(tmp) / "out"), "--bootstrap", str(args.bootstrap), "--seed", "0"]  # fmt: skip
        t0 = time.perf_counter()
        proc = subprocess.run(
            cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        rc = proc.returncode
        t_cli = time.perf_counter() - t0
        print(
            f"CLI end to end, fresh process (bootstrap {args.bootstrap}): {t_cli:.1f} s (exit {rc})"
        )
        print("  the CLI says: " + (proc.stderr.strip().splitlines() or [""])[-1])

        frame = load_scores(scores)
        t0 = time.perf_counter()
        table = per_prompt_table(frame)
        t_batch = time.perf_counter() - t0
        usable = table[table.n_rows >= 2]
        print(
            f"per-prompt metrics, batched: {t_batch:.2f} s for {len(usable)} (condition, prompt) groups"
        )

        # Per-prompt library calls on a sample, extrapolated.
        kept = frame[frame.effective]
        sample = usable.sample(min(args.naive_sample, len(usable)), random_state=0)
        groups = {k: g for k, g in kept.groupby(["condition", "problem_id"])}
        t0 = time.perf_counter()
        for c, p in zip(sample.condition, sample.problem_id, strict=True):
            g = groups[(c, p)]
            prompt_metrics(g.teacher_score.to_numpy(), g.reward.to_numpy(), g.success.to_numpy())
        per = (time.perf_counter() - t0) / len(sample)
        t_naive_metrics = per * len(usable)
        print(
            f"per-prompt metrics, one library call per prompt: {per * 1e3:.2f} ms/prompt, "
            f"~{t_naive_metrics:.1f} s for all; batched is {t_naive_metrics / t_batch:.0f}x faster"
        )

        # Every condition's per-prompt values, as the study bootstraps them; one warm-up call
        # first so neither side pays numpy's first-call costs.
        sets = [g[list(METRICS)].to_numpy(dtype=float) for _, g in usable.groupby("condition")]
        bootstrap_means(sets[0], n_boot=10, seed=0)
        t0 = time.perf_counter()
        fast = [bootstrap_means(v, n_boot=args.bootstrap, seed=0) for v in sets]
        t_fast = time.perf_counter() - t0
        t0 = time.perf_counter()
        slow = [bootstrap_means_naive(v, n_boot=args.bootstrap, seed=0) for v in sets]
        t_slow = time.perf_counter() - t0
        same = all(np.allclose(a, b, equal_nan=True) for a, b in zip(fast, slow, strict=True))
        print(
            f"bootstrap, {len(sets)} conditions x ~{sum(len(v) for v in sets) // len(sets)} prompts "
            f"x {len(METRICS)} metrics, {args.bootstrap} draws: vectorised {t_fast:.2f} s, "
            f"naive loop over draws {t_slow:.2f} s, ratio {t_slow / t_fast:.1f}x, "
            f"identical draws: {same}"
        )
    return 0 if rc == 0 and same else 1


if __name__ == "__main__":
    sys.exit(main())
