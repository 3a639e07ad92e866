"""Teacher scoring: the hf engine's shared-prefix path against one pair per forward.

The workload is what ``mopd-eval signal`` sends to the engine: for each problem, every target
rollout under every study condition (teacher prompts from ``mopd_eval.contexts``, chat
placement, paper templates), ``--problems-per-call`` problems per ``score`` call (4, as the
study sends them; 1 measured 7.7% slower). By default the rollout set is the
shipped default set of the signal study (``mopd_eval/data/smollm2_signal_rollouts.jsonl``);
``--rollouts R.jsonl`` uses another rollout file, ``--synthetic`` a seeded synthetic set
(arithmetic questions, templated step-by-step answers of ~90 tokens, mixed success), and
``--pairs P.jsonl`` a ready list of ``{"teacher_prompt_ids", "target_ids"[, "problem_id"]}``
rows (``--write-pairs`` dumps any workload in that format).

``--engines hf-tree,hf-naive,vllm`` adds vLLM's prompt-log-prob scoring (where ``vllm`` imports;
its CPU build lives in ``.venv-vllm``, docs/install.md) on the same token ids, at the same
``--dtype`` (default float32), without prefix caching (``mopd_eval.engines.vllm_engine`` says
why); every engine named runs on the paired calls, in an order that rotates call by call, and
is reported as target tokens/s, ratio to hf-tree and max |Δ log-prob| to hf-naive.

Both hf paths run on the same model in the same process. The fast path first scores the whole
workload. The naive path (what the reference code does) is slow, so it runs on the first
``--naive-problems`` score calls only, alternating call by call with the fast path (so a change
of load on a shared machine hits both), and the ratio is taken on those calls; wall and process
CPU time are both reported. The two results are compared (max |difference| of log-probs).

    .venv/bin/python benchmarks/bench_scoring.py                    # embedded model, shipped set
    .venv/bin/python benchmarks/bench_scoring.py --naive-problems 4  # the README's numbers
    .venv/bin/python benchmarks/bench_scoring.py --synthetic --problems 8

Printed: target tokens per second of both paths and their ratio, peak RSS, the
unique-token lower bound (distinct prefixes = positions that must be encoded at least once),
positions forwarded by each path, and the fast path's time against the lower bound encoded at
the naive path's per-position speed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.teacher_scoring import build_requests  # noqa: E402
from mopd_eval.contexts import STUDY_CONDITIONS, resolve_conditions  # noqa: E402
from mopd_eval.engines.hf import HFEngine  # noqa: E402
from mopd_eval.records import Rollout, group_rollouts, read_rollouts  # noqa: E402

DEFAULT_ROLLOUTS = (
    Path(__file__).resolve().parents[1] / "mopd_eval/data/smollm2_signal_rollouts.jsonl"
)
PHRASES = [
    "Let me work this out step by step.",
    "We need to compute the value carefully.",
    "I will break the calculation into parts.",
    "First, look at the numbers involved.",
]


def synthetic_rollouts(problems: int, per_problem: int, seed: int) -> list[Rollout]:
    """Seeded arithmetic questions with templated step-by-step answers, some of them wrong."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(problems):
        a, b = int(rng.integers(12, 99)), int(rng.integers(12, 99))
        op = ["+", "-", "*"][k % 3]
        truth = a + b if op == "+" else a - b if op == "-" else a * b
        prompt = (
            f"What is {a} {op} {b}?\n\nPlease reason step by step, and put your final answer "
            f"within \\boxed{{}}."
        )
        p_success = [0.15, 0.4, 0.6, 0.85][k % 4]
        for j in range(per_problem):
            ok = rng.random() < p_success
            ans = truth if ok else truth + int(rng.choice([-10, -2, -1, 1, 3, 10]))
            ta, tb = a // 10 * 10, b // 10 * 10
            steps = [
                PHRASES[int(rng.integers(len(PHRASES)))],
                f"Split the numbers: {a} = {ta} + {a - ta} and {b} = {tb} + {b - tb}.",
                f"Combining the tens gives {ta} {op} {tb}, and the ones give {a - ta} {op} {b - tb}.",
                f"Putting the parts together, {a} {op} {b} = {ans}.",
                "Double-checking the arithmetic confirms the result."
                if rng.random() < 0.5
                else "This matches a quick estimate.",
                f"The final answer is \\boxed{{{ans}}}.",
            ]
            out.append(
                Rollout(
                    problem_id=f"arith-{k}",
                    rollout_id=str(j),
                    prompt=[{"role": "user", "content": prompt}],
                    response=" ".join(steps),
                    reward=float(ok),
                    success=bool(ok),
                    feedback=None
                    if ok
                    else f"The answer {ans} is wrong; the expected answer differs.",
                    task="arith",
                    ground_truth=str(truth),
                    meta={"synthetic": True, "seed": seed},
                )
            )
    return out


