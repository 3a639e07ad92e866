"""Private work directories, and removing what a run left outside them.

Under bubblewrap the program sees only read-only system directories and private tmpfs mounts,
so nothing outside needs cleaning. Without namespaces an unprivileged uid can still create
files in world-writable directories and System V IPC objects; those are found by owner (the
run's uid is used by nothing else) and removed after the run.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import stat
import subprocess
import tempfile

# Where an unprivileged uid can create files on a standard Linux system. A world-writable
# directory elsewhere on the host is not swept (see sandbox/README.md).
WORLD_WRITABLE_ROOTS = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock", "/var/lock", "/dev/mqueue")
_SWEEP_DEPTH = 6


def make_workdir(root: str | None, owner: int | None) -> str:
    """Create a private working directory, owned by ``owner`` (uid and gid) when started as root,
    inside a container directory of its own (``mopd-sbx-*``) that stays root's: the program
    cannot rename its work dir or put a link in its place, since it cannot write to the
    container. Returns the work dir; :func:`remove_workdir` removes both. The launcher writes
    main.py into the work dir (boot.py)."""
    container = tempfile.mkdtemp(prefix="mopd-sbx-", dir=root)
    path = os.path.join(container, "w")
    try:
        os.chmod(container, 0o711)
        os.mkdir(path, 0o700)
        if owner is not None and os.geteuid() == 0:
            os.chown(path, owner, owner)
    except BaseException:
        remove_tree(container)
        raise
    return path


def remove_workdir(path: str) -> None:
    """Remove a work dir made by :func:`make_workdir` with its container."""
    remove_tree(os.path.dirname(path))


def sweep_workdirs(uid: int, root: str | None = None) -> list[str]:
    """Remove the work dirs of ``uid`` (with their containers) that a process which died
    mid-run left in ``root`` (default: the system temp dir); returns the containers removed."""
    base = root or tempfile.gettempdir()
    removed = []
    try:
        names = [n for n in os.listdir(base) if n.startswith("mopd-sbx-")]
    except OSError:
        return removed
    for name in names:
        container = os.path.join(base, name)
        try:
            st = os.lstat(os.path.join(container, "w"))
        except OSError:
            continue
        if st.st_uid == uid and stat.S_ISDIR(st.st_mode):
            remove_tree(container)
            removed.append(container)
    return removed


def remove_tree(path: str) -> None:
    """Remove ``path`` whatever the program did inside it (read-only dirs, thousands of files,
    nesting deeper than Python's recursion limit, symlinks pointing outside), never following
    a link and never changing anything outside ``path``. Called after the run's processes are
    dead, so nothing changes under it meanwhile.

    If ``path`` itself is now a link (the program renamed its work dir and left a link in its
    place), only the link goes; the renamed directory is the uid's and the sweep removes it."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError:
        return
    if not stat.S_ISDIR(st.st_mode):
        with contextlib.suppress(OSError):
            os.unlink(path)
        return
    # fd-based rmtree never follows symlinks out of the tree.
    with contextlib.suppress(OSError, RecursionError):
        shutil.rmtree(path, onerror=functools.partial(_make_writable_and_retry, path))
    if os.path.lexists(path):
        # rm(1) walks with fts: no recursion limit, and it does not follow links either.
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(["rm", "-rf", "--one-file-system", "--", path], check=False,
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=_RM_TIMEOUT_S)


_RM_TIMEOUT_S = 60.0


def _make_writable_and_retry(root, func, path, _exc_info) -> None:  # type: ignore[no-untyped-def]
    """rmtree's error hook: a read-only directory *inside* the tree is made writable (through a
    descriptor opened without following links) and the removal retried. Nothing at or above
    ``root`` is ever changed."""
    parent = os.path.dirname(path)
    if not parent.startswith(root.rstrip("/") + "/") and parent != root:
        return
    try:
        fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return
    try:
        os.fchmod(fd, 0o700)
        func(path)
    except OSError:
        pass
    finally:
        os.close(fd)


def find_owned_files(uid: int, roots: tuple[str, ...] = WORLD_WRITABLE_ROOTS) -> list[str]:
    """Every file or directory owned by ``uid`` in the world-writable ``roots`` and in
    world-writable directories below them: the only places outside its work dir where a uid
    with no groups can create entries. A directory owned by ``uid`` is listed, not its content."""
    found: list[str] = []
    seen: set[tuple[int, int]] = set()
    for root in roots:
        _scan_dir(root, uid, found, seen, 0)
    return found


def sweep_owned_files(uid: int, roots: tuple[str, ...] = WORLD_WRITABLE_ROOTS) -> list[str]:
    """Remove what :func:`find_owned_files` finds; returns the removed paths."""
    found = find_owned_files(uid, roots)
    for path in found:
        if os.path.isdir(path) and not os.path.islink(path):
            remove_tree(path)
        else:
            with contextlib.suppress(OSError):
                os.unlink(path)
    return found


def _scan_dir(path: str, uid: int, found: list[str], seen: set, depth: int) -> None:
    try:
        st = os.stat(path)
    except OSError:
        return
    key = (st.st_dev, st.st_ino)
    if key in seen or not stat.S_ISDIR(st.st_mode):
        return
    seen.add(key)
    try:
        entries = list(os.scandir(path))
    except OSError:
        return
    for entry in entries:
        try:
            est = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if est.st_uid == uid:
            found.append(entry.path)
        elif (stat.S_ISDIR(est.st_mode) and est.st_mode & stat.S_IWOTH
              and depth < _SWEEP_DEPTH):
            _scan_dir(entry.path, uid, found, seen, depth + 1)


def sweep_ipc(uid: int) -> list[str]:
    """Remove System V shared memory, semaphores and message queues owned by ``uid`` (they
    outlive processes). Returns ``kind:id`` of each removed object."""
    removed = []
    for kind, flag in (("shm", "-m"), ("sem", "-s"), ("msg", "-q")):
        try:
            with open(f"/proc/sysvipc/{kind}") as f:
                header, *rows = f.read().splitlines()
        except OSError:
            continue
        cols = header.split()
        if "uid" not in cols:
            continue
        id_col = {"shm": "shmid", "sem": "semid", "msg": "msqid"}[kind]
        for row in rows:
            fields = row.split()
            if len(fields) != len(cols):
                continue
            rec = dict(zip(cols, fields, strict=True))
            if rec.get("uid") == str(uid) or rec.get("cuid") == str(uid):
                with contextlib.suppress(OSError, subprocess.SubprocessError):
                    subprocess.run(["ipcrm", flag, rec[id_col]], check=False,
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, timeout=10)
                removed.append(f"{kind}:{rec[id_col]}")
    return removed


MQUEUE = "/dev/mqueue"


def ensure_mqueue_mounted(mounts_file: str = "/proc/mounts") -> tuple[bool, str]:
    """Mount the POSIX message queue file system at /dev/mqueue where it is absent (root only),
    so that queues a run creates with ``mq_open`` can be found by owner and swept like files.
    Returns (mounted now or before, a note)."""
    try:
        with open(mounts_file) as f:
            if any(line.split()[1:3] == [MQUEUE, "mqueue"] for line in f if line.strip()):
                return True, f"{MQUEUE} mounted"
    except OSError as e:
        return False, f"cannot read {mounts_file}: {e.strerror}"
    if os.geteuid() != 0:
        return False, f"{MQUEUE} not mounted and not root"
    try:
        os.makedirs(MQUEUE, exist_ok=True)
        done = subprocess.run(["mount", "-t", "mqueue", "mqueue", MQUEUE], check=False,
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, timeout=10)
    except (OSError, subprocess.SubprocessError) as e:
        return False, f"cannot mount {MQUEUE}: {e}"
    if done.returncode != 0:
        return False, f"cannot mount {MQUEUE}: {done.stderr.decode(errors='replace').strip()}"
    return True, f"{MQUEUE} mounted by the sandbox"
