"""Start sandboxes, run one program in each, and supervise it from the parent.

A sandbox is *prepared* (uid leased, namespaces and interpreter started, the launcher waiting
for a program on stdin) and then *used once*: the program, its limits and its stdin are written
to it, and the parent owns every verdict-relevant measurement: the wall clock, the output caps
(it reads both pipes itself and kills the run when a cap is passed, so gigabytes of output are
never buffered), the exit status and rusage (``os.wait4`` on its own child), and the cleanup.
Preparing ahead of time (runner.py) hides the start-up latency; the isolation is the same.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import selectors
import signal
import subprocess
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Protocol

from sandbox.boot import READY_FD, boot_input
from sandbox.cgroups import RunCgroup
from sandbox.cleanup import make_workdir, remove_workdir, sweep_ipc, sweep_owned_files
from sandbox.command import SECCOMP_FD, Command, Tools, build_command
from sandbox.config import Limits, MiB
from sandbox.result import Result, classify, decode_wrapper_exit
from sandbox.uids import Lease, UidPool, kill_all

_CHUNK = 1 << 16
_DRAIN_S = 0.5  # after the program ended and its uid was emptied, pipes reach EOF at once
_EXIT_WAIT_S = 2.0  # for bubblewrap to reap its namespace after we killed the namespace's init
# Until the launcher reports that the program starts, the clock allows this much on top of the
# time limit for the interpreter's start-up (which a loaded machine can stretch to seconds).
STARTUP_ALLOWANCE_S = 10.0


class Watcher(Protocol):
    """Lets a harness follow stdout while the program runs (see harness.py).

    ``deadline`` (time.monotonic) is read before every wait; reaching it ends the run with status
    ``timeout``. ``feed`` gets each stdout chunk; returning True ends the run at once (status
    ``killed``), e.g. after the first failing test. An optional ``on_start(t)`` is called when
    the program starts (after the interpreter's start-up).
    """

    deadline: float | None

    def feed(self, chunk: bytes) -> bool: ...


@dataclass
class _Stream:
    fd: int
    cap: int
    retain: bool = True  # False: a watcher consumes the data; only its size is counted
    data: bytearray = field(default_factory=bytearray)
    size: int = 0
    truncated: bool = False
    eof: bool = False

    keep: int | None = None  # retain only the last ``keep`` bytes (None: all, up to the cap)

    def add(self, chunk: bytes) -> bool:
        """Append within the cap; False once the cap is exceeded."""
        room = self.cap - self.size
        if len(chunk) > room:
            self._retain(chunk[:max(room, 0)])
            self.size = self.cap
            self.truncated = True
            return False
        self._retain(chunk)
        self.size += len(chunk)
        return True

    def _retain(self, chunk: bytes) -> None:
        if not self.retain:
            return
        self.data += chunk
        if self.keep is not None and len(self.data) > 2 * self.keep:
            del self.data[:-self.keep]  # amortised: trimmed once per `keep` bytes
            self.truncated = True


class Prepared:
    """A started sandbox waiting for its one program. Not thread-safe: one user at a time."""

    def __init__(self, backend: str, tools: Tools, limits: Limits, uid_pool: UidPool | None,
                 work_root: str | None) -> None:
        self.backend = backend
        self.tools = tools
        self.disk_mb = limits.disk_mb
        self.uid_pool = uid_pool
        self.owner_pid = os.getpid()  # a forked child must not touch its parent's sandboxes
        self.lease: Lease | None = None
        self.workdir: str | None = None
        self.cgroup: RunCgroup | None = None
        self.sup: _Supervisor | None = None
        self.used = False
        try:
            self.lease = uid_pool.acquire() if uid_pool is not None else None
            uid = self.lease.uid if self.lease is not None else None
            if backend == "none":
                self.workdir = make_workdir(work_root, uid)
            cmd = build_command(backend, tools, limits, self.workdir, uid)
            if tools.cgroups is not None and cmd.user is None:
                self.cgroup = RunCgroup.create(tools.cgroups)
                cmd = replace(cmd, argv=self.cgroup.join_argv(cmd.argv))
            self.sup = _Supervisor(cmd)
        except BaseException:
            self.discard()
            raise

    @property
    def uid(self) -> int | None:
        return self.lease.uid if self.lease is not None else None

    @property
    def alive(self) -> bool:
        """Started and still waiting (a sandbox that died while idle is useless)."""
        return self.sup is not None and not self.used and self.sup.alive()

    def run(self, limits: Limits, program: bytes, stdin: bytes | None,
            watcher: Watcher | None = None) -> Result:
        """Deliver the program and supervise it; then clean up everything of this sandbox.
        Never raises for anything the program does."""
        assert not self.used and self.sup is not None, "a prepared sandbox runs one program"
        self.used = True
        sup = self.sup
        leftovers = None
        try:
            if self.cgroup is not None:
                self.cgroup.set_limits(memory_bytes=limits.memory_mb * MiB,
                                       processes=limits.processes)
            sup.deliver(boot_input(program, limits) + (stdin or b""), limits, watcher)
            sup.supervise()
            sup.stop()
            leftovers = self._empty_uid()
            sup.drain()
            res = sup.result(self.backend, self.uid)
            if (self.cgroup is not None and self.cgroup.oom_kills()
                    and res.status in ("killed", "runtime_error")):
                res = replace(res, status="memory_limit")  # the cgroup's memory.max, not a bug
            return res
        except (OSError, subprocess.SubprocessError, ValueError) as e:
            return sandbox_error(f"{type(e).__name__}: {e}", self.backend)
        finally:
            self._release(leftovers)

    def discard(self) -> None:
        """Kill and clean up a sandbox that will not be used."""
        if self.owner_pid != os.getpid():
            return
        self.used = True
        self._release(None)

    def _empty_uid(self) -> dict[int, str]:
        assert self.sup is not None
        if self.cgroup is not None:
            self.cgroup.kill()
        if self.lease is None or self.sup.ns_emptied:
            return {}
        return kill_all(self.lease.uid)

    def _release(self, leftovers: dict[int, str] | None) -> None:
        if self.sup is not None:
            if self.sup.proc is not None and self.sup.proc.returncode is None:
                with contextlib.suppress(OSError, ValueError):  # unused, or failed half-way
                    self.sup.kill()
                    self.sup.stop()
            self.sup.close()
        if self.cgroup is not None:
            self.cgroup.kill()
        if self.lease is not None:
            if leftovers is None:
                leftovers = kill_all(self.lease.uid)
            if self.backend == "none":
                # Only without a mount namespace can the uid have written outside the work dir.
                sweep_owned_files(self.lease.uid)
                sweep_ipc(self.lease.uid)
            self.uid_pool.release(self.lease, leftovers)  # type: ignore[union-attr]
            self.lease = None
        if self.workdir is not None:
            remove_workdir(self.workdir)
            self.workdir = None
        if self.cgroup is not None:
            self.cgroup.remove(1.0)  # else removed by the next Sandbox's start (remove_stale)
            self.cgroup = None


def sandbox_error(message: str, backend: str) -> Result:
    return Result("sandbox_error", None, "", "", 0.0, 0.0, 0.0, error=message, backend=backend)


class _Supervisor:
    """The process of one sandbox, its pipes, and the parent's side of its run."""

    def __init__(self, cmd: Command) -> None:
        self.cmd = cmd
        self.proc: subprocess.Popen | None = None
        self.sel = selectors.DefaultSelector()
        self.pidfd: int | None = None
        self.status_r: int | None = None
        self.status_buf = bytearray()
        self.ns_pidfd: int | None = None  # bubblewrap's pid-namespace init
        self.child_started = not cmd.namespaces
        # True once the namespace is known to be empty (then no process of the uid can remain):
        # bubblewrap only exits after its child, the namespace's init, and the kernel empties a
        # pid namespace before its init is gone.
        self.ns_emptied = False
        self.limits = Limits()
        self.watcher: Watcher | None = None
        self.out: _Stream | None = None
        self.err: _Stream | None = None
        self.stdin_view: memoryview | None = None
        self.kill_reason: str | None = None
        self.exited = False
        self.ready_r: int | None = None
        self.started = False  # the launcher reported that the program starts
        self.t_deliver = self.t0 = self.t_end = 0.0
        self.rusage = None
        self._start()

    def _start(self) -> None:
        self.ready_r, ready_w = os.pipe()
        fds = {READY_FD: str(ready_w)}
        pass_fds: tuple[int, ...] = (ready_w,)
        status_w = None
        if self.cmd.namespaces:
            self.status_r, status_w = os.pipe()
            fds["{status_fd}"] = str(status_w)
            pass_fds += (status_w,)
        seccomp_r = None
        if SECCOMP_FD in self.cmd.argv:
            # A few hundred bytes: the pipe holds them all, so bubblewrap reads them at leisure.
            seccomp_r, seccomp_w = os.pipe()
            try:
                os.write(seccomp_w, self.cmd.seccomp)
            finally:
                os.close(seccomp_w)
            fds[SECCOMP_FD] = str(seccomp_r)
            pass_fds += (seccomp_r,)
        argv = [fds.get(a, a) for a in self.cmd.argv]
        ids = {}
        if self.cmd.user is not None:
            ids = {"user": self.cmd.user, "group": self.cmd.user, "extra_groups": []}
        try:
            self.proc = _spawner.spawn(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                cwd=self.cmd.cwd, env={}, close_fds=True, pass_fds=pass_fds,
                start_new_session=True, **ids,
            )
        finally:
            for fd in (status_w, ready_w, seccomp_r):
                if fd is not None:
                    os.close(fd)
        self.pidfd = os.pidfd_open(self.proc.pid)
        self.sel.register(self.pidfd, selectors.EVENT_READ, "exit")
        if self.status_r is not None:
            os.set_blocking(self.status_r, False)
            self.sel.register(self.status_r, selectors.EVENT_READ, "status")
        os.set_blocking(self.ready_r, False)
        self.sel.register(self.ready_r, selectors.EVENT_READ, "ready")

    def alive(self) -> bool:
        if self.proc is None or self.pidfd is None:
            return False
        with selectors.DefaultSelector() as sel:
            sel.register(self.pidfd, selectors.EVENT_READ)
            return not sel.select(0)

    # -- run -----------------------------------------------------------------------------------
    def deliver(self, data: bytes, limits: Limits, watcher: Watcher | None) -> None:
        assert self.proc is not None
        self.limits = limits
        self.watcher = watcher
        cap = limits.output_bytes
        retain = getattr(watcher, "retain_stdout", True)
        self.out = _Stream(self.proc.stdout.fileno(), cap, retain)  # type: ignore[union-attr]
        # A watcher may keep stderr to a smaller tail (one test's cap in a batch of tests).
        keep = getattr(watcher, "stderr_keep", cap)
        self.err = _Stream(self.proc.stderr.fileno(), cap, keep=keep)  # type: ignore[union-attr]
        for s in (self.out, self.err):
            os.set_blocking(s.fd, False)
            self.sel.register(s.fd, selectors.EVENT_READ, s)
        self.stdin_view = memoryview(data)
        fd = self.proc.stdin.fileno()  # type: ignore[union-attr]
        os.set_blocking(fd, False)
        self.sel.register(fd, selectors.EVENT_WRITE, "stdin")
        self.t_deliver = self.t0 = time.monotonic()

    def supervise(self) -> None:
        while not self.exited and self.kill_reason is None:
            due = self.t0 + self.limits.timeout_s
            if not self.started:
                due += STARTUP_ALLOWANCE_S
            if self.watcher is not None and self.watcher.deadline is not None:
                due = min(due, self.watcher.deadline)
            left = due - time.monotonic()
            if left <= 0:
                self.kill_reason = "timeout"
                break
            for key, _ in self.sel.select(left):
                self._handle(key.data)
                if self.kill_reason is not None:
                    break
        self.t_end = time.monotonic()

    def _handle(self, tag: object) -> None:
        if tag == "exit":
            self.exited = True
            self.sel.unregister(self.pidfd)
        elif tag == "ready":
            self._read_ready()
        elif tag == "status":
            self._read_status()
        elif tag == "stdin":
            self._write_stdin()
        else:
            self._read_stream(tag)  # type: ignore[arg-type]

    def _read_ready(self) -> None:
        assert self.ready_r is not None
        try:
            data = os.read(self.ready_r, 1)
        except BlockingIOError:
            return
        self.sel.unregister(self.ready_r)
        if data == b"!" and not self.started:  # (EOF: it died before starting the program)
            self.started = True
            self.t0 = time.monotonic()
            on_start = getattr(self.watcher, "on_start", None)
            if on_start is not None:
                on_start(self.t0)

    def _read_stream(self, stream: _Stream) -> None:
        try:
            chunk = os.read(stream.fd, _CHUNK)
        except BlockingIOError:
            return
        if not chunk:
            self.sel.unregister(stream.fd)
            stream.eof = True
            return
        if not stream.add(chunk):
            self.kill_reason = self.kill_reason or "output_limit"
            return
        if stream is self.out and self.watcher is not None and self.watcher.feed(chunk):
            self.kill_reason = self.kill_reason or "caller"

    def _write_stdin(self) -> None:
        assert self.proc is not None and self.stdin_view is not None
        fd = self.proc.stdin.fileno()  # type: ignore[union-attr]
        try:
            n = os.write(fd, self.stdin_view[:_CHUNK])
            self.stdin_view = self.stdin_view[n:]
        except BlockingIOError:
            return
        except OSError:  # the program closed stdin or exited: the rest is not wanted
            self.stdin_view = self.stdin_view[:0]
        if not len(self.stdin_view):
            self.sel.unregister(fd)
            self.proc.stdin.close()  # type: ignore[union-attr]

    def _read_status(self) -> None:
        assert self.status_r is not None
        try:
            chunk = os.read(self.status_r, _CHUNK)
        except BlockingIOError:
            return
        if not chunk:
            self.sel.unregister(self.status_r)
            return
        self.status_buf += chunk
        while b"\n" in self.status_buf:
            line, _, rest = bytes(self.status_buf).partition(b"\n")
            self.status_buf = bytearray(rest)
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if "child-pid" in doc and self.ns_pidfd is None:
                self.child_started = True
                self._open_ns_init(int(doc["child-pid"]))

    def _open_ns_init(self, pid: int) -> None:
        """pidfd of bubblewrap's namespace init, kept only if it is still bubblewrap's child
        (so a recycled pid can never make us kill an unrelated process)."""
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            return
        try:
            with open(f"/proc/{pid}/status") as f:
                ppid = next((ln.split()[1] for ln in f if ln.startswith("PPid:")), None)
        except OSError:
            ppid = None
        if self.proc is not None and ppid == str(self.proc.pid):
            self.ns_pidfd = fd
        else:
            os.close(fd)

    # -- stop ------------------------------------------------------------------------------
    def kill(self) -> None:
        """Ask for the run to end now (used for sandboxes that are discarded unused)."""
        self.kill_reason = self.kill_reason or "caller"

    def stop(self) -> None:
        """Kill what is left of the run and reap our child (collecting its rusage)."""
        assert self.proc is not None and self.pidfd is not None
        if self.cmd.namespaces and not self.exited and self.ns_pidfd is None:
            self._await_ns_init()
        if self.exited:
            self.ns_emptied = self.cmd.namespaces
        elif self.ns_pidfd is not None:
            # Killing the namespace's init makes the kernel kill everything in the namespace;
            # bubblewrap, still alive, then reaps it and exits. Killing bubblewrap first would
            # orphan the init to the host's pid 1 instead.
            _pidfd_kill(self.ns_pidfd)
            self.exited = self.ns_emptied = _wait_readable(self.pidfd, _EXIT_WAIT_S)
        # The leader is not reaped yet, so its pgid cannot have been reused.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        if not self.exited and not _wait_readable(self.pidfd, 5.0):
            _pidfd_kill(self.pidfd)
            _wait_readable(self.pidfd, 5.0)
        pid, status, rusage = os.wait4(self.proc.pid, os.WNOHANG)
        if pid == 0:  # never wait without a deadline: report it as the sandbox's failure
            raise OSError(f"sandbox process {self.proc.pid} did not exit after SIGKILL")
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        self.rusage = rusage
        if not self.t_end:
            self.t_end = time.monotonic()

    def _await_ns_init(self, patience_s: float = 2.0) -> None:
        """Get the namespace init's pid before killing anything. bubblewrap reports it just
        before letting its child proceed; killed earlier, bubblewrap would leave the child
        blocked forever on that go-ahead (a sandbox stopped right after it was started)."""
        assert self.pidfd is not None and self.status_r is not None
        deadline = time.monotonic() + patience_s
        with selectors.DefaultSelector() as sel:
            sel.register(self.status_r, selectors.EVENT_READ)
            sel.register(self.pidfd, selectors.EVENT_READ)
            while self.ns_pidfd is None and time.monotonic() < deadline:
                events = sel.select(deadline - time.monotonic())
                if any(key.fd == self.pidfd for key, _ in events):
                    break  # bubblewrap ended (e.g. a setup failure)
                with contextlib.suppress(OSError):
                    self._read_status()
                if not events:
                    break

    def drain(self) -> None:
        """Read what is still in the pipes (the writers are dead by now), within the caps."""
        open_fds = {s.fd for s in (self.out, self.err) if s is not None and not s.eof}
        deadline = time.monotonic() + _DRAIN_S
        while open_fds:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for key, _ in self.sel.select(left):
                if isinstance(key.data, _Stream) and key.data.fd in open_fds:
                    stream = key.data
                    try:
                        chunk = os.read(stream.fd, _CHUNK)
                    except BlockingIOError:
                        continue
                    if not chunk:
                        self.sel.unregister(stream.fd)
                        stream.eof = True
                        open_fds.discard(stream.fd)
                        continue
                    if not stream.add(chunk):
                        self.kill_reason = self.kill_reason or "output_limit"
                    elif stream is self.out and self.watcher is not None:
                        self.watcher.feed(chunk)
                elif key.data == "status":
                    self._read_status()
                elif key.data == "ready":
                    self._read_ready()
                elif key.data == "stdin":
                    self.sel.unregister(key.fd)

    def result(self, backend: str, uid: int | None) -> Result:
        assert self.proc is not None and self.out is not None and self.err is not None
        code = self.proc.returncode
        if backend != "none" and code is not None and code > 0:
            code = decode_wrapper_exit(code)
        stderr = self.err.data.decode("utf-8", "replace")
        ru = self.rusage
        cpu = (ru.ru_utime + ru.ru_stime) if ru is not None else 0.0
        rss = (ru.ru_maxrss / 1024.0) if ru is not None else 0.0
        error = None
        if not self.child_started and self.kill_reason is None:
            # bubblewrap failed before starting the program (its message is on stderr).
            status = "sandbox_error"
            error = stderr.strip()[-2000:] or f"bubblewrap exited with {code}"
        else:
            status = classify(kill_reason=self.kill_reason, exit_code=code, stderr=stderr,
                              cpu_s=cpu, cpu_limit_s=self.limits.cpu_limit_s)
        return Result(
            status=status, exit_code=code, stdout=self.out.data.decode("utf-8", "replace"),
            stderr=stderr, wall_s=max(0.0, self.t_end - self.t0), cpu_s=cpu, max_rss_mb=rss,
            stdout_truncated=self.out.truncated, stderr_truncated=self.err.truncated,
            error=error, uid=uid, backend=backend,
        )

    def close(self) -> None:
        self.sel.close()
        for fd in (self.pidfd, self.ns_pidfd, self.status_r, self.ready_r):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.pidfd = self.ns_pidfd = self.status_r = self.ready_r = None
        if self.proc is not None:
            for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
                if f is not None:
                    with contextlib.suppress(OSError):
                        f.close()
            if self.proc.returncode is None:  # failed half-way: do not leave a zombie
                with contextlib.suppress(OSError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(timeout=5.0)


class _Spawner:
    """Starts every sandbox from one long-lived thread.

    bubblewrap's --die-with-parent uses PR_SET_PDEATHSIG, whose "parent" is the *thread* that
    forked: a sandbox started from a worker thread would be SIGKILLed when that thread ends
    (a pre-started sandbox waiting for its program, typically). From this thread, sandboxes die
    with the process, not with a worker.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue | None = None
        self._pid = -1

    def spawn(self, argv: list[str], **kwargs) -> subprocess.Popen:  # type: ignore[no-untyped-def]
        done: Future = Future()
        self._queue_for_this_process().put((done, argv, kwargs))
        return done.result()

    def _queue_for_this_process(self) -> queue.SimpleQueue:
        with self._lock:
            if self._queue is None or self._pid != os.getpid():  # new, or inherited by fork
                self._queue = queue.SimpleQueue()
                self._pid = os.getpid()
                threading.Thread(target=self._serve, args=(self._queue,), daemon=True,
                                 name="sandbox-spawner").start()
            return self._queue

    @staticmethod
    def _serve(q: queue.SimpleQueue) -> None:
        while True:
            done, argv, kwargs = q.get()
            try:
                done.set_result(subprocess.Popen(argv, **kwargs))
            except BaseException as e:  # handed to the caller
                done.set_exception(e)


_spawner = _Spawner()


def _pidfd_kill(fd: int) -> None:
    with contextlib.suppress(ProcessLookupError, OSError):
        signal.pidfd_send_signal(fd, signal.SIGKILL)


def _wait_readable(fd: int, timeout: float) -> bool:
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        return bool(sel.select(timeout))


def execute(
    backend: str,
    tools: Tools,
    limits: Limits,
    program: bytes,
    stdin: bytes | None,
    *,
    uid_pool: UidPool | None,
    work_root: str | None,
    watcher: Watcher | None = None,
) -> Result:
    """Prepare a sandbox and run ``program`` in it at once. Never raises for anything the
    program does; failures of the sandbox itself come back as status ``sandbox_error``."""
    try:
        prep = Prepared(backend, tools, limits, uid_pool, work_root)
    except (OSError, RuntimeError, ValueError, subprocess.SubprocessError) as e:
        return sandbox_error(f"cannot start the sandbox: {type(e).__name__}: {e}", backend)
    return prep.run(limits, program, stdin, watcher)
