"""Which isolation layers this machine allows, found by trying them, and the doctor report.

Nothing is assumed from the presence of a binary: each namespace backend is accepted only after
a probe program ran through it as the sandbox uid. A layer that is missing is reported as a loud
warning (stderr and ``warnings.warn``, once per process), never dropped silently.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import warnings
from dataclasses import dataclass

from sandbox.boot import python_flags
from sandbox.cgroups import CgroupRoot, find_root
from sandbox.cleanup import ensure_mqueue_mounted
from sandbox.command import Tools
from sandbox.config import Layer, Limits, SandboxConfig
from sandbox.execute import execute
from sandbox.seccomp import filter_or_reason
from sandbox.uids import UidPool

PROBE = b"import sys\nprint(sys.version.split()[0])\n"
_PROBE_LIMITS = Limits(timeout_s=20.0)


class SandboxWarning(UserWarning):
    """An isolation layer is missing on this machine."""


@dataclass(frozen=True)
class Setup:
    """The outcome of detection: what runs will use."""

    backend: str  # "bwrap-userns", "bwrap-root" or "none"
    tools: Tools
    root: bool
    python_version: str
    layers: tuple[Layer, ...]
    warnings: tuple[str, ...]
    error: str | None = None  # set when the configuration demands what the machine lacks
    bwrap_version: str = ""

    @property
    def namespaces(self) -> bool:
        return self.backend != "none"


def world_accessible(path: str) -> tuple[bool, str]:
    """Whether a uid with no group in common with the owners can execute ``path``: every
    directory on the way (after resolving symlinks) must have o+x and the file o+x.
    Returns (ok, reason when not)."""
    real = os.path.realpath(path)
    try:
        st = os.stat(real)
    except OSError as e:
        return False, f"{path}: {e.strerror}"
    if not st.st_mode & stat.S_IXOTH:
        return False, f"{real} is not executable by other users"
    parent = os.path.dirname(real)
    while True:
        try:
            mode = os.stat(parent).st_mode
        except OSError as e:
            return False, f"{parent}: {e.strerror}"
        if not mode & stat.S_IXOTH:
            return False, f"{path} resolves under {parent} (mode {stat.S_IMODE(mode):04o}), " \
                          "which other users cannot enter"
        if parent == "/":
            return True, ""
        parent = os.path.dirname(parent)


def _venv_home(python: str) -> str | None:
    """The base interpreter directory of a virtual environment (``home`` in pyvenv.cfg)."""
    for cfg in (os.path.join(os.path.dirname(python), "pyvenv.cfg"),
                os.path.join(os.path.dirname(os.path.dirname(python)), "pyvenv.cfg")):
        try:
            with open(cfg) as f:
                for line in f:
                    key, _, value = line.partition("=")
                    if key.strip() == "home":
                        return value.strip()
        except OSError:
            continue
    return None


def interpreter_roots(python: str) -> tuple[str, ...]:
    """Directories outside /usr that the interpreter needs mounted under bubblewrap: its prefix
    (bin/, lib/ with the stdlib and libpython), and a venv's own directory plus its base."""
    roots: list[str] = []
    for exe in (python, os.path.realpath(python)):
        prefix = os.path.dirname(os.path.dirname(os.path.abspath(exe)))
        roots.append(prefix)
    home = _venv_home(python)
    if home:
        roots.append(os.path.dirname(os.path.realpath(home)))
    out: list[str] = []
    for r in roots:
        r = os.path.realpath(r)
        if r in ("/", "/usr") or r.startswith("/usr/") or r in out:
            continue
        out.append(r)
    return tuple(out)


def choose_python(config: SandboxConfig, need_world: bool) -> tuple[str | None, str]:
    """Interpreter for programs, and a note on the choice.

    need_world: the program runs as another uid (we are root), so the interpreter and its
    libraries must be executable by any user.
    """
    if config.python:
        ok, why = world_accessible(config.python) if need_world else (True, "")
        if not ok:
            return None, f"configured interpreter unusable: {why}"
        return config.python, "configured"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    candidates = [sys.executable, f"/usr/bin/python{version}", f"/usr/local/bin/python{version}",
                  "/usr/bin/python3"]
    notes = []
    for cand in candidates:
        if not cand or not os.path.exists(cand):
            continue
        if need_world:
            ok, why = world_accessible(cand)
            home = _venv_home(cand)
            if ok and home:
                ok, why = world_accessible(os.path.join(home, os.path.basename(
                    os.path.realpath(cand))))
            if not ok:
                notes.append(why)
                continue
        note = "the current interpreter" if cand == sys.executable else (
            f"not the current interpreter ({'; '.join(notes)})" if notes else "")
        return cand, note
    return None, "no interpreter executable by an unprivileged uid: " + "; ".join(notes)


