"""Resource limits of one run and the machine-level sandbox configuration."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

MiB = 1 << 20

NAMESPACE_MODES = ("auto", "on", "off", "bwrap-userns", "bwrap-root")
_OFF = {"0", "off", "false", "no", "none"}
_ON = {"1", "on", "true", "yes"}


@dataclass(frozen=True)
class Limits:
    """Per-run limits. Every field is settable; the defaults are LiveCodeBench-like.

    timeout_s: wall clock, enforced by the parent, which then kills the whole run.
    memory_mb: address space (RLIMIT_AS) of each process. ``python -I`` itself maps ~30 MB.
    output_bytes: cap on stdout and on stderr, each; the run is killed when one is exceeded.
    cpu_s: CPU seconds per process (RLIMIT_CPU); None means ``timeout_s + 1``.
    file_size_mb: largest file a process may write (RLIMIT_FSIZE).
    disk_mb: size of each private tmpfs (work dir, /tmp, /dev/shm) under namespaces.
    open_files: RLIMIT_NOFILE.
    processes: RLIMIT_NPROC for the run's uid; threads count too.
    stack_mb: RLIMIT_STACK; None keeps the caller's (glibc sizes thread stacks from it, and each
        thread stack counts against memory_mb, so large values starve threaded programs).
    """

    timeout_s: float = 6.0
    memory_mb: int = 2048
    output_bytes: int = 16 * MiB
    cpu_s: float | None = None
    file_size_mb: int = 64
    disk_mb: int = 64
    open_files: int = 256
    processes: int = 32
    stack_mb: int | None = None

    def __post_init__(self) -> None:
        for name in ("timeout_s", "memory_mb", "output_bytes", "file_size_mb", "disk_mb",
                     "open_files", "processes"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and value > 0 and math.isfinite(value)):
                raise ValueError(f"Limits.{name} must be a positive number, got {value!r}")
        for name in ("cpu_s", "stack_mb"):
            value = getattr(self, name)
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise ValueError(f"Limits.{name} must be positive or None, got {value!r}")

    @property
    def cpu_limit_s(self) -> int:
        """Soft RLIMIT_CPU in whole seconds (the kernel's unit); the hard limit is one more."""
        return max(1, math.ceil(self.cpu_s if self.cpu_s is not None else self.timeout_s + 1))

    def rlimits(self) -> dict[str, tuple[int, int]]:
        """(soft, hard) per resource (AS, CPU, ...). Soft == hard so the program cannot raise
        them, except CPU, whose soft limit sends SIGXCPU one second before SIGKILL."""
        cpu = self.cpu_limit_s
        out = {
            "as": _both(self.memory_mb * MiB),
            "cpu": (cpu, cpu + 1),
            "fsize": _both(self.file_size_mb * MiB),
            "nofile": _both(self.open_files),
            "nproc": _both(self.processes),
            "core": (0, 0),
        }
        if self.stack_mb is not None:
            out["stack"] = _both(self.stack_mb * MiB)
        return out


def _both(value: float) -> tuple[int, int]:
    return int(value), int(value)


def parse_namespace_mode(value: str | None) -> str:
    """Normalise ``MOPD_SANDBOX_NAMESPACES``: 0/off/false -> off, 1/on/true -> on, empty/auto ->
    auto, or an explicit backend name. Raises ValueError for anything else."""
    text = (value or "auto").strip().lower()
    if text in _OFF:
        return "off"
    if text in _ON:
        return "on"
    if text in NAMESPACE_MODES:
        return text
    raise ValueError(
        f"MOPD_SANDBOX_NAMESPACES={value!r}: expected one of 0, 1, auto, bwrap-userns, bwrap-root"
    )


@dataclass(frozen=True)
class SandboxConfig:
    """How runs are isolated on this machine (as opposed to Limits, which vary per run).

    namespaces: ``auto`` uses bubblewrap when it works and warns when it does not; ``off``
        (env ``MOPD_SANDBOX_NAMESPACES=0``) never uses namespaces; ``on`` requires them (runs
        fail with status ``sandbox_error`` otherwise); ``bwrap-userns`` / ``bwrap-root`` pick a
        flavour (tests use these).
    python: interpreter for programs; None picks the first of the current interpreter, then
        ``/usr/bin/python3.X`` of the same version, that the unprivileged uid can execute.
    uid_base, uid_count: range of uids handed out one per concurrent run when started as root.
        Nothing else may use them; uids that exist in the passwd database are skipped.
    work_root: where private work dirs are created (default: the system temp dir).
    site_packages: let programs import the interpreter's site-packages (``python -I`` without
        ``-S``); off by default, so programs see the standard library only.
    prestart: once a Sandbox is used repeatedly, start the next sandbox (namespaces and a fresh
        interpreter, waiting for its program) while the current program runs, one per
        concurrent caller (env ``MOPD_SANDBOX_PRESTART=0`` turns it off). Each sandbox still
        runs exactly one program; only its start-up latency is hidden.
    """

    namespaces: str = "auto"
    python: str | None = None
    uid_base: int = 61000
    uid_count: int = 1000
    work_root: str | None = None
    site_packages: bool = False
    prestart: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "namespaces", parse_namespace_mode(self.namespaces))
        if self.uid_base < 1000 or self.uid_count < 1 or self.uid_base + self.uid_count > 2**31:
            raise ValueError(f"bad uid range {self.uid_base}+{self.uid_count}")

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> SandboxConfig:
        """Configuration from ``MOPD_SANDBOX_NAMESPACES``, ``MOPD_SANDBOX_PYTHON``,
        ``MOPD_SANDBOX_UID_BASE`` and ``MOPD_SANDBOX_PRESTART``; unset variables keep the
        defaults."""
        env = os.environ if environ is None else environ
        kwargs: dict[str, object] = {"namespaces": env.get("MOPD_SANDBOX_NAMESPACES", "auto")}
        if env.get("MOPD_SANDBOX_PYTHON"):
            kwargs["python"] = env["MOPD_SANDBOX_PYTHON"]
        if env.get("MOPD_SANDBOX_UID_BASE"):
            kwargs["uid_base"] = int(env["MOPD_SANDBOX_UID_BASE"])
        if env.get("MOPD_SANDBOX_PRESTART"):
            kwargs["prestart"] = env["MOPD_SANDBOX_PRESTART"].strip().lower() not in _OFF
        return cls(**kwargs)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Layer:
    """One isolation layer as detected on this machine."""

    name: str
    active: bool
    detail: str
    protects: str = field(default="", compare=False)
