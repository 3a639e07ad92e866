"""The seccomp filter every sandboxed program runs under, compiled with libseccomp.

Kernel interfaces that namespaces and a uid of its own do not contain, or that are attack
surface a program never needs, are denied with ``EPERM`` (``clone3`` with ``ENOSYS``, so that
the C library falls back to ``clone``, whose flags the filter can read):

* kernel keyrings (``add_key``, ``keyctl``, ``request_key``): they belong to the uid, not the
  run, so a key added by one run is found by the next one with the same uid;
* new namespaces (``unshare``, ``setns``, ``clone`` with any ``CLONE_NEW*`` flag): a nested
  user namespace may mount a tmpfs of any size and regain capabilities inside it;
* mounting (``mount``, ``umount2``, the new mount API, ``pivot_root``, ``chroot``);
* ``ptrace``, ``process_vm_readv``/``writev``, ``kcmp``, ``pidfd_getfd``: reaching into other
  processes of the uid (the harness's driver process among them);
* ``io_uring_*``, ``userfaultfd``, ``perf_event_open``, ``bpf``, ``fanotify_init``,
  ``open_by_handle_at``, kernel modules, ``kexec_*``, ``reboot``, swap, accounting, clock and
  host name changes, ``personality`` (can disable ASLR), ``vhangup``, ``quotactl``;
* ``memfd_create`` when no memory cgroup bounds the run (``deny_memfd``): memfd pages are
  seen by no rlimit, so without a cgroup they would be unbounded memory.

The filter is built once per process in the parent (``libseccomp.so.2`` through ctypes) and
exported as raw BPF; the launcher (sandbox/boot.py) installs it with ``prctl`` in the program's
process just before the program starts, in every mode. Without libseccomp the layer is missing
and ``python -m sandbox doctor`` says so.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import threading

DENIED = (
    "add_key", "keyctl", "request_key",
    "unshare", "setns",
    "mount", "umount2", "pivot_root", "chroot", "fsopen", "fsmount", "fsconfig", "fspick",
    "move_mount", "open_tree", "mount_setattr",
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    "userfaultfd", "perf_event_open", "bpf", "fanotify_init", "open_by_handle_at",
    "name_to_handle_at", "init_module", "finit_module", "delete_module", "kexec_load",
    "kexec_file_load", "reboot", "swapon", "swapoff", "acct", "settimeofday", "clock_settime",
    "clock_adjtime", "adjtimex", "sethostname", "setdomainname", "personality", "vhangup",
    "quotactl", "lookup_dcookie", "uselib", "iopl", "ioperm", "syslog",
)
# CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET (NEWTIME is clone3/unshare only)
CLONE_NEW_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000,
                   0x40000000)

_ACT_ALLOW = 0x7FFF0000
_CMP_MASKED_EQ = 7


def _act_errno(code: int) -> int:
    return 0x00050000 | (code & 0xFFFF)


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64),
                ("datum_b", ctypes.c_uint64)]


def _library() -> ctypes.CDLL:
    name = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
    lib = ctypes.CDLL(name, use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                           ctypes.c_uint, ctypes.POINTER(_ArgCmp)]
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    return lib


def build_filter(deny_memfd: bool) -> bytes:
    """The filter as raw BPF (an array of ``struct sock_filter``). Raises OSError when
    libseccomp is missing or refuses a rule."""
    lib = _library()
    ctx = lib.seccomp_init(_ACT_ALLOW)
    if not ctx:
        raise OSError("seccomp_init failed")
    try:
        names = DENIED + (("memfd_create",) if deny_memfd else ())
        for name in names:
            _rule(lib, ctx, _act_errno(errno.EPERM), name, [])
        _rule(lib, ctx, _act_errno(errno.ENOSYS), "clone3", [])
        for flag in CLONE_NEW_FLAGS:  # rules on one syscall are or-ed: any flag denies
            _rule(lib, ctx, _act_errno(errno.EPERM), "clone",
                  [_ArgCmp(0, _CMP_MASKED_EQ, flag, flag)])
        return _export(lib, ctx)
    finally:
        lib.seccomp_release(ctx)


def _rule(lib: ctypes.CDLL, ctx: int, action: int, name: str, cmps: list[_ArgCmp]) -> None:
    nr = lib.seccomp_syscall_resolve_name(name.encode())
    if nr < 0:
        return  # not a syscall of this architecture (or this libseccomp): nothing to deny
    arr = (_ArgCmp * max(1, len(cmps)))(*cmps)
    rc = lib.seccomp_rule_add_array(ctx, action, nr, len(cmps), arr)
    if rc < 0:
        raise OSError(-rc, f"seccomp rule for {name}: {os.strerror(-rc)}")


def _export(lib: ctypes.CDLL, ctx: int) -> bytes:
    r, w = os.pipe()
    try:
        rc = lib.seccomp_export_bpf(ctx, w)
        os.close(w)
        w = -1
        if rc < 0:
            raise OSError(-rc, f"seccomp_export_bpf: {os.strerror(-rc)}")
        chunks = []
        while chunk := os.read(r, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


_cache: dict[bool, bytes | str] = {}
_lock = threading.Lock()


def filter_or_reason(deny_memfd: bool) -> tuple[bytes | None, str]:
    """(the BPF program, a description) or (None, why the layer is missing); built once."""
    with _lock:
        if deny_memfd not in _cache:
            try:
                _cache[deny_memfd] = build_filter(deny_memfd)
            except (OSError, AttributeError) as e:
                _cache[deny_memfd] = f"libseccomp unavailable ({e}); Debian: apt-get install " \
                                     "libseccomp2"
        got = _cache[deny_memfd]
    if isinstance(got, bytes):
        return got, f"{len(got) // 8} BPF instructions"
    return None, got
