"""``python -m sandbox run FILE`` and ``python -m sandbox doctor``.

Also usable as a mopd-eval subcommand module (``add_arguments`` / ``run``).
"""

from __future__ import annotations

import argparse
import json
import sys

from sandbox.config import Limits, MiB
from sandbox.detect import doctor_text
from sandbox.runner import default_sandbox


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="sandbox_command", metavar="{run,doctor}", required=True)
    p = sub.add_parser("run", help="run a Python file in the sandbox",
                       description="Run FILE in the sandbox. Exits 0 whatever the program did; "
                                   "the status carries the verdict.")
    p.add_argument("file", metavar="FILE", help="Python source to run")
    p.add_argument("--stdin", metavar="FILE", help="file given to the program as stdin")
    p.add_argument("--timeout", type=float, default=Limits.timeout_s, metavar="S",
                   help="wall-clock limit in seconds (default %(default)s)")
    p.add_argument("--memory-mb", type=int, default=Limits.memory_mb, metavar="M",
                   help="address-space limit in MiB (default %(default)s)")
    p.add_argument("--output-mb", type=float, default=Limits.output_bytes / MiB, metavar="N",
                   help="cap on stdout and on stderr in MiB (default %(default)s)")
    p.add_argument("--json", action="store_true",
                   help='print one JSON object {"status", "exit_code", "stdout", "stderr", '
                        '"wall_s", "cpu_s", "max_rss_mb"}')
    d = sub.add_parser("doctor", help="report which isolation layers are active and why not",
                       description="Detect the isolation layers this machine allows.")
    d.add_argument("--json", action="store_true", help="machine-readable report")
    d.add_argument("--strict", action="store_true",
                   help="exit 1 when any layer is missing (default: only when unusable)")


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ValueError(f"cannot read {what} {path!r}: {e.strerror}") from e


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except ValueError as e:  # unreadable files, bad limits, bad MOPD_SANDBOX_* settings
        print(f"sandbox {args.sandbox_command}: error: {e}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    if args.sandbox_command == "doctor":
        return _doctor(args)
    program = _read(args.file, "program")
    stdin = _read(args.stdin, "stdin file") if args.stdin else None
    limits = Limits(timeout_s=args.timeout, memory_mb=args.memory_mb,
                    output_bytes=int(args.output_mb * MiB))
    res = default_sandbox().run(program, stdin, limits)
    if args.json:
        print(json.dumps(res.to_json(), ensure_ascii=False))
    else:
        sys.stdout.write(res.stdout)
        sys.stdout.flush()
        sys.stderr.write(res.stderr)
        extra = f" ({res.error})" if res.error else ""
        print(f"[sandbox] status={res.status} exit_code={res.exit_code} wall_s={res.wall_s:.3f} "
              f"cpu_s={res.cpu_s:.3f} max_rss_mb={res.max_rss_mb:.1f}{extra}", file=sys.stderr)
    return 0


def _doctor(args: argparse.Namespace) -> int:
    setup = default_sandbox().get_setup(warn=False)  # the report itself says what is missing
    if args.json:
        print(json.dumps({
            "backend": setup.backend,
            "root": setup.root,
            "python": setup.tools.python,
            "python_version": setup.python_version,
            "bubblewrap": setup.bwrap_version or None,
            "error": setup.error,
            "layers": [{"name": layer.name, "active": layer.active, "detail": layer.detail,
                        "protects": layer.protects} for layer in setup.layers],
        }, indent=2))
    else:
        print(doctor_text(setup))
    if setup.error:
        return 1
    if args.strict and not all(layer.active for layer in setup.layers):
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox",
                                     description="Isolated execution of untrusted Python code.")
    add_arguments(parser)
    return run(parser.parse_args(argv))
