"""``mopd-eval signal``: the teacher-signal study (the paper's Table 7 and Figure 4) in one command.

rollouts -> peer contexts -> teacher scores (resumable) -> metrics -> Table 7, Figure 4, README.
With no arguments it scores the rollout set shipped in the package with the embedded model under
the seven paper conditions plus the ``random_peer``, ``score_ordered`` and ``feedback`` controls
and writes everything into ``reports/signal/``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from importlib.resources import files
from pathlib import Path

from analysis.teacher_scoring import read_timing, score_rollouts
from mopd_eval.contexts import (
    STUDY_CONDITIONS,
    Condition,
    TemplateSet,
    check_response_token_ids,
    load_spec_file,
    resolve_conditions,
    resolve_templates,
)
from mopd_eval.engine_options import add_engine_arguments, engine_options, make_engine
from mopd_eval.errors import InputError
from mopd_eval.jsonl import iter_jsonl, write_jsonl_atomic, write_text_atomic
from mopd_eval.records import group_rollouts, placement_for, read_rollouts
from mopd_eval.resumable import ResumableRun, file_sha256
from mopd_eval.run_keys import model_key
from mopd_eval.scaleout import ONE_PROCESS, Shard, barrier, current_shard, finish
from mopd_eval.versions import package_versions

DEFAULT_ROLLOUTS = "smollm2_signal_rollouts.jsonl"
WORK_DIR = "work"  # under --out: the resumable score log, its run record and timings (not committed)


def default_rollouts() -> Path:
    return Path(str(files("mopd_eval") / "data" / DEFAULT_ROLLOUTS))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rollouts", help="rollout JSONL (default: the set shipped with mopd-eval)")
    p.add_argument(
        "--model",
        default="smollm2-135m",
        help="teacher: HF directory or alias (default smollm2-135m)",
    )
    add_engine_arguments(p)
    p.add_argument(
        "--conditions", default=",".join(STUDY_CONDITIONS), help="comma-separated conditions"
    )
    p.add_argument("--spec", help="YAML/JSON with extra conditions and template sets")
    p.add_argument("--templates", default="paper", help="template set name (default paper)")
    p.add_argument("--placement", choices=["chat", "flat"],
                   help="teacher prompt placement (default chat; flat for rollouts imported as transcripts)")
    p.add_argument("--order", choices=["group", "random"], default="group", help="peer order")
    p.add_argument("--compat", choices=["default", "paper"], default="default")
    p.add_argument(
        "--sample-set",
        default="both_present_effective",
        choices=["all", "effective", "both_present_effective"],
    )
    p.add_argument("--bootstrap", type=int, default=2000)
    p.add_argument(
        "--seed", type=int, default=0, help="seed of bootstrap, random peer order and random_peer"
    )
    p.add_argument("--limit", type=int, help="first N problems only")
    p.add_argument(
        "--out", default="reports/signal", help="output directory (default reports/signal)"
    )
    p.add_argument(
        "--rescore",
        action="store_true",
        help="discard the teacher scores in OUT/work/ and score everything again "
        "(without it a rerun resumes: only missing scores are computed)",
    )
    p.add_argument("--save-token-logprobs", action=argparse.BooleanOptionalAction, default=False,
                   help="keep every row's per-token teacher log-probs in OUT/token_logprobs.npz for "
                   "`mopd-eval tokens` (docs/tokens.md; default off: it adds 16%% to the default study's disk)")


@dataclass
class StudyInputs:
    """The study's checked inputs, resolved before any model loads or any file is written."""

    rollouts_path: Path
    rollouts: list
    groups: list
    conditions: list[Condition]
    templates: TemplateSet
    placement: str
    placement_note: str | None


def resolve_inputs(args: argparse.Namespace) -> StudyInputs:
    """Spec file, template set, conditions and rollouts of ``args``; ``InputError`` when bad."""
    if args.limit is not None and args.limit < 1:
        raise InputError(f"must be >= 1, got {args.limit}", field="--limit")
    extra_conds, extra_temps = load_spec_file(args.spec) if args.spec else ({}, {})
    templates = resolve_templates(args.templates, extra_temps)
    conditions = resolve_conditions([c.strip() for c in args.conditions.split(",") if c.strip()], extra_conds)
    if not conditions:
        raise InputError("no condition given", field="--conditions")
    rollouts_path = Path(args.rollouts) if args.rollouts else default_rollouts()
    rollouts = read_rollouts(rollouts_path)
    groups = list(group_rollouts(rollouts).values())
    if args.limit:
        groups = groups[: args.limit]
        rollouts = [r for g in groups for r in g]
    placement, note = placement_for(rollouts, args.placement)
    if note:
        print(f"mopd-eval signal: {note}", file=sys.stderr)
    return StudyInputs(rollouts_path, rollouts, groups, conditions, templates, placement, note)


