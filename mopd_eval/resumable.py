"""One resumable run: a content key, a lock, an append log, and an atomic finish.

Every long command (``signal``, ``rollouts``, ``bench``) writes its results through a
``ResumableRun``:

* **key**: a dict of everything that determines the results (data file sha256, resolved template
  texts and condition definitions, model identity, engine, dtype, sampling parameters, seeds).
  It is stored in the run record beside the log with its sha256. A rerun whose key differs is
  refused (``InputError``, exit 2) naming each changed entry and the two ways on: ``--rescore``
  (start over) or a new ``--out``. Keys named in ``extendable`` hold mappings that may *grow*
  between runs (more conditions scored into the same study): entries present in both runs must
  agree, new entries are added to the record.
* **lock**: one process at a time per run; a second one is refused at once, naming the holder.
* **log**: ``jsonl.AppendLog``; a torn last line from a kill is dropped when the run reopens.
* **finish**: the log becomes the final file by one ``os.replace`` (``final_path``), so a reader
  sees the finished file or nothing.

Nothing is written until ``start()`` is called, so a command checks its inputs and loads its model
first and a failure there leaves no record behind that would block the corrected rerun.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from mopd_eval.errors import InputError
from mopd_eval.jsonl import AppendLog, iter_jsonl, write_json_atomic, write_jsonl_atomic


def file_sha256(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def key_sha256(key: Mapping[str, Any]) -> str:
    """Canonical hash of a run key (sorted keys, compact separators)."""
    text = json.dumps(key, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _short(v: Any, width: int = 80) -> str:
    s = json.dumps(v, sort_keys=True, default=str)
    return s if len(s) <= width else s[: width - 3] + "..."


def key_changes(old: Mapping[str, Any], new: Mapping[str, Any], extendable: Sequence[str] = ()) -> list[str]:
    """What differs between two run keys, one readable item per changed entry.

    An ``extendable`` entry is a mapping: only names present in both that differ count.
    """
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if k in extendable and isinstance(a, Mapping) and isinstance(b, Mapping):
            out += [f"{k}.{name}: {_short(a[name])} -> {_short(b[name])}"
                    for name in sorted(set(a) & set(b)) if a[name] != b[name]]
        elif a != b:
            out.append(f"{k}: {_short(a)} -> {_short(b)}")
    return out


def merge_keys(old: Mapping[str, Any], new: Mapping[str, Any], extendable: Sequence[str]) -> dict:
    """``new`` with each extendable mapping grown by the entries only ``old`` had."""
    out = dict(new)
    for k in extendable:
        if isinstance(old.get(k), Mapping) and isinstance(new.get(k), Mapping):
            out[k] = {**old[k], **new[k]}
    return out


class RunLock:
    """One writer per output: a second process is refused at once, naming the holder.

    The lock is ``fcntl``-based (``filelock``), so a killed holder never leaves a stale lock. A
    folder that did not exist before is removed again on release when the run wrote nothing
    else into it, so a run that fails before its first result leaves nothing behind.
    """

    def __init__(self, path: str | Path, *, what: str = "run", flag: str = "--out") -> None:
        self.path, self.what, self.flag = Path(path), what, flag
        self.owner = self.path.with_name(self.path.name + ".owner")
        self._lock: FileLock | None = None
        self._made: list[Path] = []

    def acquire(self) -> None:
        missing = [p for p in [self.path.parent, *self.path.parent.parents] if not p.exists()]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._made = missing  # innermost first
        lock = FileLock(self.path, timeout=0)
        try:
            lock.acquire()
        except Timeout:
            holder = self.owner.read_text().strip() if self.owner.exists() else "unknown"
            raise InputError(f"another {self.what} is writing here ({holder}); wait for it or use another "
                             f"{self.flag}", path=self.path.parent) from None
        self._lock = lock
        self.owner.write_text(f"pid {os.getpid()} on {socket.gethostname()}: {' '.join(sys.argv)[:200]}\n")

    def release(self) -> None:
        if self._lock is None:
            return
        self.owner.unlink(missing_ok=True)
        self._lock.release()
        self._lock = None
        for d in self._made:
            left = [p for p in d.iterdir()] if d.exists() else []
            if left and left != [self.path]:
                break
            self.path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                d.rmdir()

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class ResumableRun:
    """A long run whose rows are appended to ``log_path`` under the content ``key``.

    ``record_path`` holds ``{"key", "key_sha256"}``. With ``final_path`` the finished log is
    renamed there by ``finish()``; the record stays, so a rerun of a finished run is recognised
    (``finished``) and checked against its key too. Use as a context manager: ``start()`` inside.
    """

    def __init__(self, log_path: str | Path, record_path: str | Path, key: Mapping[str, Any], *,
                 final_path: str | Path | None = None, extendable: Sequence[str] = (),
                 what: str = "run", flag: str = "--out") -> None:
        self.log_path, self.record_path = Path(log_path), Path(record_path)
        self.final_path = Path(final_path) if final_path is not None else None
        self.key, self.extendable, self.what, self.flag = dict(key), tuple(extendable), what, flag
        self._lock = RunLock(self.record_path.with_name(self.record_path.name + ".lock"), what=what, flag=flag)
        self._log: AppendLog | None = None
        self._record_pending = False  # written with the first results, so a failed start leaves none
        self.recovered_rows = 0  # rows found on disk from an earlier, interrupted run

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> ResumableRun:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    # ---- record and log -------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        return self.final_path is not None and self.final_path.exists() and not self.log_path.exists()

    def discard(self) -> None:
        """Forget every result of this run (``--rescore``); ``start(fresh=True)`` calls it under the lock."""
        for p in (self.log_path, self.record_path, self.final_path):
            if p is not None:
                p.unlink(missing_ok=True)

    def start(self, *, fresh: bool = False) -> list[dict]:
        """Lock, check the key against an earlier run's record, return the rows already done.

        The record itself is written with the first appended rows (or at ``finish``), so a run that
        fails before producing anything leaves no record to block its corrected rerun.
        """
        self._lock.acquire()
        try:
            if fresh:
                self.discard()
            self._check_record()
            if self.finished:
                return [obj for _, obj in iter_jsonl(self.final_path)]
            self._log = AppendLog(self.log_path)
            self.recovered_rows = len(self._log.done)
            return list(self._log.done)
        except BaseException:
            self.release()
            raise

    def _check_record(self) -> None:
        results = [p for p in (self.log_path, self.final_path) if p is not None and p.exists()]
        if not self.record_path.exists():
            if results:
                raise InputError(f"results without their run record {self.record_path.name}; delete them or "
                                 f"use another {self.flag}", path=results[0])
            self._record_pending = True
            return
        try:
            record = json.loads(self.record_path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            record = None
        if not isinstance(record, dict):
            raise InputError("unreadable run record; delete it (and the results beside it) or use "
                             f"another {self.flag}", path=self.record_path) from None
        # A record from before content keys holds the settings themselves: compare them as a key.
        old = record["key"] if isinstance(record.get("key"), dict) else record
        changes = key_changes(old, self.key, self.extendable)
        if changes:
            raise InputError(
                f"this {self.what} was started with other settings: " + "; ".join(changes)
                + f". Rerun with --rescore to start over, or use a new {self.flag}", path=self.record_path)
        merged = merge_keys(old, self.key, self.extendable)
        self._record_pending = merged != old
        self.key = merged

    def _write_record(self) -> None:
        if self._record_pending:
            write_json_atomic(self.record_path, {"key": self.key, "key_sha256": key_sha256(self.key)})
            self._record_pending = False

    def append(self, rows: Iterable[dict]) -> None:
        if self._log is None:
            raise RuntimeError("append() before start() or after finish()")
        rows = list(rows)
        if rows:
            self._write_record()
        self._log.append(rows)

    def rewrite(self, rows: Iterable[dict]) -> None:
        """Replace the log's rows (atomic): recovery drops rows a kill left incomplete."""
        if self._log is None:
            raise RuntimeError("rewrite() before start() or after finish()")
        kept = list(rows)
        write_jsonl_atomic(self.log_path, kept)
        self._log = AppendLog(self.log_path)
        self.recovered_rows = len(kept)

    def finish(self) -> Path:
        """Move the log to ``final_path`` (atomic); returns the file holding the results."""
        if self.final_path is None or self.finished:
            return self.final_path or self.log_path
        if self._log is None:
            raise RuntimeError("finish() before start()")
        self._write_record()
        if not self.log_path.exists():  # nothing was left to do: an empty but finished run
            self.log_path.touch()
        os.replace(self.log_path, self.final_path)
        self._log = None
        return self.final_path
