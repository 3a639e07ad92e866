"""``mopd-eval report``: regenerate reports/README.md, the index of every committed report."""

from __future__ import annotations

import argparse

from mopd_eval.report_index import write_index


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reports", default="reports", help="reports folder (default: reports)")


def run(args: argparse.Namespace) -> int:
    print(f"wrote {write_index(args.reports)}")
    return 0