def workload_from_rollouts(rollouts: list[Rollout], tokenizer, conditions: list[str], seed: int):
    """One list of (prompt ids, target ids) per problem, built by the study's own
    ``build_requests`` (chat placement, paper templates, group order)."""
    conds = resolve_conditions(conditions)
    return [
        [(q.prompt_ids, q.target_ids) for q in build_requests(group, conds, tokenizer, seed=seed)]
        for group in group_rollouts(rollouts).values()
    ]


def workload_from_pairs(path: Path):
    groups: dict[str, list] = {}
    with path.open() as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                key = str(row.get("problem_id", "all"))
                groups.setdefault(key, []).append((row["teacher_prompt_ids"], row["target_ids"]))
    return list(groups.values())


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def score_call(engine: HFEngine, pairs, naive: bool) -> tuple[list[np.ndarray], float, float]:
    """One score call: (results, wall seconds, process CPU seconds)."""
    fn = engine.score_naive if naive else engine.score
    w, c = time.perf_counter(), time.process_time()
    res = fn([p for p, _ in pairs], [t for _, t in pairs])
    return res, time.perf_counter() - w, time.process_time() - c


def run_fast(engine: HFEngine, problems) -> dict:
    tot = {
        "seconds": 0.0,
        "cpu": 0.0,
        "lower_bound": 0,
        "forwarded": 0,
        "naive_positions": 0,
        "target_tokens": 0,
        "forwards": 0,
    }
    for pairs in problems:
        _, w, c = score_call(engine, pairs, naive=False)
        s = engine.last_stats
        tot["seconds"] += w
        tot["cpu"] += c
        for key in ("lower_bound", "forwarded", "naive_positions", "target_tokens", "forwards"):
            tot[key] += getattr(s, key)
    return tot


ENGINES = ("hf-tree", "hf-naive", "vllm")


def run_paired(engine: HFEngine, problems, others: dict | None = None) -> dict:
    """hf-naive, hf-tree and ``others`` ({name: score function}) on each call, in an order that
    rotates call by call, so load changes on a shared machine hit all of them."""
    fns = {"naive": lambda pairs: score_call(engine, pairs, naive=True),
           "fast": lambda pairs: score_call(engine, pairs, naive=False), **(others or {})}
    out = {"targets": 0, "naive_positions": 0, "lower_bound": 0, "max_diff": 0.0,
           **{f"{n}_{k}": 0.0 for n in fns for k in ("s", "cpu")},
           **{f"{n}_max_diff": 0.0 for n in others or {}}}
    names = list(fns)
    for k, pairs in enumerate(problems):
        got = {}
        for name in names[k % len(names):] + names[: k % len(names)]:
            got[name], w, c = fns[name](pairs)
            out[f"{name}_s"] += w
            out[f"{name}_cpu"] += c
            if name == "fast":
                s = engine.last_stats
        out["targets"] += s.target_tokens
        out["naive_positions"] += s.naive_positions
        out["lower_bound"] += s.lower_bound
        for name in got:
            if name == "naive":
                continue
            diffs = [float(np.abs(a - b).max()) for a, b in zip(got[name], got["naive"], strict=True) if a.size]
            key = "max_diff" if name == "fast" else f"{name}_max_diff"
            out[key] = max([out[key], *diffs])
    return out