def find_tools(python: str, site_packages: bool = False, extras: Extras | None = None) -> Tools:
    extras = extras if extras is not None else Extras()
    return Tools(
        python=python,
        bwrap=shutil.which("bwrap"),
        setpriv=shutil.which("setpriv"),
        python_roots=interpreter_roots(python),
        site_packages=site_packages,
        seccomp=extras.seccomp,
        cgroups=extras.cgroups,
    )


@dataclass(frozen=True)
class Extras:
    """Layers found before the backends are probed: the per-run cgroup root, the seccomp
    filter, the POSIX message queue mount, each with why it is (not) there."""

    cgroups: CgroupRoot | None = None
    cgroups_note: str = "not checked"
    seccomp: bytes | None = None
    seccomp_note: str = "not checked"
    mqueue_note: str = ""


def find_extras() -> Extras:
    """Detect the cgroup and seccomp layers (and mount /dev/mqueue where absent, as root)."""
    cg, cg_note = find_root()
    # Without a memory cgroup nothing bounds memfd pages, so the filter denies memfd_create.
    bpf, sc_note = filter_or_reason(deny_memfd=cg is None)
    if bpf is not None and cg is None:
        sc_note += "; memfd_create denied too (no memory cgroup bounds it)"
    mq_note = ensure_mqueue_mounted()[1] if os.geteuid() == 0 else ""
    return Extras(cg, cg_note, bpf, sc_note, mq_note)


def _bwrap_version(bwrap: str | None) -> str:
    if not bwrap:
        return ""
    try:
        out = subprocess.run([bwrap, "--version"], capture_output=True, text=True, timeout=10,
                             stdin=subprocess.DEVNULL)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def default_lock_dir() -> str:
    if os.access("/run", os.W_OK):
        return "/run/mopd-sandbox"
    return os.path.join(tempfile.gettempdir(), f"mopd-sandbox-locks-{os.geteuid()}")


def detect(config: SandboxConfig, pool: UidPool | None, extras: Extras | None = None) -> Setup:
    """Try the configured backends in order of strength and describe the result."""
    root = os.geteuid() == 0
    extras = extras if extras is not None else find_extras()
    python, py_note = choose_python(config, need_world=root)
    if python is None:
        tools = Tools(python=sys.executable, bwrap=None, setpriv=None)
        return _describe(config, "none", tools, root, "", {}, py_note, error=py_note,
                         extras=extras)
    tools = find_tools(python, config.site_packages, extras)
    if config.namespaces == "off":
        candidates: list[str] = []
    elif config.namespaces in ("bwrap-userns", "bwrap-root"):
        candidates = [config.namespaces]
    else:
        # As root, bubblewrap started as root needs no unprivileged user namespaces (which some
        # distributions restrict) and no setpriv exec per run; the program still runs as the
        # run's uid, and bubblewrap's init as root cannot be signalled or traced by it.
        candidates = ["bwrap-root", "bwrap-userns"] if root else ["bwrap-userns"]
    failures: dict[str, str] = {}
    for backend in candidates:
        why = _unavailable(backend, tools, root)
        if why is None:
            version, why = _probe(backend, tools, pool, config)
            if why is None:
                return _describe(config, backend, tools, root, version, failures, py_note,
                                 extras=extras)
        failures[backend] = why
    error = None
    if config.namespaces not in ("off", "auto"):
        error = "namespaces required (MOPD_SANDBOX_NAMESPACES=" + config.namespaces + \
                ") but unavailable: " + "; ".join(f"{k}: {v}" for k, v in failures.items())
    version, why = _probe("none", tools, pool, config)
    if why is not None:
        error = error or f"the interpreter does not run in the sandbox: {why}"
    return _describe(config, "none", tools, root, version, failures, py_note, error=error,
                     extras=extras)


