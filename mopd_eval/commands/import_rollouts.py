"""``mopd-eval import``: verl/SDPO dumps or candidate_responses.jsonl -> rollout records."""

from __future__ import annotations

import argparse

from mopd_eval.importers import import_candidates, import_verl
from mopd_eval.records import write_rollouts


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=["verl", "candidates"], required=True,
                   help="verl: verl/SDPO {step}.jsonl dumps; candidates: reference candidate_responses.jsonl")
    p.add_argument("inputs", nargs="+", help="input file(s); several verl step files are concatenated")
    p.add_argument("--out", required=True, help="rollout JSONL to write (atomically)")
    p.add_argument("--threshold", type=float, default=1.0, help="success = reward >= threshold (default 1.0)")
    p.add_argument("--task", default=None, help="task name to record")


def run(args: argparse.Namespace) -> int:
    if args.format == "verl":
        rollouts = import_verl(args.inputs, threshold=args.threshold, task=args.task or "verl")
    else:
        rollouts = []
        for path in args.inputs:
            rollouts += import_candidates(path, threshold=args.threshold, task=args.task or "reference")
    n = write_rollouts(args.out, rollouts)
    groups = len({r.problem_id for r in rollouts})
    print(f"wrote {n} rollouts in {groups} groups to {args.out}")
    return 0
