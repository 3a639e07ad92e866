"""The public entry point: ``Sandbox(config).run(program, stdin, limits) -> Result``."""

from __future__ import annotations

import os
import subprocess
import threading
import weakref

from sandbox.config import Limits, SandboxConfig
from sandbox.detect import Setup, default_lock_dir, detect, unusable, warn_once
from sandbox.execute import Prepared, Watcher, sandbox_error
from sandbox.result import Result
from sandbox.uids import UidPool, kill_orphaned_sandboxes


class Sandbox:
    """Runs untrusted Python programs with every isolation layer the machine allows.

    Detection happens on first use (about 0.1 s) and is reported by ``python -m sandbox doctor``;
    missing layers produce a warning once per process. Instances are safe to share between
    threads; runs from different threads or processes never share a uid.

    Pre-started sandboxes (``SandboxConfig.prestart``): from the second run on, each run also
    starts the sandbox for a later run, so that its namespaces and fresh interpreter come up
    while the current program runs; at most one is kept waiting per concurrent caller. A
    waiting sandbox has its own uid, namespaces and interpreter and receives exactly one
    program. ``close()`` (also run at exit) stops the waiting ones.
    """

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.config = config if config is not None else SandboxConfig.from_env()
        self._setup: Setup | None = None
        self._lock = threading.Lock()
        self._pool: UidPool | None = None
        self._idle: dict[int, list[Prepared]] = {}  # disk_mb -> waiting sandboxes
        self._runs = 0
        self._in_flight = 0
        # Stops the waiting sandboxes when this object is garbage-collected or at exit, whichever
        # comes first (the finalizer holds the list, not the Sandbox).
        self._finalizer = weakref.finalize(self, _discard_idle, self._idle, self._lock)

    @property
    def setup(self) -> Setup:
        """The detected setup (detects on first access; warns once about missing layers)."""
        return self.get_setup(warn=True)

    def get_setup(self, *, warn: bool = True) -> Setup:
        with self._lock:
            if self._setup is None:
                try:
                    if os.geteuid() == 0:
                        self._pool = UidPool(self.config.uid_base, self.config.uid_count,
                                             default_lock_dir())
                        # Leftovers of processes that died while running sandboxes.
                        kill_orphaned_sandboxes()
                        self._pool.recover()
                    self._setup = detect(self.config, self._pool)
                except (OSError, RuntimeError) as e:
                    self._setup = unusable(self.config, f"{type(e).__name__}: {e}")
            setup = self._setup
        if warn:
            warn_once(setup.warnings)
        return setup

    @property
    def uid_pool(self) -> UidPool | None:
        self.get_setup(warn=False)
        return self._pool

    def run(
        self,
        program: str | bytes,
        stdin: str | bytes | None = None,
        limits: Limits | None = None,
        *,
        watcher: Watcher | None = None,
    ) -> Result:
        """Run ``program`` (Python source, executed as ``main.py`` in a fresh interpreter) with
        ``stdin`` (None: empty) under ``limits`` (None: defaults). Never raises for anything the
        program does; see :class:`sandbox.result.Result` for the statuses."""
        setup = self.setup
        limits = limits if limits is not None else Limits()
        if setup.error:
            return sandbox_error(setup.error, setup.backend)
        data = program.encode("utf-8") if isinstance(program, str) else program
        inp = stdin.encode("utf-8") if isinstance(stdin, str) else stdin
        with self._lock:
            self._runs += 1
            self._in_flight += 1
        try:
            prep = self._take(limits.disk_mb)
            if prep is None:
                try:
                    prep = self._prepare(setup, limits)
                except (OSError, RuntimeError, ValueError, subprocess.SubprocessError) as e:
                    return sandbox_error(f"cannot start the sandbox: {type(e).__name__}: {e}",
                                         setup.backend)
            self._replenish(setup, limits)
            return prep.run(limits, data, inp, watcher)
        finally:
            with self._lock:
                self._in_flight -= 1

    def close(self) -> None:
        """Stop the pre-started sandboxes that are still waiting."""
        _discard_idle(self._idle, self._lock)

    def _prepare(self, setup: Setup, limits: Limits) -> Prepared:
        return Prepared(setup.backend, setup.tools, limits, self._pool, self.config.work_root)

    def _take(self, disk_mb: int) -> Prepared | None:
        dead = []
        found = None
        with self._lock:
            waiting = self._idle.get(disk_mb, [])
            while waiting:
                prep = waiting.pop()
                if prep.owner_pid != os.getpid():
                    continue  # inherited through fork: the parent's, not ours to use or stop
                if prep.alive:
                    found = prep
                    break
                dead.append(prep)
        for prep in dead:
            prep.discard()
        return found

    def _replenish(self, setup: Setup, limits: Limits) -> None:
        if not self.config.prestart:
            return
        with self._lock:
            waiting = len(self._idle.get(limits.disk_mb, []))
            if self._runs < 2 or waiting >= self._in_flight:
                return
        try:
            prep = self._prepare(setup, limits)
        except (OSError, RuntimeError, ValueError, subprocess.SubprocessError):
            return  # the run itself will report any real problem
        with self._lock:
            self._idle.setdefault(limits.disk_mb, []).append(prep)


def _discard_idle(idle: dict[int, list[Prepared]], lock: threading.Lock) -> None:
    with lock:
        waiting = [p for lst in idle.values() for p in lst]
        idle.clear()
    for prep in waiting:
        prep.discard()


_default: Sandbox | None = None
_default_lock = threading.Lock()


def default_sandbox() -> Sandbox:
    """The process-wide sandbox configured from the environment (``MOPD_SANDBOX_*``)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Sandbox()
        return _default


def run(program: str | bytes, stdin: str | bytes | None = None,
        limits: Limits | None = None) -> Result:
    """``default_sandbox().run(...)``."""
    return default_sandbox().run(program, stdin, limits)
