"""A cgroup v2 per run: memory (including memfd, tmpfs and shared memory pages, which no rlimit
sees), swap and process count bounded for the run as a whole, and a kill that reaches every
process of it.

Available when running as root on a cgroup v2 hierarchy that offers the ``memory`` and ``pids``
controllers to this process's cgroup, and either that cgroup is the hierarchy's root or its
``cgroup.subtree_control`` already enables them (a delegated cgroup); the "no internal processes"
rule forbids enabling them below a non-root cgroup that holds processes (ours does), and moving
the caller's own processes elsewhere is not the sandbox's business. Detected once per
``Sandbox`` (``python -m sandbox doctor`` prints the reason when absent). Per-run cgroups live
in ``<our cgroup>/mopd-sandbox/run-*``; leftovers of dead processes are removed at start.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import time
from dataclasses import dataclass

_NEEDED = ("memory", "pids")
PARENT = "mopd-sandbox"


@dataclass(frozen=True)
class CgroupRoot:
    """The directory under which per-run cgroups are created."""

    path: str
    kill_file: bool  # cgroup.kill exists (Linux 5.14+)


def _cgroup2_mount(mounts: str) -> str | None:
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[2] == "cgroup2":
            return fields[1]
    return None


def _own_cgroup(proc_cgroup: str) -> str | None:
    for line in proc_cgroup.splitlines():
        if line.startswith("0::"):
            return line[3:]
    return None


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def find_root(proc: str = "/proc/self") -> tuple[CgroupRoot | None, str]:
    """Where per-run cgroups can be made, or (None, why not)."""
    if os.geteuid() != 0:
        return None, "not root"
    try:
        mount = _cgroup2_mount(_read("/proc/mounts"))
        own = _own_cgroup(_read(f"{proc}/cgroup"))
    except OSError as e:
        return None, f"cannot read the cgroup setup: {e.strerror}"
    if mount is None or own is None:
        return None, "no cgroup v2 hierarchy mounted"
    base = os.path.normpath(mount + own)
    try:
        offered = _read(os.path.join(base, "cgroup.controllers")).split()
        enabled = _read(os.path.join(base, "cgroup.subtree_control")).split()
    except OSError as e:
        return None, f"cgroup v2 at {base} unreadable: {e.strerror}"
    missing = [c for c in _NEEDED if c not in offered]
    if missing:
        return None, (f"cgroup v2 at {base} offers no {'/'.join(missing)} controller (offered: "
                      f"{' '.join(offered) or 'none'}; a hybrid v1/v2 host keeps memory in v1)")
    try:
        if any(c not in enabled for c in _NEEDED):
            # Allowed only at the hierarchy's root (exempt from the no-internal-process rule).
            _write(os.path.join(base, "cgroup.subtree_control"), " ".join(f"+{c}" for c in _NEEDED))
        parent = os.path.join(base, PARENT)
        with contextlib.suppress(FileExistsError):
            os.mkdir(parent, 0o700)
        _write(os.path.join(parent, "cgroup.subtree_control"), " ".join(f"+{c}" for c in _NEEDED))
    except OSError as e:
        return None, (f"cannot enable {'/'.join(_NEEDED)} below {base} ({e.strerror}): the "
                      "controllers are not delegated to this process's cgroup")
    root = CgroupRoot(parent, os.path.exists(os.path.join(parent, "cgroup.kill")))
    remove_stale(root)
    return root, f"one cgroup per run under {parent}"


def remove_stale(root: CgroupRoot) -> None:
    """Remove run cgroups left by processes that died (killing what is still in them); those
    in use by a live sandbox are populated by a live process and are kept."""
    try:
        names = [n for n in os.listdir(root.path) if n.startswith("run-")]
    except OSError:
        return
    for name in names:
        cg = RunCgroup(root, os.path.join(root.path, name))
        owner = name.split("-")[1] if name.count("-") >= 2 else ""
        if owner.isdigit() and _alive(int(owner)):
            continue
        cg.kill()
        cg.remove(1.0)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunCgroup:
    """One run's cgroup. Created by :meth:`create`, joined by the sandbox's first process
    (see :meth:`join_argv`), emptied by :meth:`kill`, removed by :meth:`remove`."""

    def __init__(self, root: CgroupRoot, path: str) -> None:
        self.root = root
        self.path = path

    @classmethod
    def create(cls, root: CgroupRoot) -> RunCgroup:
        path = os.path.join(root.path, f"run-{os.getpid()}-{secrets.token_hex(6)}")
        os.mkdir(path, 0o700)
        cg = cls(root, path)
        try:
            # Until set_limits: tight enough that an idle pre-started sandbox cannot be abused.
            cg.set_limits(memory_bytes=256 << 20, processes=8)
        except OSError:
            cg.remove(0.5)
            raise
        return cg

    def set_limits(self, *, memory_bytes: int, processes: int) -> None:
        """memory.max (all the run's memory, tmpfs and memfd pages included), no swap, and
        pids.max (the launcher and bubblewrap included, hence the slack)."""
        _write(os.path.join(self.path, "memory.max"), str(memory_bytes))
        swap = os.path.join(self.path, "memory.swap.max")
        if os.path.exists(swap):
            _write(swap, "0")
        _write(os.path.join(self.path, "pids.max"), str(processes + 4))

    def join_argv(self, argv: list[str]) -> list[str]:
        """``argv`` run by a shell that first moves itself into this cgroup, so that every
        process of the sandbox starts inside it (subprocess cannot place a child itself)."""
        procs = os.path.join(self.path, "cgroup.procs")
        return ["/bin/sh", "-c", 'echo 0 > "$0" && exec "$@"', procs, *argv]

    def oom_kills(self) -> int:
        try:
            for line in _read(os.path.join(self.path, "memory.events")).splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            pass
        return 0

    def pids(self) -> list[int]:
        try:
            return [int(p) for p in _read(os.path.join(self.path, "cgroup.procs")).split()]
        except (OSError, ValueError):
            return []

    def kill(self) -> None:
        """SIGKILL everything in the cgroup (cgroup.kill, else pid by pid)."""
        if self.root.kill_file:
            with contextlib.suppress(OSError):
                _write(os.path.join(self.path, "cgroup.kill"), "1")
                return
        for pid in self.pids():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)

    def remove(self, patience_s: float) -> bool:
        """rmdir once the cgroup is empty; False if it is still populated after
        ``patience_s`` (then :func:`remove_stale` removes it later)."""
        deadline = time.monotonic() + patience_s
        delay = 0.001
        while True:
            try:
                os.rmdir(self.path)
                return True
            except FileNotFoundError:
                return True
            except OSError:
                if time.monotonic() >= deadline:
                    return False
                self.kill()
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
