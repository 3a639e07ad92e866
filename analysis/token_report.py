"""``mopd-eval tokens``: the token-level report of a signal run (tables, figures, viewer).

The command's entry point sits above ``analysis.tokens`` (the numbers), ``analysis.token_viewer``
(the HTML page) and ``analysis.token_figures`` (the PNGs), so those three never import each other
in a circle. What the numbers mean: docs/tokens.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

from analysis.token_logprobs import TokenLogprobs
from analysis.tokens import DEFAULT_WINDOW, long_table, markdown_tables, profile_table, token_study
from mopd_eval.errors import InputError
from mopd_eval.records import Rollout


def add_arguments(p) -> None:
    p.add_argument("--run", required=True, help="a signal run directory (teacher_scores.jsonl, token_logprobs.npz)")
    p.add_argument("--out", help="output directory (default RUN/tokens)")
    p.add_argument("--rollouts", help="the run's rollout JSONL (default: the path the store names)")
    p.add_argument("--student", help="a student's token_logprobs.npz (a signal run of the student, condition "
                   "base): A_t becomes teacher minus student")
    p.add_argument("--window", type=int, default=DEFAULT_WINDOW,
                   help=f"tokens from the divergence token on counted 'at divergence' (default {DEFAULT_WINDOW})")
    p.add_argument("--sample-set", default="both_present_effective",
                   choices=["all", "effective", "both_present_effective"])
    p.add_argument("--bootstrap", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--screenshot", nargs="?", const="p=0&c=2s1f", metavar="VIEW",
                   help="also save viewer.png of the view VIEW (URL hash, default p=0&c=2s1f; needs chromium)")


def _rollouts_of(store: TokenLogprobs, given: str | None) -> list[Rollout]:
    """The rollouts the store was scored from, checked by content."""
    from analysis.signal_study import default_rollouts
    from mopd_eval.records import read_rollouts
    from mopd_eval.resumable import file_sha256

    want = store.meta.get("rollouts_sha256")
    if given:
        if want and file_sha256(given) != want:
            raise InputError("not the rollouts the store was scored from (sha256 differs)", path=given,
                             field="--rollouts")
        return read_rollouts(given)
    for path in (Path(store.meta.get("rollouts", "")), default_rollouts()):
        if path.is_file() and file_sha256(path) == want:
            return read_rollouts(path)
    raise InputError(f"the rollouts the store names ({store.meta.get('rollouts')}) are not here; pass --rollouts",
                     path=store.path, field="meta.rollouts")


def run(args) -> int:
    from analysis.scores import load_scores
    from analysis.token_figures import write_figures
    from analysis.token_logprobs import STORE_FILE, load_token_logprobs
    from analysis.token_viewer import find_chromium, screenshot, write_viewer
    from mopd_eval.jsonl import write_json_atomic, write_text_atomic

    run_dir = Path(args.run)
    out = Path(args.out) if args.out else run_dir / "tokens"
    store = load_token_logprobs(run_dir / STORE_FILE)
    frame = load_scores(run_dir / "teacher_scores.jsonl")
    reference = load_token_logprobs(args.student) if args.student else None
    rollouts = _rollouts_of(store, args.rollouts)
    study = token_study(store, frame, rollouts, reference=reference, window=args.window,
                        sample_set=args.sample_set, n_boot=args.bootstrap, seed=args.seed)
    result = study["result"]
    result["store"] = {k: store.meta.get(k) for k in ("model", "rollouts", "placement", "order", "seed")}
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "tokens.json", result)
    write_text_atomic(out / "tokens.md", markdown_tables(result))
    write_text_atomic(out / "token_metrics.csv", long_table(result).to_csv(index=False))
    write_text_atomic(out / "per_prompt.csv", study["table"].to_csv(index=False))
    write_text_atomic(out / "profile.csv", profile_table(result).to_csv(index=False))
    write_figures(result, out)
    write_viewer(out / "viewer.html", store, study["targets"], rollouts, reference=reference,
                 title=f"Token-level teacher signal: {store.meta.get('model')} on {Path(store.meta['rollouts']).name}")
    if args.screenshot:
        if find_chromium() is None:
            print("mopd-eval tokens: no chromium; viewer.png not made (apt-get install -y chromium)")
        else:
            screenshot(out / "viewer.html", out / "viewer.png", fragment=args.screenshot)
    if result["rows_without_logprobs"]:
        print(f"mopd-eval tokens: {result['rows_without_logprobs']} rows have no log-probs in the store or the "
              "student store and are left out", file=sys.stderr)
    print(f"token-level analysis of {len(store.rows)} rows in {out}/: tokens.md, tokens.json, figures, viewer.html")
    return 0