def vllm_scorer(model: str, dtype: str, max_model_len: int | None):
    """A score function on vLLM (prefix caching off), or None with the reason it cannot run."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        return None, "vllm is not importable in this environment (its CPU build: .venv-vllm)"
    from mopd_eval.engine_options import EngineOptions, make_engine

    opts = EngineOptions(engine="vllm", dtype=dtype, max_model_len=max_model_len).validated()
    eng = make_engine(model, opts, purpose="score")

    def fn(pairs):
        w, c = time.perf_counter(), time.process_time()
        res = eng.score([p for p, _ in pairs], [t for _, t in pairs])
        return res, time.perf_counter() - w, time.process_time() - c

    return fn, None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    src = ap.add_mutually_exclusive_group()
    src.add_argument(
        "--pairs", type=Path, help="JSONL of {teacher_prompt_ids, target_ids[, problem_id]}"
    )
    src.add_argument(
        "--rollouts",
        type=Path,
        default=DEFAULT_ROLLOUTS,
        help="a rollout JSONL to build the study workload from (default: the shipped set)",
    )
    src.add_argument("--synthetic", action="store_true", help="use a seeded synthetic rollout set")
    ap.add_argument("--problems", type=int, default=8, help="synthetic problems (default 8)")
    ap.add_argument("--per-problem", type=int, default=8, help="synthetic rollouts per problem")
    ap.add_argument("--conditions", default=",".join(STUDY_CONDITIONS))
    ap.add_argument(
        "--naive-problems",
        type=int,
        default=2,
        help="problems the naive path runs on (it is slow; rounded up to whole calls); the "
        "ratio uses these",
    )
    ap.add_argument(
        "--problems-per-call",
        type=int,
        default=4,
        help="problems whose pairs go to one score call (default 4, as mopd-eval signal)",
    )
    ap.add_argument(
        "--pack-tokens", type=int, default=None, help="hf engine pack size (default: engine's)"
    )
    ap.add_argument("--row-tokens", type=int, default=None, help="hf engine row size")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--engines", default="hf-tree,hf-naive",
                    help=f"comma-separated, from {', '.join(ENGINES)} (hf-tree and hf-naive always run)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                    help="precision of every engine (default float32)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--write-pairs", type=Path, help="also write the workload as a --pairs file")
    args = ap.parse_args(argv)

    print(
        f"# bench_scoring  python {platform.python_version()}  torch {torch.__version__}  "
        f"threads {torch.get_num_threads()}  seed {args.seed}  dtype {args.dtype}  "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    t0 = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    kw = {
        k: v for k, v in (("pack_tokens", args.pack_tokens), ("row_tokens", args.row_tokens)) if v
    }
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    if not set(engines) <= set(ENGINES):
        ap.error(f"--engines: unknown {sorted(set(engines) - set(ENGINES))}; choose from {', '.join(ENGINES)}")
    engine = HFEngine(args.model, dtype=args.dtype, **kw)
    print(
        f"model {args.model}: loaded in {time.perf_counter() - t0:.1f} s; pack_tokens {engine.pack_tokens}, "
        f"row_tokens {engine.row_tokens}; "
        f"peak RSS {peak_rss_mb():.0f} MB"
    )

    if args.pairs:
        problems = workload_from_pairs(args.pairs)
        source = str(args.pairs)
    else:
        if args.synthetic or not args.rollouts.exists():
            rollouts = synthetic_rollouts(args.problems, args.per_problem, args.seed)
            source = f"synthetic {args.problems} problems x {args.per_problem} rollouts (seed {args.seed})"
        else:
            rollouts = read_rollouts(args.rollouts)
            source = str(args.rollouts)
        problems = workload_from_rollouts(
            rollouts, engine.tokenizer, args.conditions.split(","), args.seed
        )
    if args.write_pairs:
        with args.write_pairs.open("w") as f:
            for k, pairs in enumerate(problems):
                for p, t in pairs:
                    f.write(
                        json.dumps({"problem_id": k, "teacher_prompt_ids": p, "target_ids": t})
                        + "\n"
                    )
    k = max(1, args.problems_per_call)
    problems = [sum(problems[i : i + k], []) for i in range(0, len(problems), k)]
    n_pairs = sum(len(p) for p in problems)
    plen = np.array([len(p) for pairs in problems for p, _ in pairs])
    tlen = np.array([len(t) for pairs in problems for _, t in pairs])
    print(
        f"workload: {source}; {len(problems)} score calls ({k} problems each), {n_pairs} pairs; "
        f"teacher prompt tokens "
        f"mean {plen.mean():.0f} (max {plen.max()}), target tokens mean {tlen.mean():.0f} (max {tlen.max()})"
    )

    # Warm up kernels once so neither path pays first-call costs.
    engine.score_naive([problems[0][0][0]], [problems[0][0][1]])

    fast = run_fast(engine, problems)
    rss_fast = peak_rss_mb()
    sub = problems[: max(1, -(-args.naive_problems // k))]
    others = {}
    if "vllm" in engines:
        longest = max(len(p) + len(t) for pairs in problems for p, t in pairs)
        fn, why = vllm_scorer(args.model, args.dtype, max(2048, longest + 1))
        if fn is None:
            print(f"vllm: skipped: {why}")
        else:
            fn(sub[0][:2])  # vLLM's first call compiles and allocates; not timed
            others["vllm"] = fn
    paired = run_paired(engine, sub, others)
    rss_all = peak_rss_mb()

    tps_fast_all = fast["target_tokens"] / fast["seconds"]
    tps_fast = paired["targets"] / paired["fast_s"]
    tps_naive = paired["targets"] / paired["naive_s"]
    pos_per_s_naive = paired["naive_positions"] / paired["naive_s"]
    lb_time = paired["lower_bound"] / pos_per_s_naive

    print()
    print(
        f"fast, all {len(problems)} calls: {fast['seconds']:.1f} s (cpu {fast['cpu']:.1f} s), "
        f"{tps_fast_all:.1f} target tok/s, {fast['forwards']} forwards, peak RSS {rss_fast:.0f} MB"
    )
    print(f"paired run on the first {len(sub)} calls (naive and fast alternating):")
    print(
        f"  naive: {paired['naive_s']:8.1f} s (cpu {paired['naive_cpu']:.1f} s)  "
        f"{tps_naive:8.1f} target tok/s"
    )
    print(
        f"  fast:  {paired['fast_s']:8.1f} s (cpu {paired['fast_cpu']:.1f} s)  "
        f"{tps_fast:8.1f} target tok/s"
    )
    print(
        f"  ratio fast/naive: {tps_fast / tps_naive:.2f}x wall, "
        f"{paired['naive_cpu'] / paired['fast_cpu']:.2f}x cpu; max |dlogprob| {paired['max_diff']:.2e}; "
        f"peak RSS {rss_all:.0f} MB"
    )
    for name in others:
        tps = paired["targets"] / paired[f"{name}_s"]
        print(
            f"  {name}: {paired[f'{name}_s']:8.1f} s (cpu {paired[f'{name}_cpu']:.1f} s)  {tps:8.1f} target tok/s; "
            f"hf-tree / {name} = {tps_fast / tps:.2f}x wall; {name} / hf-naive = {tps / tps_naive:.2f}x; "
            f"max |dlogprob| vs hf-naive {paired[f'{name}_max_diff']:.2e}"
        )
    print()
    print(
        f"positions, all calls: naive {fast['naive_positions']}, lower bound {fast['lower_bound']} "
        f"(naive / lower bound = {fast['naive_positions'] / fast['lower_bound']:.2f}), fast "
        f"forwarded {fast['forwarded']} (= {fast['forwarded'] / fast['lower_bound']:.3f} x lower bound)"
    )
    print(
        f"time vs lower bound (paired calls): the lower bound encoded at the naive path's "
        f"{pos_per_s_naive:.0f} positions/s takes {lb_time:.1f} s; fast took {paired['fast_s']:.1f} s "
        f"(= {paired['fast_s'] / lb_time:.2f} x the lower-bound time)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
