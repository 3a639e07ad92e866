"""The launcher that the program's own fresh interpreter runs before the program.

``python -I -S -B -c BOOT <init> <uid>`` replaces a chain of helper executables (setpriv,
prlimit, sh, setsid: ~25 ms of exec'ing on a loaded machine). It runs only our code, in an
interpreter that has run nothing else, and it can be started before the program is known (see
runner.py, "pre-started sandboxes"):

1. it reads, from stdin, a header (the rlimits) and the program, byte-exact with ``os.read``
   so that everything after them is left unread for the program's ``sys.stdin``;
2. it writes the program to ``main.py`` in its working directory (read-only);
3. under bubblewrap (``init`` = 1) it becomes the pid namespace's init: it forks, reaps, and
   leaves with the program's status once the program exits, which empties the namespace. The
   program (the forked child) is an ordinary process in its own session, so signals and
   ``killpg(getpgrp())`` mean what they mean outside, and its rusage reaches the parent;
4. in the program's process: applies the rlimits (soft == hard, so they cannot be raised), drops
   to the run's uid/gid with no supplementary groups when started as root, tells the parent on
   a pipe that the program starts (the wall clock covers the program, not the interpreter's
   start-up, as in LiveCodeBench's in-process timing), makes the process non-dumpable, installs
   the seccomp filter (sandbox/seccomp.py), and executes main.py as ``__main__`` with the
   interpreter's globals reset, the way ``python -I main.py`` would.

No-new-privileges is set by bubblewrap, or by setpriv(1) without namespaces.
"""

from __future__ import annotations

from sandbox.config import Limits

RLIMIT_NAMES = {"as": "RLIMIT_AS", "cpu": "RLIMIT_CPU", "fsize": "RLIMIT_FSIZE",
                "nofile": "RLIMIT_NOFILE", "nproc": "RLIMIT_NPROC", "core": "RLIMIT_CORE",
                "stack": "RLIMIT_STACK"}

# Everything lives inside one function: the program's globals are this module's globals
# (``__main__`` of ``-c``), which are cleared before the program runs.
BOOT = r'''
def _mopd_boot():
    import os, sys, builtins
    init, uid, ready, filt = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    # filt: the seccomp filter as hex, to install here; "-" none; "bwrap": bubblewrap installed
    # it; "bwrap-nd": that, and the uid switch below makes the process non-dumpable by itself
    # (fs.suid_dumpable = 0), so ctypes (~3 ms per run) is not needed at all.
    # Prepared before the program arrives (a pre-started sandbox does this while it waits).
    libc = ctypes = fprog = None
    if filt != "bwrap-nd":
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
        if filt not in ("-", "bwrap"):
            class FProg(ctypes.Structure):
                _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
            bpf = ctypes.create_string_buffer(bytes.fromhex(filt))
            fprog = FProg(len(bpf.raw) // 8, ctypes.addressof(bpf))

    def read_exactly(n):
        chunks = []
        while n:
            chunk = os.read(0, n)
            if not chunk:
                os._exit(0)  # the parent went away before sending a program
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    header = read_exactly(int(read_exactly(8))).decode().split()
    program = read_exactly(int(header[0]))
    fd = os.open("main.py", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
    view = memoryview(program)
    while view:
        view = view[os.write(fd, view):]
    os.close(fd)
    if sys.flags.no_site:
        # -S skips site (and any .pth code in site-packages); keep the builtins it adds that
        # programs use to stop.
        import _sitebuiltins
        builtins.exit = _sitebuiltins.Quitter("exit", "Ctrl-D (i.e. EOF)")
        builtins.quit = _sitebuiltins.Quitter("quit", "Ctrl-D (i.e. EOF)")
    if init == "1":
        child = os.fork()
        if child:
            for fd in (0, 1, 2, ready):
                os.close(fd)
            while True:
                try:
                    pid, status = os.waitpid(-1, 0)
                except ChildProcessError:
                    os._exit(127)
                if pid == child:
                    code = os.waitstatus_to_exitcode(status)
                    os._exit(code if code >= 0 else 128 - code)
        os.setsid()
    import resource
    for item in header[1:]:
        name, soft, hard = item.split(":")
        resource.setrlimit(getattr(resource, name), (int(soft), int(hard)))
    if uid != "-":
        uid = int(uid)
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    # Non-dumpable: no other process of the uid may read or write this one's memory or file
    # descriptors through /proc or ptrace (the harness drivers rely on it).
    if libc is not None:
        libc.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE
        libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS (to install a filter unprivileged)
        if fprog is not None and libc.prctl(22, 2, ctypes.addressof(fprog), 0, 0):  # SECCOMP
            os.write(2, b"mopd-sandbox: cannot install the seccomp filter: "
                     + os.strerror(ctypes.get_errno()).encode() + b"\n")
            os._exit(125)
    del libc, fprog, ctypes
    path = os.path.abspath("main.py")
    sys.argv[:] = ["main.py"]
    os.write(ready, b"!")  # the parent's clock for the program starts now
    os.close(ready)
    ns = sys.modules["__main__"].__dict__
    ns.clear()
    ns.update(__name__="__main__", __doc__=None, __package__=None, __loader__=None,
              __spec__=None, __file__=path, __cached__=None, __builtins__=builtins)
    try:
        code = compile(program, path, "exec")
        del program
        exec(code, ns)
    except SystemExit:
        raise
    except BaseException as e:
        # As the interpreter would report it, minus this launcher's frame.
        e = e.with_traceback(e.__traceback__.tb_next)
        sys.excepthook(type(e), e, e.__traceback__)
        sys.exit(1)
_mopd_boot()
'''


def python_flags(site_packages: bool) -> list[str]:
    """-I: isolated (no environment variables, no user site, no script dir on sys.path);
    -B: no .pyc writes; -S unless site_packages: the standard library only (same verdicts on
    every machine, and ~5 ms less per start)."""
    return ["-I", "-B"] if site_packages else ["-I", "-S", "-B"]


READY_FD = "{ready_fd}"  # placeholder in argv for the pipe on which BOOT signals the start


def boot_argv(python: str, *, init: bool, uid: int | None,
              site_packages: bool = False, seccomp: bytes | str | None = None) -> list[str]:
    """``python <flags> -c BOOT`` with its arguments. seccomp: the raw BPF filter the
    launcher installs in the program's process (sandbox/seccomp.py), None for none, or
    ``"bwrap"`` / ``"bwrap-nd"`` when bubblewrap installs it (see BOOT)."""
    filt = seccomp.hex() if isinstance(seccomp, bytes) else (seccomp or "-")
    return [python, *python_flags(site_packages), "-c", BOOT, "1" if init else "0",
            "-" if uid is None else str(uid), READY_FD, filt]


def boot_input(program: bytes, limits: Limits) -> bytes:
    """What BOOT reads from stdin before the program's own input: a length-prefixed header
    (program size and rlimits), then the program."""
    items = [str(len(program))]
    items += [f"{RLIMIT_NAMES[k]}:{s}:{h}" for k, (s, h) in limits.rlimits().items()]
    header = " ".join(items).encode()
    return b"%08d" % len(header) + header + program
