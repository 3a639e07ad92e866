"""A task's ``--data`` value -> located records, and bad records -> ``invalid_test`` problems.

``--data`` (passed to ``Task.load`` unchanged) is one of:

* a file: JSONL, a JSON list of objects, or parquet, told apart by content (parquet's ``PAR1``
  magic, else the first non-blank character ``[`` or ``{``); gzip is detected by its magic
  bytes whatever the file is called (``x.jsonl.gz``, ``HumanEval.jsonl.gz``, ``x.json``);
* several of them separated by commas, and globs (``shards/*.parquet``; ``**`` recurses),
  each glob expanded in natural order (``part-2`` before ``part-10``);
* ``hf:NAME[:CONFIG]:SPLIT`` (``NAME`` may end in ``@REVISION``): a hub dataset, a local
  script-less dataset directory, or a directory written by ``Dataset.save_to_disk``, read with
  the ``datasets`` library (the ``data`` extra), imported only then.

The sources are read in the order given; a file named twice is read once (with a note).
Parquet files and datasets read only the columns the task asks for. Every record keeps where it
came from, so a record in the wrong schema is reported by file and line (JSON, JSONL) or row
(parquet and datasets, which have no lines).

A record that parses but does not fit the task's schema is not a reason to stop a run over
thousands of good ones: :func:`build_problems` turns it into a problem whose ``meta["invalid"]``
says why, every sample of it gets an ``invalid_test`` verdict (:func:`invalid_verdict`), and
the bench leaves it out of the metrics and counts it. A file that is not JSON at all, a missing
file, or a duplicate problem id still stop the load with an ``InputError``.
"""

from __future__ import annotations

import glob
import gzip
import json
import math
import os
import re
import sys
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mopd_eval.errors import InputError
from mopd_eval.tasks.base import Problem
from mopd_eval.verdict import Verdict

GZIP_MAGIC = b"\x1f\x8b"
PARQUET_MAGIC = b"PAR1"
HF_PREFIX = "hf:"
DATA_EXTRA = "pip install 'mopd-eval[data]'"
_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class Record:
    """One object of a data source: ``index`` is its 0-based position in its file (or split),
    ``line`` its 1-based first line (None for parquet and datasets), ``position`` its 0-based
    position among all records of the ``--data`` value (what row-based problem ids use, so
    shards give distinct ids and a single file keeps the ids it always had)."""

    path: str
    index: int
    line: int | None
    data: dict
    position: int = 0

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

    def text(self, *names: str) -> str:
        """A required non-empty string field (first of the aliases ``names``)."""
        value = self.require(*names)
        if not isinstance(value, str) or not value.strip():
            raise self.error(f"expected a non-empty string, got {value!r:.40}", field=names[0])
        return value


# ---------------------------------------------------------------------------------------------
# --data -> sources


def _natural_key(path: str) -> str:
    # Numbers padded to one width compare by value: part-2 < part-10, and test.jsonl < test2.jsonl.
    return re.sub(r"\d+", lambda m: m.group().zfill(24), path)


def _expand(part: str) -> list[str]:
    if Path(part).exists() or not (_GLOB_CHARS & set(part)):
        return [part]
    found = sorted((p for p in glob.glob(part, recursive=True) if Path(p).is_file()), key=_natural_key)
    if not found:
        raise InputError(f"no file matches the glob {part!r}", field="--data")
    return found


def resolve_data(data: str | Path) -> list[str]:
    """The sources of a ``--data`` value in reading order: file paths and ``hf:`` specs.

    A value that names an existing file is that file (even with a comma in its name). Files are
    checked to exist; a directory is refused with the two ways to read one.
    """
    if isinstance(data, Path) or Path(str(data)).is_file():
        parts = [str(data)]
    else:
        parts = [p.strip() for p in str(data).split(",")]
    if not any(parts):
        raise InputError("empty data value", field="--data")
    sources: list[str] = []
    seen: set[str] = set()
    for part in parts:
        if not part:
            raise InputError(f"empty item in the comma list {str(data)!r}", field="--data")
        for source in [part] if part.startswith(HF_PREFIX) else _expand(part):
            key = source if source.startswith(HF_PREFIX) else os.path.realpath(source)
            if key in seen:
                print(f"mopd-eval: --data names {source} twice; reading it once", file=sys.stderr)
                continue
            seen.add(key)
            if not source.startswith(HF_PREFIX):
                _check_file(Path(source))
            sources.append(source)
    return sources


