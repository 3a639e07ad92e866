"""Read a task's local data file (JSONL, JSONL.gz, JSON list, parquet) as located records.

Every record keeps where it came from, so a record in the wrong schema is reported by file and
line (JSON and JSONL) or row (parquet, which has no lines).
"""

from __future__ import annotations

import gzip
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mopd_eval.errors import InputError
from mopd_eval.jsonl import iter_jsonl

FORMATS = (".jsonl", ".jsonl.gz", ".json", ".parquet")


@dataclass(frozen=True)
class Record:
    """One object of a data file: ``index`` is its 0-based position among the file's records,
    ``line`` its 1-based first line (None for parquet)."""

    path: str
    index: int
    line: int | None
    data: dict

    def error(self, message: str, field: str | None = None) -> InputError:
        """An ``InputError`` pointing at this record."""
        if self.line is None:
            message = f"row {self.index} (0-based): {message}"
        return InputError(message, path=self.path, line=self.line, field=field)

    def require(self, *names: str) -> Any:
        """The value of the first of ``names`` present (aliases of one field); InputError if none."""
        for name in names:
            if name in self.data and self.data[name] is not None:
                return self.data[name]
        alt = f" (or {', '.join(repr(n) for n in names[1:])})" if len(names) > 1 else ""
        raise self.error(f"missing{alt}", field=names[0])

    def get(self, *names: str, default: Any = None) -> Any:
        for name in names:
            if name in self.data and self.data[name] is not None:
                return self.data[name]
        return default


def read_records(path: str | Path) -> list[Record]:
    """All records of ``path``, chosen by suffix: ``.jsonl`` (one object a line), ``.jsonl.gz``,
    ``.json`` (a list of objects), ``.parquet`` (needs pyarrow).

    Raises ``InputError`` naming file and line for a missing file, malformed JSON, a JSON file
    that is not a list of objects, or an unknown suffix.
    """
    path = Path(path)
    if not path.exists():
        raise InputError("file not found", path=path)
    name = path.name.lower()
    if name.endswith(".jsonl"):
        return [Record(str(path), i, line, obj) for i, (line, obj) in enumerate(iter_jsonl(path))]
    if name.endswith(".jsonl.gz"):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            return list(_jsonl_lines(path, f.read()))
    if name.endswith(".json"):
        return list(_json_list(path, path.read_text(encoding="utf-8")))
    if name.endswith(".parquet"):
        return _parquet(path)
    raise InputError(f"unknown data file type; expected one of {', '.join(FORMATS)}", path=path)


def _jsonl_lines(path: Path, text: str) -> Iterator[Record]:
    index = 0
    for line_no, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as e:
            raise InputError(f"malformed JSON ({e.msg} at column {e.colno})", path=path, line=line_no) from None
        if not isinstance(obj, dict):
            raise InputError(f"expected a JSON object, got {type(obj).__name__}", path=path, line=line_no)
        yield Record(str(path), index, line_no, obj)
        index += 1


def _json_list(path: Path, text: str) -> Iterator[Record]:
    # Decoded element by element (rather than json.loads of the whole file) so that each record
    # knows its line and a schema error can name it.
    dec = json.JSONDecoder()
    n = len(text)

    def skip(pos: int) -> int:
        while pos < n and text[pos] in " \t\r\n":
            pos += 1
        return pos

    def fail(msg: str, pos: int) -> InputError:
        return InputError(msg, path=path, line=text.count("\n", 0, pos) + 1)

    pos = skip(0)
    if pos >= n or text[pos] != "[":
        raise fail("expected a JSON list of objects (a file starting with '[')", pos)
    pos = skip(pos + 1)
    index = 0
    if pos < n and text[pos] == "]":
        return
    while True:
        try:
            obj, end = dec.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            raise InputError(f"malformed JSON ({e.msg} at column {e.colno})", path=path, line=e.lineno) from None
        if not isinstance(obj, dict):
            raise fail(f"expected a JSON object, got {type(obj).__name__}", pos)
        yield Record(str(path), index, text.count("\n", 0, pos) + 1, obj)
        index += 1
        pos = skip(end)
        if pos < n and text[pos] == ",":
            pos = skip(pos + 1)
            continue
        if pos < n and text[pos] == "]":
            if skip(pos + 1) != n:
                raise fail("unexpected text after the closing ']'", skip(pos + 1))
            return
        raise fail("malformed JSON (expected ',' or ']' between records)", pos)


def _parquet(path: Path) -> list[Record]:
    import pandas as pd

    try:
        frame = pd.read_parquet(path)
    except ImportError as e:
        raise InputError(f"reading parquet needs pyarrow ({e}); pip install pyarrow, or convert to JSONL", path=path) from None
    except Exception as e:  # pyarrow raises its own types for a corrupt file
        raise InputError(f"not a readable parquet file ({type(e).__name__}: {e})", path=path) from None
    return [Record(str(path), i, None, _plain(row)) for i, row in enumerate(frame.to_dict(orient="records"))]


def _plain(obj: Any) -> Any:
    # parquet nested columns come back as numpy arrays and scalars; the tasks expect JSON types.
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if hasattr(obj, "tolist"):
        return _plain(obj.tolist())
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    if isinstance(obj, float) and math.isnan(obj):  # pandas' missing value in a column
        return None
    return obj
