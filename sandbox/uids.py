"""One unprivileged uid per concurrent run, and killing everything that uid runs.

A uid of its own per run is what makes the cleanup complete without namespaces: a program can
leave its process group (``setsid``) or double-fork away from its parent, but it cannot change
its uid, so SIGKILL to every process of that uid (found in ``/proc``, sent from the parent by
pidfd) reaches everything it left behind.
It also makes RLIMIT_NPROC per run rather than shared across workers.

Leases are ``flock`` locks on files in a root-only directory, so concurrent threads and
concurrent processes (tests, a benchmark, a trainer) never share a uid; the kernel drops the
lock if the holder dies.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import signal
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

# State of a uid, written at offset 0 of its lock file (same width: no truncation needed).
_CLEAN, _IN_USE, _DIRTY = b"clean ", b"in-use", b"dirty "


def processes_of(uid: int) -> dict[int, str]:
    """pid -> state letter (R, S, Z, ...) of every process whose real uid is ``uid``.

    Reads ``/proc/<pid>/status`` rather than the owner of ``/proc/<pid>``, which a process can
    turn into root by making itself non-dumpable. About 4 ms for 100 processes.
    """
    want = b"\nUid:\t%d\t" % uid
    found: dict[int, str] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            fd = os.open(f"/proc/{name}/status", os.O_RDONLY)
            try:
                data = os.read(fd, 4096)
            finally:
                os.close(fd)
        except OSError:
            continue
        if want in data:
            at = data.find(b"\nState:\t")
            found[int(name)] = chr(data[at + 8]) if at >= 0 else "?"
    return found


def signal_all(uid: int) -> int:
    """SIGKILL, from this (root) process, every process whose real uid is ``uid``; returns how
    many were signalled. Each is addressed by a pidfd opened *before* its uid is checked again,
    so a pid recycled in between can never be hit. No helper process runs as ``uid``: a program
    that loops ``kill(-1, SIGSTOP)`` could stop such a helper forever."""
    n = 0
    want = b"\nUid:\t%d\t" % uid
    for pid in processes_of(uid):
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            continue
        try:
            with open(f"/proc/{pid}/status", "rb") as f:
                if want not in f.read(4096):
                    continue
            signal.pidfd_send_signal(fd, signal.SIGKILL)
            n += 1
        except OSError:
            continue
        finally:
            os.close(fd)
    return n


def kill_all(uid: int, patience_s: float = 2.0) -> dict[int, str]:
    """Kill every process of ``uid`` and wait until none is alive, within ``patience_s``.

    A pass kills every process the uid has; processes forked during a pass are caught by the
    next (RLIMIT_NPROC caps how many can appear). SIGKILL also ends stopped processes.
    Returns the processes left: normally empty; zombies (``Z``) when an orphan waits for the
    machine's init to reap it (no code, no memory, but it counts against RLIMIT_NPROC of the
    uid); live ones only if they survived ``patience_s`` of repeated SIGKILL.
    """
    deadline = time.monotonic() + patience_s
    left = processes_of(uid)
    delay = 0.001
    while left and not all(state == "Z" for state in left.values()):
        if time.monotonic() > deadline:
            break
        signal_all(uid)
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
        left = processes_of(uid)
    return left


@dataclass
class Lease:
    uid: int
    fd: int


class UidPool:
    """Hands out uids from ``[base, base + count)``; thread- and process-safe."""

    def __init__(self, base: int, count: int, lock_dir: str) -> None:
        self.base = base
        self.count = count
        self.lock_dir = lock_dir
        self._next = 0
        self._mutex = threading.Lock()
        self._retired: set[int] = set()
        self._in_passwd: dict[int, bool] = {}
        _ensure_private_dir(lock_dir)

    @property
    def retired(self) -> frozenset[int]:
        """Uids this process stopped using because processes of theirs could not be removed."""
        with self._mutex:
            return frozenset(self._retired)

    def _candidates(self) -> Iterator[int]:
        with self._mutex:
            start = self._next
            self._next = (self._next + 1) % self.count
        for k in range(self.count):
            yield self.base + (start + k) % self.count

    def _usable(self, uid: int) -> bool:
        with self._mutex:
            if uid in self._retired:
                return False
            known = self._in_passwd.get(uid)
        if known is None:
            try:
                pwd.getpwuid(uid)
                known = True
            except KeyError:
                known = False
            with self._mutex:
                self._in_passwd[uid] = known
        return not known

    def retire(self, uid: int) -> None:
        with self._mutex:
            self._retired.add(uid)

    def acquire(self, wait_s: float = 120.0) -> Lease:
        """Lock a free uid that has no process left; waits while all are busy."""
        deadline = time.monotonic() + wait_s
        while True:
            for uid in self._candidates():
                if not self._usable(uid):
                    continue
                fd = os.open(os.path.join(self.lock_dir, f"uid-{uid}"),
                             os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    continue
                # The last holder stamps the file "clean" after emptying the uid; anything else
                # (it crashed mid-run, or left zombies) means: clean up after it, and skip the
                # uid if processes remain.
                if os.pread(fd, 6, 0) != _CLEAN and self._clean_after_crash(uid):
                    self.retire(uid)
                    os.close(fd)
                    continue
                os.pwrite(fd, _IN_USE, 0)
                return Lease(uid, fd)
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"no free sandbox uid in {self.base}..{self.base + self.count - 1} "
                    f"after {wait_s:g} s ({len(self.retired)} retired)"
                )
            time.sleep(0.01)

    def recover(self) -> int:
        """Clean up after holders that died mid-run (their uid is stamped ``in-use``): kill what
        the uid still runs, remove its files in world-writable places (which include a work dir
        left behind without namespaces) and its System V IPC objects. Uids in use are skipped.
        Returns how many uids were cleaned."""
        cleaned = 0
        for uid in range(self.base, self.base + self.count):
            path = os.path.join(self.lock_dir, f"uid-{uid}")
            try:
                fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                if os.pread(fd, 6, 0) == _CLEAN:
                    continue
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # in use right now
                left = self._clean_after_crash(uid)
                if left:
                    self.retire(uid)
                os.pwrite(fd, _DIRTY if left else _CLEAN, 0)
                cleaned += 1
            finally:
                os.close(fd)
        return cleaned

    def _clean_after_crash(self, uid: int) -> dict[int, str]:
        """Kill the uid's processes and remove its files outside work dirs (which include a
        work dir a crashed holder could not remove); returns the processes left."""
        from sandbox.cleanup import sweep_ipc, sweep_owned_files, sweep_workdirs  # a leaf module

        left = kill_all(uid)
        sweep_owned_files(uid)
        sweep_workdirs(uid)
        sweep_ipc(uid)
        return left

    def release(self, lease: Lease, leftovers: dict[int, str]) -> None:
        """Unlock the uid; retire it for this process if ``leftovers`` (from :func:`kill_all`,
        which the caller runs, and then cleans files, before unlocking) is not empty."""
        if leftovers:
            self.retire(lease.uid)
        try:
            os.pwrite(lease.fd, _DIRTY if leftovers else _CLEAN, 0)
        finally:
            os.close(lease.fd)


def kill_orphaned_sandboxes(marker: bytes = b"_mopd_boot") -> list[int]:
    """SIGKILL bubblewrap processes of our sandboxes whose parent died (adopted by pid 1).

    bubblewrap's child waits for a go-ahead from its parent before it sets its own
    parent-death signal; if the process running the sandbox dies in that window, the child waits
    forever. Our sandboxes carry the launcher's source on their command line, and a live one
    always has its starter as parent, so an orphan with that command line is one of these."""
    killed = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmd = f.read()
            if marker not in cmd or not cmd.split(b"\0", 1)[0].endswith(b"bwrap"):
                continue
            with open(f"/proc/{name}/status", "rb") as f:
                if b"\nPPid:\t1\n" not in f.read():
                    continue
            fd = os.pidfd_open(int(name))
        except OSError:
            continue
        try:
            signal.pidfd_send_signal(fd, signal.SIGKILL)
            killed.append(int(name))
        except OSError:
            pass
        finally:
            os.close(fd)
    return killed


def _ensure_private_dir(path: str) -> None:
    """Create ``path`` 0700 or check that an existing one is ours and private (a lock dir that
    others can write would let them steal or block uids)."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise RuntimeError(f"{path} is not a private directory owned by uid {os.geteuid()}")
