"""``mopd-eval diversity``: compare the solution diversity of sample sets (Table 8, Figure 5).

Each ``--run NAME=FILE`` is a JSONL file of rows ``{problem_id, response}`` with an optional
boolean ``success`` (``bench`` samples.jsonl and rollout files work as they are; other fields
are ignored). A group is all rows of one problem_id, in file order. By default each run is
averaged over all of its own prompts; ``--intersect`` restricts every run to the problem_ids
present in all runs, which is what a like-for-like comparison needs.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from mopd_eval.diversity import TOKEN_PATTERN, group_diversity
from mopd_eval.diversity_report import write_report
from mopd_eval.errors import InputError
from mopd_eval.jsonl import iter_jsonl
from mopd_eval.versions import package_versions

SELF_BLEU_DOC = ("mean over responses of BLEU-4 against the other responses as references, "
                 "as NLTK's sentence_bleu computes it (uniform weights, smoothing method 1, "
                 "epsilon 0.1)")


@dataclass
class Group:
    responses: list[str]
    successes: list[bool] | None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", action="append", required=True, metavar="NAME=FILE",
                        help="a named sample set (repeat for each run to compare)")
    parser.add_argument("--task", choices=("code", "text"), default="code",
                        help="code: metrics on the last fenced Python block, plus AST distance; "
                             "text: on the whole response, no AST (default: code)")
    parser.add_argument("--distinct-mode", choices=("stream", "per-response"), default="stream",
                        help="Distinct-n over the concatenated group stream (the paper's, "
                             "default) or per response, averaged")
    parser.add_argument("--intersect", action="store_true",
                        help="use only the problem_ids present in every run")
    parser.add_argument("--out", required=True, type=Path, help="output directory")


def parse_run_spec(spec: str) -> tuple[str, Path]:
    name, sep, path = spec.partition("=")
    if not sep or not name.strip() or not path.strip():
        raise InputError(f"--run expects NAME=FILE, got {spec!r}")
    return name.strip(), Path(path.strip())


def load_groups(path: Path) -> dict[Any, Group]:
    """Read a sample file into groups keyed by problem_id (first-appearance order).

    Raises InputError naming file, line and field for a missing or mistyped field, and for
    ``success`` present on some rows but not on others (pass@k needs a verdict on every row).
    """
    groups: dict[Any, Group] = {}
    has_success: bool | None = None
    for line, row in iter_jsonl(path):
        pid = row.get("problem_id")
        if pid is None:
            raise InputError("missing", path=path, line=line, field="problem_id")
        if isinstance(pid, bool) or not isinstance(pid, (str, int)):
            raise InputError(f"expected a string or an integer, got {type(pid).__name__}",
                             path=path, line=line, field="problem_id")
        if "response" not in row:
            raise InputError("missing", path=path, line=line, field="response")
        resp = row["response"]
        if not isinstance(resp, str):
            raise InputError(f"expected a string, got {type(resp).__name__}",
                             path=path, line=line, field="response")
        success = row.get("success")
        if success is not None and not isinstance(success, bool):
            raise InputError(f"expected true or false, got {success!r}",
                             path=path, line=line, field="success")
        if has_success is None:
            has_success = success is not None
        elif has_success != (success is not None):
            raise InputError("present on some rows and missing on others; pass@k needs a "
                             "verdict on every row or on none", path=path, line=line,
                             field="success")
        g = groups.setdefault(pid, Group([], [] if has_success else None))
        g.responses.append(resp)
        if g.successes is not None:
            g.successes.append(bool(success))
    if not groups:
        raise InputError("no rows", path=path)
    return groups


def run(args: argparse.Namespace) -> int:
    if args.out.exists() and not args.out.is_dir():
        raise InputError("exists and is not a directory", path=args.out)
    specs = [parse_run_spec(s) for s in args.run]
    names = [n for n, _ in specs]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise InputError(f"run name(s) used twice: {', '.join(sorted(dup))}")
    loaded = {name: load_groups(path) for name, path in specs}

    id_sets = [set(g) for g in loaded.values()]
    common = set.intersection(*id_sets)
    if args.intersect:
        if not common:
            raise InputError("--intersect: the runs share no problem_id")
        loaded = {n: {pid: g for pid, g in groups.items() if pid in common}
                  for n, groups in loaded.items()}
    elif any(s != id_sets[0] for s in id_sets):
        sizes = ", ".join(f"{n}: {len(g)}" for n, g in loaded.items())
        print(f"mopd-eval diversity: warning: the runs cover different prompts ({sizes}; "
              f"{len(common)} in all); each run is averaged over its own prompts. "
              "Pass --intersect to compare on the common ones.", file=sys.stderr)

    mode = "per_response" if args.distinct_mode == "per-response" else "stream"
    total = sum(len(g) for g in loaded.values())
    results = {}
    with tqdm(total=total, desc="diversity", unit="prompt", file=sys.stderr) as bar:
        for name, groups in loaded.items():
            out = []
            for pid, g in groups.items():
                out.append((pid, group_diversity(g.responses, task=args.task,
                                                 distinct_mode=mode, successes=g.successes)))
                bar.update()
            results[name] = out

    command = "mopd-eval diversity " + " ".join(
        [*(f"--run {shlex.quote(f'{n}={p}')}" for n, p in specs), f"--task {args.task}",
         f"--distinct-mode {args.distinct_mode}", *(["--intersect"] if args.intersect else []),
         f"--out {shlex.quote(str(args.out))}"])
    config = {
        "runs": {n: str(p) for n, p in specs},
        "task": args.task,
        "distinct_mode": mode,
        "intersect": bool(args.intersect),
        "token_pattern": TOKEN_PATTERN,
        "self_bleu": SELF_BLEU_DOC,
        "command": command,
        "versions": package_versions(),
    }
    write_report(args.out, results, config)
    print((args.out / "summary.md").read_text(encoding="utf-8"))
    print(f"wrote {args.out}/summary.json, summary.md, per_prompt.jsonl and figures",
          file=sys.stderr)
    return 0
