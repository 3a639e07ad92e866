"""The outcome of one sandboxed run and how its status is decided."""

from __future__ import annotations

import re
import signal
from dataclasses import dataclass

STATUSES = ("ok", "runtime_error", "timeout", "memory_limit", "output_limit", "killed",
            "sandbox_error")

# Allocation failure shows up in several ways under RLIMIT_AS: Python raises MemoryError
# (traceback ends with it, or numpy's _ArrayMemoryError), the interpreter aborts with
# "Fatal Python error ... MemoryError"/"Cannot allocate memory", or a C/C++ extension prints
# bad_alloc / "out of memory" and dies by SIGABRT/SIGSEGV. RLIMIT_AS never sends a signal itself,
# so stderr is the only evidence; a program can fake it, but only to get a non-ok verdict.
_MEMORY_RE = re.compile(r"MemoryError|Cannot allocate memory|[Oo]ut of memory|bad_alloc")


@dataclass(frozen=True)
class Result:
    """What a run did. ``exit_code`` is negative for death by a signal (subprocess style) and
    None when the program never started. stdout/stderr are decoded as UTF-8 (invalid bytes
    replaced) and capped at ``Limits.output_bytes`` each."""

    status: str
    exit_code: int | None
    stdout: str
    stderr: str
    wall_s: float
    cpu_s: float
    max_rss_mb: float
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    error: str | None = None  # why, for sandbox_error
    uid: int | None = None  # the uid the program ran as
    backend: str = ""  # "bwrap-userns", "bwrap-root" or "none"

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_json(self) -> dict:
        """The CLI's JSON object."""
        return {
            "status": self.status,
            "exit_code": self.exit_code,
            "stdout": self.stdout,
            "stderr": self.stderr,
            "wall_s": round(self.wall_s, 4),
            "cpu_s": round(self.cpu_s, 4),
            "max_rss_mb": round(self.max_rss_mb, 2),
        }


def decode_wrapper_exit(code: int) -> int:
    """Exit code of a wrapper (bubblewrap) that reports a child killed by signal N as 128 + N.

    Returns -N for 129..128+64 (what subprocess reports for a direct child) and ``code``
    otherwise. A program that itself exits with 129..192 is indistinguishable and gets reported
    as killed by that signal; both are failures.
    """
    if 128 < code <= 128 + 64:
        return -(code - 128)
    return code


def classify(
    *,
    kill_reason: str | None,
    exit_code: int | None,
    stderr: str,
    cpu_s: float,
    cpu_limit_s: float,
) -> str:
    """Status of a finished run.

    kill_reason: why the parent killed the run: ``"output_limit"``, ``"timeout"`` (wall clock)
        or ``"caller"`` (a harness stopped it early); None when the program ended by itself.
    exit_code: as in :class:`Result`.
    Precedence: the parent's own reason, then exit 0 -> ok, then the CPU limit (SIGXCPU, or
    SIGKILL once the hard CPU limit is reached) -> timeout, allocation failure -> memory_limit,
    any other signal -> killed, any other non-zero exit -> runtime_error.
    """
    if kill_reason == "output_limit":
        return "output_limit"
    if kill_reason == "timeout":
        return "timeout"
    if kill_reason == "caller":
        return "killed"
    if exit_code is None:
        return "sandbox_error"
    if exit_code == 0:
        return "ok"
    sig = -exit_code if exit_code < 0 else None
    if sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu_s >= cpu_limit_s - 0.05):
        return "timeout"
    if _MEMORY_RE.search(stderr[-4096:]):
        return "memory_limit"
    if sig is not None:
        return "killed"
    return "runtime_error"