def _check_file(path: Path) -> None:
    if path.is_dir():
        raise InputError(f"a directory; give its files as a glob ({path / '*.parquet'}) or, for a "
                         f"datasets directory, hf:{path}:SPLIT", path=path, field="--data")
    if not path.exists():
        raise InputError("file not found", path=path)


def read_records(data: str | Path, *, columns: Sequence[str] | None = None) -> list[Record]:
    """Every record of every source of ``data`` (module docstring), in order.

    ``columns``: the top-level fields the task reads; parquet files and datasets read only
    those that exist (None reads all). JSON sources are read whole. Raises ``InputError``
    naming file and line for a missing file, text that is not JSONL or a JSON list of objects,
    an unreadable parquet file, or a dataset that cannot be loaded.
    """
    out: list[Record] = []
    for source in resolve_data(data):
        if source.startswith(HF_PREFIX):
            out.extend(_hf_records(source, columns, len(out)))
        else:
            out.extend(_file_records(Path(source), columns, len(out)))
    return out


# ---------------------------------------------------------------------------------------------
# local files


def _file_records(path: Path, columns: Sequence[str] | None, offset: int) -> list[Record]:
    with path.open("rb") as f:
        head = f.read(4)
    if head == PARQUET_MAGIC:
        return _parquet(path, columns, offset)
    raw = path.read_bytes()
    if raw[:2] == GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise InputError(f"gzip data that cannot be decompressed ({e})", path=path) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise InputError(f"not UTF-8 text, gzip or parquet (byte {e.start})", path=path) from None
    first = text.lstrip()[:1]
    if first == "[":
        return list(_json_list(path, text, offset))
    if first in ("{", ""):
        return list(_jsonl_lines(path, text, offset))
    raise InputError("not JSONL, a JSON list of objects, or parquet (the text starts with "
                     f"{text.lstrip()[:20]!r})", path=path, line=1)


def _jsonl_lines(path: Path, text: str, offset: int) -> Iterator[Record]:
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
        yield Record(str(path), index, line_no, obj, offset + index)
        index += 1


def _json_list(path: Path, text: str, offset: int) -> Iterator[Record]:
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

    pos = skip(skip(0) + 1)  # past the '['
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
        yield Record(str(path), index, text.count("\n", 0, pos) + 1, obj, offset + index)
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


def _parquet(path: Path, columns: Sequence[str] | None, offset: int) -> list[Record]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise InputError(f"reading parquet needs pyarrow: {DATA_EXTRA} (or convert the file to JSONL)",
                         path=path) from None
    try:
        pf = pq.ParquetFile(path)
        names = pf.schema_arrow.names
        wanted = None if columns is None else [c for c in names if c in set(columns)]
        if wanted == []:  # none of the task's fields: every record is empty (and invalid)
            rows: list[dict] = [{} for _ in range(pf.metadata.num_rows)]
        else:
            rows = pf.read(columns=wanted, use_pandas_metadata=False).to_pylist()
    except Exception as e:  # pyarrow raises its own types for a corrupt file
        raise InputError(f"not a readable parquet file ({type(e).__name__}: {e})", path=path) from None
    return [Record(str(path), i, None, _plain(row), offset + i) for i, row in enumerate(rows)]


def _plain(obj: Any) -> Any:
    # Parquet and Arrow give datetimes, numpy values and NaN where the tasks expect JSON types.
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if hasattr(obj, "tolist"):
        return _plain(obj.tolist())
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    if isinstance(obj, float) and math.isnan(obj):  # pandas writes a missing value as NaN
        return None
    return obj


# ---------------------------------------------------------------------------------------------
# datasets


@dataclass(frozen=True)
class HFSpec:
    name: str
    config: str | None
    split: str
    revision: str | None


