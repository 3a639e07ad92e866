"""Held-out benchmark of training checkpoints: success rates with bootstrap CIs, and the change
against a base model paired by problem.

Reads the ``results.json`` that ``mopd-eval bench`` writes for each model (its ``per_problem``
successes), groups models by name (seeds of one algorithm share a name), and writes a Markdown
table and ``heldout.json``:

    .venv/bin/python -m training.heldout --base base=reports/training/bench/base \\
        GRPO=reports/training/bench/grpo-s0 GRPO=reports/training/bench/grpo-s1 ... \\
        --out reports/training

CIs are 95% percentile intervals of a bootstrap over problems (the same resampled problems for
every model, so the differences against the base are paired). A name with several seeds is the
mean over its seeds, resampled with the same problems.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mopd_eval.errors import InputError
from mopd_eval.jsonl import write_json_atomic, write_text_atomic

N_BOOT = 10_000


def load_rates(bench_dir: str | Path) -> dict[str, float]:
    """Per-problem success rate (successes / samples) of one ``bench`` output directory."""
    path = Path(bench_dir) / "results.json"
    if not path.is_file():
        raise InputError("no results.json (not a bench output directory)", path=bench_dir)
    per = json.loads(path.read_text())["per_problem"]
    return {pid: v["successes"] / v["samples"] for pid, v in per.items() if v.get("samples")}


def heldout_table(models: Sequence[tuple[str, dict[str, float]]], base: str, *, n_boot: int = N_BOOT,
                  seed: int = 0) -> list[dict]:
    """Rows per name: mean success, its 95% CI, and the paired change against ``base`` with its CI.

    ``models`` are ``(name, per-problem rates)``; every model must cover the same problems.
    """
    ids = sorted(models[0][1])
    for name, rates in models:
        if sorted(rates) != ids:
            raise InputError(f"{name}: its benchmark covers other problems than {models[0][0]}'s", field="models")
    names = list(dict.fromkeys(n for n, _ in models))
    if base not in names:
        raise InputError(f"no model named {base!r}", field="base")
    per_name = {n: np.mean([[r[i] for i in ids] for m, r in models if m == n], axis=0) for n in names}
    idx = np.random.default_rng(seed).integers(0, len(ids), size=(n_boot, len(ids)))
    boot = {n: v[idx].mean(axis=1) for n, v in per_name.items()}
    rows = []
    for n in names:
        diff = boot[n] - boot[base]
        rows.append({
            "name": n, "seeds": sum(m == n for m, _ in models), "problems": len(ids),
            "mean": float(per_name[n].mean()), "ci95": [float(x) for x in np.percentile(boot[n], [2.5, 97.5])],
            "diff_vs_base": float(per_name[n].mean() - per_name[base].mean()),
            "diff_ci95": [float(x) for x in np.percentile(diff, [2.5, 97.5])],
        })
    return rows


def to_markdown(rows: list[dict], base: str) -> str:
    lines = [f"| model | seeds | problems | success % [95% CI] | change vs {base} (pp) [95% CI, paired] |",
             "|---|---:|---:|---|---|"]
    for r in rows:
        lo, hi = (100 * x for x in r["ci95"])
        dlo, dhi = (100 * x for x in r["diff_ci95"])
        change = "-" if r["name"] == base else f"{100 * r['diff_vs_base']:+.1f} [{dlo:+.1f}, {dhi:+.1f}]"
        lines.append(f"| {r['name']} | {r['seeds']} | {r['problems']} | {100 * r['mean']:.1f} [{lo:.1f}, {hi:.1f}] "
                     f"| {change} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="held-out success of checkpoints with bootstrap CIs")
    p.add_argument("models", nargs="+", metavar="NAME=BENCH_DIR")
    p.add_argument("--base", required=True, help="the name of the reference model (e.g. base)")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    models = []
    for item in args.models:
        name, sep, path = item.partition("=")
        if not sep:
            raise InputError(f"expected NAME=BENCH_DIR, got {item!r}", field="models")
        models.append((name, load_rates(path)))
    rows = heldout_table(models, args.base)
    table = to_markdown(rows, args.base)
    args.out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out / "heldout.md", table)
    write_json_atomic(args.out / "heldout.json", {"base": args.base, "n_boot": N_BOOT, "rows": rows,
                                                 "models": [[n, a.partition("=")[2]] for (n, _), a
                                                            in zip(models, args.models, strict=True)]})
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
