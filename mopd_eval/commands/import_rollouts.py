"""``mopd-eval import``: verl/SDPO dumps or candidate_responses.jsonl -> rollout records.

The keys read and the records written are described in docs/formats.md.
"""

from __future__ import annotations

import argparse
import sys

from mopd_eval.errors import InputError
from mopd_eval.importers import import_candidate_files, import_verl, transcript_parser
from mopd_eval.records import is_transcript, write_rollouts


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=["verl", "candidates"], required=True,
                   help="verl: verl/SDPO {step}.jsonl dumps; candidates: reference candidate_responses.jsonl")
    p.add_argument("inputs", nargs="+",
                   help="files, directories (searched recursively for *.jsonl) or quoted globs; read in "
                        "natural path order (2.jsonl before 10.jsonl)")
    p.add_argument("--out", required=True, help="rollout JSONL to write (atomically)")
    p.add_argument("--threshold", type=float, default=1.0, help="success = reward >= threshold (default 1.0)")
    p.add_argument("--task", default=None, help="task name to record")
    p.add_argument("--pool-steps", action="store_true",
                   help="verl: one group per prompt text across all steps (the reference's grouping); "
                        "default: one group per (prompt, step)")
    p.add_argument("--tokenizer", metavar="MODEL",
                   help="alias or local model directory whose chat template rendered the prompts: parse "
                        "the decoded transcripts back into chat messages (enables chat placement)")
    p.add_argument("--keep-duplicates", action="store_true",
                   help="verl: keep rows that repeat an earlier row exactly (dropped by default)")


def _warn(msg: str) -> None:
    print(f"mopd-eval import: warning: {msg}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    parser = transcript_parser(args.tokenizer) if args.tokenizer else None
    if args.format == "verl":
        rollouts = import_verl(
            args.inputs, threshold=args.threshold, task=args.task or "verl", pool_steps=args.pool_steps,
            parser=parser, keep_duplicates=args.keep_duplicates, warn=_warn,
        )
    else:
        for flag in ("pool_steps", "keep_duplicates"):
            if getattr(args, flag):
                raise InputError("only for --format verl", field="--" + flag.replace("_", "-"))
        rollouts = import_candidate_files(
            args.inputs, threshold=args.threshold, task=args.task or "reference", parser=parser, warn=_warn
        )
    n = write_rollouts(args.out, rollouts)
    groups = len({r.problem_id for r in rollouts})
    print(f"wrote {n} rollouts in {groups} groups to {args.out}")
    n_transcripts = sum(is_transcript(r) for r in rollouts)
    if n_transcripts:
        print(f"{n_transcripts} prompts kept as decoded chat transcripts (meta.prompt_format=transcript): "
              "signal and contexts will use flat placement; --tokenizer MODEL parses them into chat messages")
    return 0
