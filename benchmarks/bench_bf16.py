"""The default signal study scored in float32 and in bfloat16, in one process: is bf16 safe?

Both engines (the same model loaded twice, ``dtype`` float32 and bfloat16) score the study's
own requests (``analysis.teacher_scoring.pending_batches``: the shipped rollouts, every study
condition, 4 problems per call). The calls alternate between the two, and which one goes first
alternates too, so a change of load on a shared machine hits both; ``os.getloadavg`` is printed
before and after. Then both score sets go through the study's metrics (``compute_signal_metrics``,
2000 bootstrap draws, seed 0) and are compared:

* wall-time ratio float32 / bfloat16 (and process CPU time);
* per row: max |Δ teacher score|, mean |Δ| of the per-token log-probs, Spearman of the scores;
* Table 7: for every (condition, metric) mean, |Δ mean| / the float32 CI half-width; the largest;
* paired comparisons: the conclusion of each (significantly above, below, or not, at the
  tables' rule: p < 0.05 on enough prompts) in both precisions; the ones that differ.

The decision rule (docs/gpus.md): bf16 may become the CPU default only if every Table 7 mean moves
by less than a tenth of its CI half-width.

    .venv/bin/python benchmarks/bench_bf16.py                  # the whole default study
    .venv/bin/python benchmarks/bench_bf16.py --limit 8 --json out.json

Per-call results are kept in ``--work`` (default ``/tmp/bench_bf16``) so a killed run resumes;
``--fresh`` starts over.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.aggregate import compute_signal_metrics  # noqa: E402
from analysis.tables import MIN_PROMPTS_FOR_SIGNIFICANCE, SIGNIFICANCE  # noqa: E402
from analysis.teacher_scoring import pending_batches, score_row  # noqa: E402
from mopd_eval.contexts import STUDY_CONDITIONS, resolve_conditions  # noqa: E402
from mopd_eval.engines.hf import HFEngine  # noqa: E402
from mopd_eval.records import group_rollouts, read_rollouts  # noqa: E402

DEFAULT_ROLLOUTS = Path(__file__).resolve().parents[1] / "mopd_eval/data/smollm2_signal_rollouts.jsonl"
PRECISIONS = ("float32", "bfloat16")


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def score_all(engines: dict, batches: list, work: Path) -> dict:
    """Rows, per-token log-probs and timings of each precision; A/B alternate call by call."""
    out = {p: {"rows": [], "lps": [], "wall": 0.0, "cpu": 0.0} for p in PRECISIONS}
    for k, reqs in enumerate(batches):
        cache = work / f"call{k:03d}.json"
        if cache.exists():
            done = json.loads(cache.read_text())
        else:
            done = {}
            order = PRECISIONS if k % 2 == 0 else PRECISIONS[::-1]
            for p in order:
                w, c = time.perf_counter(), time.process_time()
                lps = engines[p].score([q.prompt_ids for q in reqs], [q.target_ids for q in reqs])
                done[p] = {"wall": time.perf_counter() - w, "cpu": time.process_time() - c,
                           "lps": [a.tolist() for a in lps]}
            cache.write_text(json.dumps(done))
        for p in PRECISIONS:
            lps = [np.asarray(a, dtype=np.float32) for a in done[p]["lps"]]
            out[p]["rows"] += [score_row(q, a) for q, a in zip(reqs, lps, strict=True)]
            out[p]["lps"] += lps
            out[p]["wall"] += done[p]["wall"]
            out[p]["cpu"] += done[p]["cpu"]
        print(f"call {k + 1}/{len(batches)}: fp32 {done['float32']['wall']:.1f} s, bf16 "
              f"{done['bfloat16']['wall']:.1f} s; {load()}", flush=True)
    return out


def conclusion(pair: dict) -> int:
    """+1 / -1: significantly above / below (the tables' rule); 0: not significant."""
    p, n, d = pair.get("p_value"), pair.get("n_prompts", 0), pair.get("diff")
    if p is None or d is None or p >= SIGNIFICANCE or n < MIN_PROMPTS_FOR_SIGNIFICANCE:
        return 0
    return 1 if d > 0 else -1


def compare(a: dict, b: dict) -> dict:
    """Table 7 means and paired conclusions of metrics ``a`` (fp32) against ``b`` (bf16)."""
    worst = {"ratio": 0.0}
    degenerate = 0  # a zero-width CI (one prompt, or a constant metric): no scale to compare with
    for cond, per_metric in a["conditions"].items():
        for metric, s in per_metric.items():
            t = b["conditions"][cond][metric]
            if s["mean"] is None or t["mean"] is None or s["ci_low"] is None:
                continue
            half = (s["ci_high"] - s["ci_low"]) / 2
            delta = abs(t["mean"] - s["mean"])
            if half <= 0:
                degenerate += 1
                continue
            ratio = delta / half
            if ratio >= worst["ratio"]:
                worst = {"ratio": ratio, "condition": cond, "metric": metric, "delta": delta,
                         "ci_half_width": half, "mean_fp32": s["mean"], "mean_bf16": t["mean"]}
    changed = []
    n_pairs = 0
    for name, per_metric in a["paired"].items():
        for metric, s in per_metric.items():
            n_pairs += 1
            ca, cb = conclusion(s), conclusion(b["paired"][name][metric])
            if ca != cb:
                changed.append({"pair": name, "metric": metric, "fp32": ca, "bf16": cb,
                                "p_fp32": s.get("p_value"), "p_bf16": b["paired"][name][metric].get("p_value")})
    return {"largest_mean_change": worst, "zero_width_cis_skipped": degenerate, "paired_comparisons": n_pairs, "paired_changed": changed}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--rollouts", type=Path, default=DEFAULT_ROLLOUTS)
    ap.add_argument("--limit", type=int, help="first N problems only")
    ap.add_argument("--bootstrap", type=int, default=2000)
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench_bf16"))
    ap.add_argument("--fresh", action="store_true")
    ap.add_argument("--json", type=Path, help="also write the summary here")
    args = ap.parse_args(argv)
    import torch
    from scipy.stats import spearmanr

    print(f"# bench_bf16  torch {torch.__version__}  threads {torch.get_num_threads()}  "
          f"avx512_bf16 {torch.cpu._is_avx512_bf16_supported()}  start: {load()}", flush=True)
    engines = {p: HFEngine(args.model, dtype=p) for p in PRECISIONS}
    groups = list(group_rollouts(read_rollouts(args.rollouts)).values())[: args.limit]
    conds = resolve_conditions(list(STUDY_CONDITIONS))
    batches = list(pending_batches(groups, conds, set(), engines["float32"].tokenizer, problems_per_call=4))
    work = args.work / f"{args.model.replace('/', '_')}-{len(groups)}"
    if args.fresh and work.exists():
        for f in work.glob("call*.json"):
            f.unlink()
    work.mkdir(parents=True, exist_ok=True)
    res = score_all(engines, batches, work)
    a, b = res["float32"], res["bfloat16"]
    sa = np.array([r["teacher_score"] for r in a["rows"]], dtype=float)
    sb = np.array([r["teacher_score"] for r in b["rows"]], dtype=float)
    ok = ~np.isnan(sa) & ~np.isnan(sb)
    tok = np.concatenate([np.abs(x - y) for x, y in zip(a["lps"], b["lps"], strict=True) if x.size])
    metrics = {p: compute_signal_metrics([r for r in res[p]["rows"] if r["n_tokens"] > 0],
                                         n_bootstrap=args.bootstrap, seed=0,
                                         conditions=conds, progress=False) for p in PRECISIONS}
    cmp_ = compare(metrics["float32"], metrics["bfloat16"])
    summary = {
        "problems": len(groups), "pairs": len(a["rows"]), "target_tokens": int(tok.size),
        "wall_s": {"float32": a["wall"], "bfloat16": b["wall"]}, "cpu_s": {"float32": a["cpu"], "bfloat16": b["cpu"]},
        "wall_ratio_fp32_over_bf16": a["wall"] / b["wall"], "cpu_ratio_fp32_over_bf16": a["cpu"] / b["cpu"],
        "max_abs_delta_score": float(np.abs(sa - sb)[ok].max()),
        "mean_abs_delta_token_logprob": float(tok.mean()),
        "spearman_scores": float(spearmanr(sa[ok], sb[ok]).statistic),
        **cmp_,
        "bf16_cpu_default_rule_holds": cmp_["largest_mean_change"]["ratio"] < 0.1,
        "end_load": load(),
    }
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