def study_key(args: argparse.Namespace, inputs: StudyInputs) -> dict:
    """What the teacher scores depend on, by content (``mopd_eval.resumable``): a changed template
    text or condition definition changes the key even under the same name."""
    return {
        "rollouts_sha256": file_sha256(inputs.rollouts_path),
        "templates": asdict(inputs.templates),
        # Extendable: a later run may score more conditions into the same log.
        "conditions": {c.name: asdict(c) for c in inputs.conditions},
        "placement": inputs.placement,
        "order": args.order,
        "seed": args.seed,
        "model_name": str(args.model),
        **model_key(args.model, engine_options(args).key_fields()),
    }


def score_run(out: Path, key: dict, shard: Shard = ONE_PROCESS) -> ResumableRun:
    """The resumable score log of ``shard`` in ``OUT/work/`` (the working copy's own; git-ignored)."""
    work, sfx = out / WORK_DIR, shard.suffix
    return ResumableRun(work / f"teacher_scores{sfx}.jsonl", work / f"teacher_scores{sfx}.run.json", key,
                        extendable=("conditions",), what="signal study")


def timing_path(out: Path, shard: Shard = ONE_PROCESS) -> Path:
    return out / WORK_DIR / f"teacher_scores{shard.suffix}.timing.json"


def canonical_order(rows: list[dict], inputs: StudyInputs) -> list[dict]:
    """Rows in problem order, then the ``--conditions`` order, then group order: the same file
    however the work was split over runs and processes."""
    pos = {(r.problem_id, r.rollout_id): (g, t) for g, grp in enumerate(inputs.groups) for t, r in enumerate(grp)}
    cond = {c.name: i for i, c in enumerate(inputs.conditions)}

    def key(row: dict) -> tuple:
        g, t = pos[(row["problem_id"], row["rollout_id"])]
        return g, cond[row["condition"]], t

    return sorted(rows, key=key)


def merged_rows(out: Path, shard: Shard, rows: list[dict], inputs: StudyInputs) -> tuple[list[dict], dict]:
    """Rank 0, after the barrier: every rank's rows (the wanted ones) and summed timings."""
    wanted = {c.name for c in inputs.conditions}
    total = read_timing(timing_path(out, shard))
    for other in shard.all()[1:]:
        log = score_run(out, {}, other).log_path
        pids = {g[0].problem_id for g in other.take(inputs.groups)}
        rows = rows + [r for _, r in iter_jsonl(log, allow_torn_tail=True)
                       if r["condition"] in wanted and r["problem_id"] in pids]
        more = read_timing(timing_path(out, other))
        total = {k: total[k] + more[k] for k in total}
    return canonical_order(rows, inputs), total


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    options = engine_options(args)  # the engine flags first: they need no file, no model
    inputs = resolve_inputs(args)
    key = study_key(args, inputs)  # resolves the model: a bad --model fails here, nothing written
    from analysis.aggregate import compute_signal_metrics
    from analysis.reports import write_signal_reports
    t0 = time.perf_counter()
    engine = make_engine(args.model, options, purpose="score")
    check_response_token_ids(inputs.rollouts, engine.tokenizer, inputs.rollouts_path)
    load_s = time.perf_counter() - t0
    out = Path(args.out)
    from analysis.token_logprobs import TokenStore

    shard = current_shard()
    if shard.world > 1 and args.save_token_logprobs:
        if shard.is_main:
            print("mopd-eval signal: per-token log-probs are not saved under torchrun yet; run one process "
                  "for them", file=sys.stderr)
        args.save_token_logprobs = False
    mine = [r for g in shard.take(inputs.groups) for r in g]
    store = TokenStore(out / WORK_DIR, fresh=args.rescore) if args.save_token_logprobs else None
    with score_run(out, key, shard) as run_:
        # The log is the working copy's own (git-ignored): a fresh clone scores the study itself
        # rather than reusing the committed scores.
        write_text_atomic(out / WORK_DIR / ".gitignore", "*\n")
        rows, stats = score_rollouts(engine, mine, inputs.conditions, run_, placement=inputs.placement,
                                     templates=inputs.templates, order=args.order, seed=args.seed,
                                     fresh=args.rescore, on_scores=store and store.on_scores,
                                     timing_path=timing_path(out, shard))
        if store:
            store.finish(out, rows, engine, inputs, args)
    barrier(shard)
    if not shard.is_main:
        finish(shard)
        return 0
    rows, total = merged_rows(out, shard, rows, inputs)
    finish(shard)
    write_jsonl_atomic(out / "teacher_scores.jsonl", rows)
    scored = [r for r in rows if r["n_tokens"] > 0]
    t0 = time.perf_counter()
    metrics = compute_signal_metrics(scored, compat=args.compat, sample_set=args.sample_set,
                                     n_bootstrap=args.bootstrap, seed=args.seed, conditions=inputs.conditions)
    write_signal_reports(metrics, out)
    metrics_s = time.perf_counter() - t0
    total_s = time.perf_counter() - started
    timing = {"load_s": load_s, "metrics_s": metrics_s, "total_s": total_s, "this_run": asdict(stats),
              "all_runs": total}
    write_text_atomic(out / "README.md", _readme(args, inputs, timing, len(rows) - len(scored), out))
    print(f"signal study done in {total_s:.0f} s: {len(rows)} scores, Table 7 and Figure 4 in {out}/")
    return 0


