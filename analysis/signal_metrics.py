"""``mopd-eval signal-metrics``: teacher-signal metrics, Table 7 and Figure 4 from a scores file.

Python entry points (what the CLI runs)::

    from analysis.signal_metrics import compute_signal_metrics, write_signal_reports
    metrics = compute_signal_metrics(rows, compat="default", sample_set="both_present_effective",
                                     n_bootstrap=2000, seed=0, pairs=None, conditions=None)
    write_signal_reports(metrics, "out/signal")

``conditions`` takes ``Condition`` objects (``mopd_eval.contexts``), whose ``label`` and
``control`` name and group the rows of Table 7 and Figure 4, or names of built-in conditions.
Without it every condition in the rows is reported. On the command line ``--spec`` gives the
conditions file the scores were made with, so its labels show in Table 7.
"""

from __future__ import annotations

import argparse
import sys
import time

from analysis.aggregate import (
    DEFAULT_BOOTSTRAP,
    SAMPLE_SETS,
    compute_signal_metrics,
    metrics_from_frame,
)
from analysis.metrics import COMPAT_MODES
from analysis.reports import OUTPUT_FILES, write_signal_reports
from analysis.scores import load_scores
from mopd_eval.contexts import load_spec_file
from mopd_eval.errors import InputError

__all__ = ["add_arguments", "compute_signal_metrics", "run", "write_signal_reports"]


def _non_negative_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {v}")
    return v


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--scores",
        required=True,
        metavar="SCORES.jsonl",
        help="teacher-score rows: condition, problem_id, rollout_id, teacher_score, reward, success, effective",
    )
    parser.add_argument(
        "--out", required=True, metavar="DIR", help="output directory: " + ", ".join(OUTPUT_FILES)
    )
    parser.add_argument(
        "--compat",
        choices=COMPAT_MODES,
        default="default",
        help="'paper' reproduces the reference code: gamma for Kendall, 0 for undefined values, score ties wrong in pairwise accuracy (default: %(default)s)",
    )
    parser.add_argument(
        "--sample-set",
        choices=SAMPLE_SETS,
        default="both_present_effective",
        help="rows each prompt's metrics use (default: %(default)s)",
    )
    parser.add_argument(
        "--bootstrap",
        type=_non_negative_int,
        default=DEFAULT_BOOTSTRAP,
        metavar="N",
        help="bootstrap draws over prompts for CIs and p-values; 0 = none (default: %(default)s)",
    )
    parser.add_argument(
        "--seed",
        type=_non_negative_int,
        default=0,
        help="bootstrap seed, recorded in metrics.json (default: %(default)s)",
    )
    parser.add_argument(
        "--conditions", metavar="A,B,...", help="only these conditions (each must be in the file)"
    )
    parser.add_argument(
        "--spec",
        metavar="SPEC.yaml",
        help="conditions file the scores were made with: its labels and control flags name the rows",
    )
    parser.add_argument(
        "--pair",
        action="append",
        default=[],
        metavar="A:B",
        help="also compare condition A with B (repeatable); every condition is compared with base anyway",
    )


def run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    conditions = None
    if args.conditions is not None:
        conditions = [c.strip() for c in args.conditions.split(",") if c.strip()]
        if not conditions:
            raise InputError("--conditions names no condition", field="conditions")
    frame = load_scores(args.scores)
    if args.spec:
        # Names stay names where the spec does not define them: they are looked up in the
        # built-in conditions (or shown as they are).
        defined = load_spec_file(args.spec)[0]
        names = conditions if conditions is not None else list(dict.fromkeys(frame.condition))
        conditions = [defined.get(n, n) for n in names]
    metrics = metrics_from_frame(
        frame,
        compat=args.compat,
        sample_set=args.sample_set,
        n_bootstrap=args.bootstrap,
        seed=args.seed,
        pairs=args.pair,
        conditions=conditions,
    )
    metrics["scores"] = str(args.scores)
    for cond in metrics["condition_order"]:
        if all(s["n_prompts"] == 0 for s in metrics["conditions"][cond].values()):
            print(
                f"mopd-eval signal-metrics: warning: condition {cond!r} has no prompt with two or more "
                f"rows in sample set {args.sample_set!r}; its row in Table 7 is empty",
                file=sys.stderr,
            )
    paths = write_signal_reports(metrics, args.out)
    print(paths["table7.md"].read_text(encoding="utf-8"))
    print(
        f"{metrics['n_rows']} rows, {len(metrics['condition_order'])} conditions; wrote "
        f"{', '.join(OUTPUT_FILES)} to {args.out} in {time.perf_counter() - t0:.1f} s",
        file=sys.stderr,
    )
    return 0
