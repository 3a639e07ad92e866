"""The command line that starts one sandboxed program (pure: no side effects).

No ``preexec_fn``: it runs Python in a forked child and can deadlock when other threads exist
(the worker pool runs sandboxes from threads). Limits, the uid switch and the namespace init are
done by the launcher in sandbox/boot.py instead, inside the program's own interpreter:

* ``none``:         setpriv (to U, no-new-privs) -- python -I -S -B -c BOOT (rlimits) -> main.py
* ``bwrap-root``:   bwrap --unshare-{pid,net,ipc,uts} ... -- python -I -S -B -c BOOT (init;
  the program's process: rlimits, then to U) -> main.py   (bubblewrap started as root)
* ``bwrap-userns``: setpriv (to U) -- bwrap --unshare-all --unshare-user ... -- python ... BOOT
  (bubblewrap unprivileged, for when not started as root)

Without root there is no uid switch at all.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

from sandbox.boot import boot_argv
from sandbox.cgroups import CgroupRoot
from sandbox.config import Limits

SANDBOX_CWD = "/work"  # the program's working directory under bubblewrap
SECCOMP_FD = "{seccomp_fd}"  # placeholder in argv for the pipe bubblewrap reads the filter from


@functools.lru_cache(maxsize=1)
def suid_dumpable() -> str:
    """``fs.suid_dumpable``: 0 means a process that changed its uid is not dumpable."""
    try:
        with open("/proc/sys/fs/suid_dumpable") as f:
            return f.read().strip()
    except OSError:
        return "?"

_SYSTEM_DIRS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")


@dataclass(frozen=True)
class Tools:
    """Absolute paths of what was found on this machine (None when missing)."""

    python: str
    bwrap: str | None
    setpriv: str | None
    python_roots: tuple[str, ...] = ()  # directories the interpreter needs outside /usr
    site_packages: bool = False  # let programs import from the interpreter's site-packages
    seccomp: bytes | None = None  # raw BPF the launcher installs (sandbox/seccomp.py)
    cgroups: CgroupRoot | None = None  # where per-run cgroups are made (sandbox/cgroups.py)


@dataclass(frozen=True)
class Command:
    """argv may contain the placeholders ``{status_fd}`` (a pipe for bubblewrap's JSON status)
    and ``{seccomp_fd}`` (a pipe holding the filter), which the runner replaces with fd numbers. The program itself arrives on stdin (boot.py)."""

    argv: list[str]
    user: int | None  # uid/gid subprocess switches to before exec, None for no switch
    cwd: str
    namespaces: bool  # bubblewrap (uses the placeholder)
    seccomp: bytes | None = None  # what to write into the pipe of ``{seccomp_fd}``, if any


def _system_mounts() -> list[str]:
    args = ["--ro-bind", "/usr", "/usr"]
    for path in _SYSTEM_DIRS:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    return args + ["--ro-bind", "/etc", "/etc"]


def bwrap_args(tools: Tools, limits: Limits, userns: bool) -> list[str]:
    """bubblewrap options: fresh user (userns flavour), pid, net, ipc, uts namespaces; a
    read-only minimal root (/usr, /etc, the interpreter); private size-limited tmpfs for the work
    dir, /tmp and /dev/shm; the root itself remounted read-only. No host directory is writable
    or even visible beyond those."""
    size = str(limits.disk_mb * (1 << 20))
    if userns:
        ns = ["--unshare-all", "--unshare-user", "--disable-userns"]
        perms: list[str] = []
    else:
        # No user namespace: bubblewrap runs as root, so tmpfs mounts are root's; 1777 lets the
        # unprivileged uid write.
        ns = ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
              "--unshare-cgroup-try"]
        perms = ["--perms", "1777"]
    # --as-pid-1 with our launcher as that pid 1 (see boot.py): with bubblewrap's own reaper as
    # init, bubblewrap exits without reaping it, so the program's rusage is lost and the reaper
    # lingers as a zombie of the host's pid 1. Killing the init kills the namespace.
    args = [*ns, "--as-pid-1", "--die-with-parent", "--new-session", *_system_mounts()]
    for root in tools.python_roots:
        args += ["--ro-bind", root, root]
    args += [
        "--proc", "/proc",
        "--dev", "/dev",
        *perms, "--size", size, "--tmpfs", "/dev/shm",
        "--remount-ro", "/dev",
        *perms, "--size", size, "--tmpfs", "/tmp",
        *perms, "--size", size, "--tmpfs", SANDBOX_CWD,
        "--remount-ro", "/",
        "--chdir", SANDBOX_CWD,
        "--json-status-fd", "{status_fd}",
    ]
    return args


def drop_privileges(tools: Tools, uid: int | None) -> tuple[list[str], int | None]:
    """How to become ``uid`` before exec'ing: a setpriv(1) prefix, or (without setpriv) a uid
    for subprocess to switch to. setpriv is preferred because subprocess cannot use vfork once
    it must change ids, and forking a parent that holds gigabytes (a trainer with torch) costs
    hundreds of ms."""
    if uid is None:
        return [], None
    if tools.setpriv:
        return [tools.setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--pdeathsig=KILL",
                "--"], None
    return [], uid


def build_command(backend: str, tools: Tools, limits: Limits, workdir: str | None,
                  uid: int | None) -> Command:
    # limits: only disk_mb matters here (tmpfs sizes); the rlimits travel with the program.
    """The argv for ``backend`` (``none``, ``bwrap-userns``, ``bwrap-root``).

    workdir: the private working directory (backend ``none`` only).
    uid: the unprivileged uid to run as, or None when not started as root (no switch).
    """
    if backend == "none":
        if workdir is None:
            raise ValueError("backend none needs a work dir")
        drop, user = drop_privileges(tools, uid)
        return Command(drop + boot_argv(tools.python, init=False, uid=None,
                                         site_packages=tools.site_packages,
                                         seccomp=tools.seccomp), user,
                       workdir, False)
    if tools.bwrap is None:
        raise ValueError(f"backend {backend} needs bubblewrap")
    # bubblewrap installs the filter (read from a pipe, see execute.py) in the launcher it
    # starts, so the launcher needs no ctypes for it.
    seccomp_args = ["--seccomp", SECCOMP_FD] if tools.seccomp else []
    if backend == "bwrap-userns":
        drop, user = drop_privileges(tools, uid)
        argv = drop + [tools.bwrap, *bwrap_args(tools, limits, True), *seccomp_args, "--",
                       *boot_argv(tools.python, init=True, uid=None,
                                  site_packages=tools.site_packages,
                                  seccomp="bwrap" if tools.seccomp else None)]
        return Command(argv, user, "/", True, tools.seccomp)
    if backend == "bwrap-root":
        if uid is None:
            raise ValueError("bwrap-root needs root")
        # The launcher's switch from root to the uid makes the process non-dumpable when
        # fs.suid_dumpable is 0; otherwise it must say so itself (ctypes).
        filt = ("bwrap-nd" if suid_dumpable() == "0" else "bwrap") if tools.seccomp else None
        argv = [tools.bwrap, *bwrap_args(tools, limits, False), *seccomp_args, "--",
                *boot_argv(tools.python, init=True, uid=uid,
                           site_packages=tools.site_packages, seccomp=filt)]
        return Command(argv, None, "/", True, tools.seccomp)
    raise ValueError(f"unknown backend {backend!r}")
