"""JSONL reading with line numbers, and writers that never leave half a file behind.

Two ways to write: ``write_jsonl_atomic`` for whole files (temp file in the same directory,
fsync, rename), and ``AppendLog`` for long resumable runs, where each finished batch is
appended and flushed so a kill loses at most the batch in flight and a torn last line is
dropped (and reported) on the next read.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from mopd_eval.errors import InputError


def _json_default(obj: Any) -> Any:
    # numpy scalars and paths show up in records written by analysis code.
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def dumps(obj: Any) -> str:
    """One compact JSON line; NaN/inf become null so every reader can parse the file."""
    return json.dumps(_finite(obj), ensure_ascii=False, default=_json_default)


def _finite(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def read_bytes(path: str | Path) -> bytes:
    """The bytes of ``path``, gunzipped when they start with gzip's magic (whatever the name).

    A missing file, a directory or an unreadable gzip stream is one ``InputError`` naming it.
    """
    path = Path(path)
    if not path.exists():
        raise InputError("file not found", path=path)
    if path.is_dir():
        raise InputError("is a directory, expected a file", path=path)
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as e:
            raise InputError(f"gzip data that cannot be decompressed ({e})", path=path) from None
    return data


def iter_jsonl(path: str | Path, *, allow_torn_tail: bool = False) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, object)`` for each non-blank line (1-based line numbers).

    Raises ``InputError`` naming file and line for a line that is not UTF-8 or not a JSON object
    (gzip files are read as they are). With ``allow_torn_tail`` a last line without a trailing
    newline that does not parse is treated as the remains of a killed writer and skipped (used
    by resumable logs).
    """
    path = Path(path)
    lines = read_bytes(path).splitlines(keepends=True)
    for i, raw_bytes in enumerate(lines, start=1):
        torn = allow_torn_tail and i == len(lines) and not raw_bytes.endswith(b"\n")
        try:
            raw = raw_bytes.decode("utf-8")
        except UnicodeDecodeError as e:
            if torn:
                return
            raise InputError(f"not UTF-8 text (byte {e.start} of the line)", path=path, line=i) from None
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as e:
            if torn:
                return
            raise InputError(f"malformed JSON ({e.msg} at column {e.colno})", path=path, line=i) from None
        except RecursionError:
            raise InputError("JSON nested too deeply", path=path, line=i) from None
        if not isinstance(obj, dict):
            raise InputError(f"expected a JSON object, got {type(obj).__name__}", path=path, line=i)
        yield i, obj


def read_jsonl(path: str | Path) -> list[dict]:
    return [obj for _, obj in iter_jsonl(path)]


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temp file and a rename: readers see old or new, never half."""
    write_bytes_atomic(path, text.encode("utf-8"))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates 0600; give the file the mode a plain open() would have.
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_jsonl_atomic(path: str | Path, rows: Iterable[dict]) -> int:
    """Write rows as JSONL atomically; returns the number of rows written."""
    lines = [dumps(r) for r in rows]
    write_text_atomic(path, "".join(line + "\n" for line in lines))
    return len(lines)


def write_json_atomic(path: str | Path, obj: Any, *, indent: int = 2) -> None:
    write_text_atomic(path, json.dumps(_finite(obj), indent=indent, ensure_ascii=False, default=_json_default) + "\n")


class AppendLog:
    """Append-only JSONL for resumable runs: ``done`` holds the rows already on disk.

    A torn last line (a kill mid-write) is cut off when the log is opened, so appends never
    glue onto half a record.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.done: list[dict] = []
        if self.path.exists():
            self.done = [obj for _, obj in iter_jsonl(self.path, allow_torn_tail=True)]
            self._truncate_torn_tail()

    def _truncate_torn_tail(self) -> None:
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            cut = data.rfind(b"\n") + 1
            with self.path.open("r+b") as f:
                f.truncate(cut)

    def append(self, rows: Iterable[dict]) -> None:
        text = "".join(dumps(r) + "\n" for r in rows)
        if not text:
            return
        with self.path.open("a", encoding="utf-8") as f:
            if _fault_kill_due():
                _torn_write_and_die(f, text)
            f.write(text)
            f.flush()
            os.fsync(f.fileno())


# Fault injection for the kill-and-resume tests (tests/test_kill_resume.py): with
# MOPD_EVAL_FAULT_KILL_AT_APPEND=N the N-th non-empty append of the process writes half its
# bytes and the process SIGKILLs itself, the worst moment a real kill can hit. Unset, it costs
# one dictionary lookup per append.
_appends = 0


def _fault_kill_due() -> bool:
    global _appends
    at = os.environ.get("MOPD_EVAL_FAULT_KILL_AT_APPEND")
    if not at:
        return False
    _appends += 1
    return _appends == int(at)


def _torn_write_and_die(f, text: str) -> None:
    import signal

    f.write(text[: max(1, len(text) // 2)])
    f.flush()
    os.fsync(f.fileno())
    os.kill(os.getpid(), signal.SIGKILL)
