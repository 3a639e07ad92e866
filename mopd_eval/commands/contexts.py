"""``mopd-eval contexts``: write the assembled teacher prompts so a person can read them."""

from __future__ import annotations

import argparse
import sys

from mopd_eval.contexts import (
    build_contexts,
    context_row,
    load_spec_file,
    render_teacher_prompt,
    resolve_conditions,
    resolve_templates,
)
from mopd_eval.errors import InputError
from mopd_eval.jsonl import write_jsonl_atomic
from mopd_eval.records import placement_for, read_rollouts


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rollouts", required=True, help="rollout records (JSONL)")
    p.add_argument("--conditions", default="base,primary,second,failure,primary+failure,2s1f,all",
                   help="comma-separated condition names (default: the seven paper conditions)")
    p.add_argument("--out", required=True, help="output JSONL, one row per (condition, target)")
    p.add_argument("--spec", help="YAML/JSON file with extra conditions and template sets")
    p.add_argument("--templates", default="paper", help="template set: paper (the trainer's, default), paper-analysis (the reference "
                        "analysis script's; with --placement flat its prompts byte for byte), or one from --spec")
    p.add_argument("--order", choices=["group", "random"], default="group", help="peer order")
    p.add_argument("--seed", type=int, default=0, help="seed of the random peer order and random_peer")
    p.add_argument("--tokenizer", help="model dir or alias; adds the fully rendered teacher prompt")
    p.add_argument("--placement", choices=["chat", "flat"], default=None,
                   help="chat (default): reprompt as the user turn of the chat template; flat: decoded "
                        "transcript then the blocks (forced for transcript prompts, with a note)")
    p.add_argument("--threshold", type=float, default=1.0, help="success threshold when records omit success")


def run(args: argparse.Namespace) -> int:
    extra_conds, extra_temps = load_spec_file(args.spec) if args.spec else ({}, {})
    templates = resolve_templates(args.templates, extra_temps)
    names = [n.strip() for n in args.conditions.split(",") if n.strip()]
    if not names:
        raise InputError("no condition given", field="--conditions")
    conditions = resolve_conditions(names, extra_conds)
    rollouts = read_rollouts(args.rollouts, threshold=args.threshold)
    placement, note = placement_for(rollouts, args.placement)
    if note:
        print(f"mopd-eval contexts: note: {note}", file=sys.stderr)
    tokenizer = None
    if args.tokenizer:
        from mopd_eval.models import load_tokenizer

        tokenizer = load_tokenizer(args.tokenizer)
    rows = []
    for target, ctx in build_contexts(rollouts, conditions, templates, order=args.order, seed=args.seed):
        row = context_row(target, ctx)
        row["placement"] = placement
        if tokenizer is not None:
            row["teacher_prompt"] = render_teacher_prompt(target, ctx, tokenizer, placement, templates)
        row["target_response"] = target.response
        rows.append(row)
    n = write_jsonl_atomic(args.out, rows)
    eff = sum(r["effective"] for r in rows)
    print(f"wrote {n} contexts ({eff} effective) for {len({r['problem_id'] for r in rows})} problems to {args.out}")
    return 0