def _command_line(args: argparse.Namespace) -> str:
    """``mopd-eval signal`` with the options that differ from the parser's own defaults."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    defaults = vars(parser.parse_args([]))
    return "mopd-eval signal" + "".join(
        (f" --{'' if v else 'no-'}{k.replace('_', '-')}" if isinstance(v, bool) else f" --{k.replace('_', '-')} {v}")
        for k, v in vars(args).items()
        if k in defaults and k != "rescore" and v is not None and v != defaults[k]
    )


def _versions() -> str:
    v = package_versions()
    py, machine = v.pop("python"), v.pop("machine")
    return ", ".join(f"{k} {val}" for k, val in v.items()) + f"; Python {py} on {machine}"


def _readme(args: argparse.Namespace, inputs: StudyInputs, timing: dict, n_empty: int, out: Path) -> str:
    groups, rollouts, rollouts_path = inputs.groups, inputs.rollouts, inputs.rollouts_path
    conditions, stats, total = inputs.conditions, timing["this_run"], timing["all_runs"]
    load_s, metrics_s, total_s = timing["load_s"], timing["metrics_s"], timing["total_s"]
    succ = [sum(r.success for r in g) for g in groups]
    mixed = sum(0 < s < len(g) for s, g in zip(succ, groups, strict=True))
    table = (out / "table7.md").read_text() if (out / "table7.md").exists() else ""
    if not total.get("seconds"):
        total = stats
    tps = total["target_tokens"] / total["seconds"] if total["seconds"] else float("nan")
    cmd = _command_line(args)
    return f"""# Teacher-signal study (Table 7, Figure 4)

Generated by `{cmd}` on {datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}.

- Teacher model: `{args.model}` (engine `{args.engine}`, placement `{inputs.placement}`, templates `{args.templates}`, peer order `{args.order}`)
- Rollouts: `{rollouts_path.name}`: {len(rollouts)} rollouts in {len(groups)} problems;
  {mixed} problems with both successes and failures, {sum(s >= 2 for s in succ)} with two or more successes.
- Conditions: {", ".join(c.name for c in conditions)}
- Metrics: compat `{args.compat}`, sample set `{args.sample_set}`, {args.bootstrap} bootstrap draws, seed {args.seed}
- Versions: {_versions()}
- Time: scoring {total["seconds"]:.0f} s for {total["pairs_scored"]} pairs ({total["target_tokens"]} target tokens,
  {tps:.0f} target tokens/s; summed over resumed runs); this run {total_s:.0f} s in all: model load {load_s:.0f} s,
  scoring {stats["seconds"]:.0f} s ({stats["pairs_scored"]} pairs), metrics, tables and figures {metrics_s:.1f} s.
{"- " + str(n_empty) + " empty responses have no tokens to score and are left out." if n_empty else ""}
{"- Placement: " + inputs.placement_note if inputs.placement_note else ""}
{_one_class_note(out)}

Files: `teacher_scores.jsonl` (one row per condition and target: mean log-prob `teacher_score`,
`logprob_sum`, `n_tokens`), `metrics.json`, `per_prompt.csv`, `table7.md/.csv/.tex`,
`figure4.png`, `figure4_buckets.png`{", `token_logprobs.npz` (per-token log-probs; `mopd-eval tokens --run` reads them)" if args.save_token_logprobs else ""}. What the rollout set holds and why: see `ROLLOUTS.md`.
The resumable score log of a run is `{WORK_DIR}/teacher_scores.jsonl` (ignored by git: a fresh
clone scores the study itself; a rerun in the same copy resumes, `--rescore` starts over).

{table}

![Figure 4](figure4.png)

![Figure 4 by difficulty](figure4_buckets.png)
"""


def _one_class_note(out: Path) -> str:
    """Name conditions whose effective rows never hold both classes in a prompt (e.g. feedback:
    only failures carry verifier feedback). Their Brier score covers one class and is not
    comparable with the other rows."""
    m = json.loads((out / "metrics.json").read_text())
    one = [c for c, v in m["conditions"].items() if not v["success_auc"]["n_prompts"] and v["brier_sigmoid"]["n_prompts"]]
    if not one:
        return ""
    return (f"- Note: {', '.join(one)}: no prompt has an effective success and failure (only failures carry feedback), "
            "so the ranking metrics are undefined and Brier covers failures alone; do not compare that Brier with the others.")