def unusable(config: SandboxConfig, error: str) -> Setup:
    """The setup reported when detection itself failed (every run returns sandbox_error)."""
    tools = Tools(python=config.python or sys.executable, bwrap=None, setpriv=None)
    return _describe(config, "none", tools, os.geteuid() == 0, "", {}, "", error=error)


def _unavailable(backend: str, tools: Tools, root: bool) -> str | None:
    if tools.bwrap is None:
        return "bubblewrap (bwrap) not installed (Debian: apt-get install bubblewrap)"
    if backend == "bwrap-root" and not root:
        return "needs root"
    return None


def _probe(backend: str, tools: Tools, pool: UidPool | None,
           config: SandboxConfig) -> tuple[str, str | None]:
    res = execute(backend, tools, _PROBE_LIMITS, PROBE, None, uid_pool=pool,
                  work_root=config.work_root)
    if res.status == "ok" and res.stdout.strip():
        return res.stdout.strip(), None
    detail = res.error or res.stderr.strip()[-500:] or f"status {res.status}"
    return "", detail


def _describe(config: SandboxConfig, backend: str, tools: Tools, root: bool, version: str,
              failures: dict[str, str], py_note: str, error: str | None = None,
              extras: Extras | None = None) -> Setup:
    extras = extras if extras is not None else Extras()
    lim = Limits()
    ns = backend != "none"
    bwrap_version = _bwrap_version(tools.bwrap) if ns else ""
    if config.namespaces == "off":
        ns_why = "turned off (MOPD_SANDBOX_NAMESPACES=0 or SandboxConfig(namespaces='off'))"
    else:
        ns_why = "; ".join(f"{k}: {v}" for k, v in failures.items()) or "not available"
    flavour = {"bwrap-userns": "unprivileged, in a user namespace",
               "bwrap-root": "started as root, then setpriv to the run's uid"}.get(backend, "")
    flags = " ".join(python_flags(tools.site_packages))
    py_detail = (f"{tools.python} {flags} (Python {version or '?'}), a new process per run, "
                 + ("with site-packages" if tools.site_packages else "standard library only"))
    if py_note and py_note != "the current interpreter":
        py_detail += f"; {py_note}"
    if root:
        uid_layer = Layer("unprivileged uid", True,
                          f"one uid per concurrent run from {config.uid_base}.."
                          f"{config.uid_base + config.uid_count - 1}, gid likewise, "
                          "no supplementary groups",
                          "root-only files, other processes, RLIMIT_NPROC binding, cleanup by uid")
    else:
        uid_layer = Layer("unprivileged uid", False,
                          f"running as uid {os.geteuid()}, not root: programs run as you" +
                          ("; namespaces still hide your files and processes" if ns else
                           ": they can read your files and signal your processes"),
                          "your files and processes")
    layers = [
        Layer("fresh interpreter", True, py_detail, "state shared between runs"),
        Layer("session and process group", True,
              "setsid; the parent kills the whole group", "terminal signals, stray children"),
        Layer("rlimits", True,
              f"set by the launcher before the program starts, soft = hard; defaults: address space {lim.memory_mb} MiB, CPU timeout+1 s, "
              f"file size {lim.file_size_mb} MiB, open files {lim.open_files}, "
              f"processes {lim.processes}, core 0",
              "memory bombs, CPU burn, huge files, fd exhaustion, fork bombs"),
        uid_layer,
        Layer("private work directory", True,
              (f"a {lim.disk_mb} MiB tmpfs at /work (and /tmp, /dev/shm), gone with the run; "
               "a private IPC namespace (System V and POSIX message queues)"
               if ns else "a fresh directory per run, removed afterwards; files the run's uid "
               "left in /tmp, /var/tmp, /dev/shm, /run/lock, POSIX message queues in "
               f"/dev/mqueue ({extras.mqueue_note or 'not root'}) and System V IPC are removed"),
              "files left behind, disk filling" if ns else "files left behind"),
        Layer("cgroup v2", extras.cgroups is not None,
              (f"{extras.cgroups_note}: memory.max = memory_mb for the whole run (memfd, tmpfs "
               "and shared memory included), memory.swap.max = 0, pids.max, cgroup.kill")
              if extras.cgroups is not None else
              f"{extras.cgroups_note}: memory is bounded per process by RLIMIT_AS only (memfd "
              "denied by the seccomp filter; tmpfs pages count only against their tmpfs size)",
              "memory outside the address space (memfd, tmpfs, shared memory), fork bombs "
              "times memory"),
        Layer("seccomp filter", tools.seccomp is not None,
              f"{extras.seccomp_note}: keyrings, namespaces, mount, ptrace, io_uring, "
              "userfaultfd, perf_event_open, bpf and more denied" if tools.seccomp is not None
              else extras.seccomp_note,
              "kernel keyrings shared by the uid, nested namespaces, kernel attack surface"),
        Layer("empty environment", True, "env={} (no secrets, no PATH)",
              "reading the caller's environment"),
        Layer("network namespace", ns,
              f"bubblewrap {bwrap_version} ({flavour}): only a private loopback" if ns
              else f"{ns_why}: network is NOT contained (loopback and outside reachable)",
              "network access, including the host's loopback services"),
        Layer("pid namespace", ns,
              "the program sees only its own processes; killing its init kills all" if ns
              else f"{ns_why}: processes are contained by uid and process group only",
              "signalling unrelated processes, leftover daemons"),
        Layer("mount namespace", ns,
              "read-only /usr, /etc and the interpreter; nothing else of the host" if ns
              else f"{ns_why}: the host file system is visible (with the uid's permissions)",
              "reading world-readable host files, writing outside the work dir"),
        Layer("wall clock", True,
              "the parent kills the namespace, process group and every process of the uid",
              "sleeps, busy loops, blocked stdin"),
        Layer("output caps", True,
              f"the parent reads stdout/stderr and kills past {lim.output_bytes >> 20} MiB each",
              "gigabytes of output"),
    ]
    missing = [layer for layer in layers if not layer.active]
    warns = []
    if missing:
        # One message for all: the layers share their causes (no namespaces, not root).
        causes = []
        if not ns:
            causes.append(f"no namespaces ({ns_why}): network is NOT contained and the host "
                          "file system is visible")
        if not root:
            causes.append(f"not root: programs run as uid {os.geteuid()}")
        if extras.cgroups is None:
            causes.append(f"no per-run cgroup ({extras.cgroups_note})")
        if tools.seccomp is None:
            causes.append(f"no seccomp filter ({extras.seccomp_note})")
        warns.append("sandbox layers missing: " + ", ".join(m.name for m in missing) + "; "
                     + "; ".join(causes) + ". Details: python -m sandbox doctor")
    if error:
        warns.insert(0, f"sandbox unusable: {error}")
    return Setup(backend, tools, root, version, tuple(layers), tuple(warns), error,
                 bwrap_version)


