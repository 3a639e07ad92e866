"""``mopd-eval train-report``: the time-breakdown table and reward curves of training runs."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="output_dir of each run (holds metrics.jsonl)")
    p.add_argument("--names", help="comma-separated run names (default: each run's algo); runs with the same name are seeds of one configuration, pooled into bands")
    p.add_argument("--skip-steps", type=int, default=1,
                   help="leave the first N steps out of the time means (warm-up; default 1)")
    p.add_argument("--out", required=True, type=Path, help="output directory")


def run(args: argparse.Namespace) -> int:
    from training.report import write_train_report

    names = [n.strip() for n in args.names.split(",")] if args.names else None
    paths = write_train_report(args.runs, args.out, names=names, skip_steps=args.skip_steps)
    for p in paths:
        print(p)
    return 0