def parse_hf(spec: str) -> HFSpec:
    """``hf:NAME[@REVISION][:CONFIG]:SPLIT`` -> its parts (InputError for any other shape)."""
    parts = spec[len(HF_PREFIX):].split(":")
    if len(parts) not in (2, 3) or not all(p.strip() for p in parts):
        raise InputError(f"expected hf:NAME[:CONFIG]:SPLIT, got {spec!r}", field="--data")
    name, _, revision = parts[0].partition("@")
    return HFSpec(name, parts[1] if len(parts) == 3 else None, parts[-1], revision or None)


def _is_saved_dataset(path: Path) -> bool:
    return path.is_dir() and ((path / "dataset_dict.json").exists() or (path / "state.json").exists())


def _load_hf(spec: str, hf: HFSpec):
    try:
        import datasets
    except ImportError:
        raise InputError(f"{spec}: reading datasets needs the `datasets` library: {DATA_EXTRA}",
                         field="--data") from None
    local = Path(hf.name)
    if not _is_saved_dataset(local):
        return datasets.load_dataset(hf.name, hf.config, split=hf.split, revision=hf.revision)
    if hf.config is not None:
        raise InputError(f"{spec}: a save_to_disk directory has no configs; use hf:{hf.name}:{hf.split}", field="--data")
    ds = datasets.load_from_disk(str(local))
    if isinstance(ds, datasets.DatasetDict):
        if hf.split not in ds:
            raise InputError(f"{spec}: no split {hf.split!r}; the directory has {sorted(ds)}", field="--data")
        return ds[hf.split]
    if ds.split is not None and str(ds.split) != hf.split:
        raise InputError(f"{spec}: the directory holds the split {str(ds.split)!r}", field="--data")
    return ds


def _hf_records(spec: str, columns: Sequence[str] | None, offset: int) -> list[Record]:
    hf = parse_hf(spec)
    try:
        ds = _load_hf(spec, hf)
    except InputError:
        raise
    except Exception as e:  # datasets raises many types (not found, offline, bad split, ...)
        raise InputError(f"{spec}: cannot load the dataset ({type(e).__name__}: {e})", field="--data") from None
    if columns is not None:
        # The split is memory-mapped Arrow: selecting columns before iterating keeps the others
        # (DeepMath's long solutions) on disk.
        ds = ds.select_columns([c for c in ds.column_names if c in set(columns)])
    return [Record(spec, i, None, _plain(row), offset + i) for i, row in enumerate(ds)]


# ---------------------------------------------------------------------------------------------
# records -> problems


def invalid_problem(problem_id: str, reason: str, question: str = "", meta: dict | None = None) -> Problem:
    """A problem that cannot be graded: every sample of it gets ``invalid_test`` with ``reason``."""
    return Problem(problem_id, question, None, {**(meta or {}), "invalid": reason})


def invalid_verdict(problem: Problem) -> Verdict | None:
    """``invalid_test`` with the reason for a problem marked invalid, else None."""
    reason = problem.meta.get("invalid")
    return None if reason is None else Verdict.failed("invalid_test", str(reason))


def build_problems(records: Iterable[Record], build: Callable[[Record], list[Problem]],
                   on_error: Callable[[Record, InputError], list[Problem]], *,
                   id_field: str = "id") -> list[Problem]:
    """Problems of ``records`` in order: ``build`` makes a record's problems (none when the task
    filters it out) and raises ``InputError`` for a record that does not fit the schema, which
    ``on_error`` turns into invalid problems. A problem id seen twice is an ``InputError``
    naming both records (``id_field`` names the field in the message)."""
    out: list[Problem] = []
    first: dict[str, Record] = {}
    for rec in records:
        try:
            made = build(rec)
        except InputError as e:
            made = on_error(rec, e)
        for p in made:
            if p.problem_id in first:
                other = first[p.problem_id]
                where = f"{other.path}:{other.line}" if other.line is not None else f"{other.path} row {other.index}"
                raise rec.error(f"duplicate problem id {p.problem_id!r} (first at {where})", field=id_field)
            first[p.problem_id] = rec
            out.append(p)
    return out


def require_data(data: str | Path | None, task: str, hint: str) -> str | Path:
    """``data`` or an ``InputError`` saying what the task needs."""
    if data is None or not str(data).strip():
        raise InputError(f"{task} needs data: --data FILE[,FILE...]|GLOB|hf:NAME[:CONFIG]:SPLIT ({hint}; "
                         "see docs/tasks.md)", field="--data")
    return data