_warned: set[str] = set()
_warn_lock = threading.Lock()


def warn_once(messages: tuple[str, ...]) -> None:
    """Print each message to stderr and issue a SandboxWarning, once per process."""
    for msg in messages:
        with _warn_lock:
            if msg in _warned:
                continue
            _warned.add(msg)
        print(f"mopd-eval sandbox: WARNING: {msg}", file=sys.stderr, flush=True)
        warnings.warn(msg, SandboxWarning, stacklevel=3)


def doctor_text(setup: Setup) -> str:
    """Human-readable report of every layer."""
    lines = [f"sandbox backend: {setup.backend}"
             + (f" ({setup.bwrap_version})" if setup.bwrap_version else ""),
             f"running as: {'root' if setup.root else f'uid {os.geteuid()}'}"]
    if setup.error:
        lines.append(f"ERROR: {setup.error}")
    width = max(len(layer.name) for layer in setup.layers)
    for layer in setup.layers:
        mark = "active " if layer.active else "MISSING"
        lines.append(f"  {layer.name:<{width}}  {mark}  {layer.detail}")
    missing = [layer for layer in setup.layers if not layer.active]
    if missing:
        lines.append(f"{len(missing)} layer(s) missing; see sandbox/README.md for what each "
                     "protects against.")
    else:
        lines.append("all layers active")
    return "\n".join(lines)
