"""The per-token teacher log-prob store of ``mopd-eval signal --save-token-logprobs``.

While the study scores, ``TokenStore.on_scores`` (the ``on_scores`` hook of
``analysis.teacher_scoring.score_rollouts``) writes each scored batch as one shard
``OUT/work/token_logprobs/shard-NNNNNN.npz`` *before* the batch's rows reach the resumable score
log, so a row in the log normally has its token log-probs on disk. At the end
``TokenStore.finish`` reconciles the shards with the log (a row whose log-probs are missing, or
whose count or sum disagrees with the log, is scored again: e.g. rows scored by an earlier run
without the flag) and writes ONE file beside ``OUT/teacher_scores.jsonl``:

``OUT/token_logprobs.npz`` (``numpy.savez_compressed``, no pickled objects; format in
``docs/tokens.md``)

=====================  =========  ===========================================================
array                  dtype      meaning
=====================  =========  ===========================================================
``meta``               uint8      UTF-8 JSON: format, version, model, rollouts, conditions, ...
``condition``          str        one per score row, in ``teacher_scores.jsonl`` order
``problem_id``         str        idem
``rollout_id``         str        idem
``offsets``            int64      ``n_rows + 1``: row i is ``logprobs[offsets[i]:offsets[i+1]]``
``logprobs``           float32    log p(y_t | teacher prompt, y_<t) of every response token
``target_problem_id``  str        one per target rollout
``target_rollout_id``  str        idem
``target_offsets``     int64      ``n_targets + 1`` into ``token_ids`` / ``token_text``
``token_ids``          int32      the response token ids the teacher scored
``token_text``         str        each token's text (incremental detokenization)
=====================  =========  ===========================================================

Once the merged file is written the shards are deleted (rows outside this run's selection of
conditions and problems are kept in one shard): a later run reads the merged file back, so only
new rows are scored and the run's disk holds one copy. ``load_token_logprobs(path)`` reads the
merged file back as a ``TokenLogprobs``.
"""

from __future__ import annotations

import io
import json
import shutil
import sys
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mopd_eval.errors import InputError
from mopd_eval.jsonl import write_bytes_atomic

FORMAT = "mopd-eval token-logprobs"
VERSION = 1
STORE_FILE = "token_logprobs.npz"  # beside OUT/teacher_scores.jsonl
SHARD_DIR = "token_logprobs"  # under OUT/work/
_ROW_ARRAYS = ("condition", "problem_id", "rollout_id", "offsets", "logprobs")
_TARGET_ARRAYS = ("target_problem_id", "target_rollout_id", "target_offsets", "token_ids", "token_text")
Key = tuple[str, str, str]  # (condition, problem_id, rollout_id)


def row_key(row: dict) -> Key:
    return (str(row["condition"]), str(row["problem_id"]), str(row["rollout_id"]))


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def _flat(seqs: Sequence[np.ndarray], dtype) -> tuple[np.ndarray, np.ndarray]:
    """Concatenation of ``seqs`` and its ``len + 1`` offsets (ragged arrays without pickling)."""
    offsets = np.zeros(len(seqs) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(s) for s in seqs])
    flat = np.concatenate([np.asarray(s, dtype=dtype) for s in seqs]) if seqs else np.zeros(0, dtype)
    return flat.astype(dtype, copy=False), offsets


def _split(flat: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
    return [flat[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]


def shard_arrays(rows: Sequence[dict], logprobs: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """The arrays of one shard: the rows' keys and their log-probs (float32)."""
    if len(rows) != len(logprobs):
        raise ValueError(f"{len(rows)} rows but {len(logprobs)} log-prob arrays")
    flat, offsets = _flat(list(logprobs), np.float32)
    keys = [row_key(r) for r in rows]
    return {
        "condition": np.array([k[0] for k in keys], dtype=str),
        "problem_id": np.array([k[1] for k in keys], dtype=str),
        "rollout_id": np.array([k[2] for k in keys], dtype=str),
        "offsets": offsets,
        "logprobs": flat,
    }


def read_shard(path: Path) -> dict[Key, np.ndarray]:
    """A shard's ``key -> log-probs``; ``InputError`` naming the file when it cannot be read."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in _ROW_ARRAYS}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as e:
        raise InputError(f"unreadable token log-prob file ({e}); delete it and rerun to rescore its rows",
                         path=path) from None
    lps = _split(arrays["logprobs"], arrays["offsets"])
    keys = zip(arrays["condition"].tolist(), arrays["problem_id"].tolist(), arrays["rollout_id"].tolist(), strict=True)
    return dict(zip(keys, lps, strict=True))


def read_shards(directory: Path) -> dict[Key, np.ndarray]:
    """Every shard of ``directory`` in write order; a key written twice keeps its latest value."""
    out: dict[Key, np.ndarray] = {}
    for path in sorted(directory.glob("shard-*.npz")):
        out.update(read_shard(path))
    return out


def agrees(row: dict, logprobs: np.ndarray | None, *, atol: float = 1e-3, rtol: float = 1e-4) -> bool:
    """Whether stored log-probs can stand for a log row: same token count and the same sum.

    The sum check catches shards left from another model or template (a ``--rescore`` run
    without the flag does not clear them); the tolerance admits rows scored again in another
    batch composition (float32 summation order).
    """
    if logprobs is None or len(logprobs) != int(row["n_tokens"]):
        return False
    total = float(np.sum(logprobs, dtype=np.float64))
    want = float(row["logprob_sum"])
    return abs(total - want) <= atol + rtol * abs(want)


def reconcile(rows: Sequence[dict], stored: dict[Key, np.ndarray]) -> list[dict]:
    """The rows of the score log whose token log-probs are missing or disagree (``agrees``)."""
    return [r for r in rows if not agrees(r, stored.get(row_key(r)))]


def token_pieces(tokenizer: Any, ids: Sequence[int]) -> list[str]:
    """Each token's text such that ``"".join(pieces) == tokenizer.decode(ids)``.

    Incremental detokenization (as streaming decoders do): a token's text is what decoding it
    adds to the text of a few tokens before it, so SentencePiece's leading spaces come out right,
    and a token that ends inside a multi-byte character gets ``""`` and the next one the
    character.
    """
    ids = list(ids)
    pieces: list[str] = []
    prefix, read = 0, 0  # ids[prefix:read] is context already emitted
    for k in range(len(ids)):
        before = tokenizer.decode(ids[prefix:read])
        now = tokenizer.decode(ids[prefix : k + 1])
        if len(now) > len(before) and not now.endswith("\ufffd"):
            pieces.append(now[len(before) :])
            prefix, read = read, k + 1
        else:
            pieces.append("")  # held back: the character is not complete yet
    if read < len(ids):  # bytes at the end that never completed a character
        pieces[-1] += tokenizer.decode(ids[prefix:])[len(tokenizer.decode(ids[prefix:read])) :]
    return pieces


def rescore(engine: Any, rollouts: Sequence, conditions: Sequence, missing: Sequence[dict],
            **context_options: Any) -> tuple[list[dict], list[np.ndarray]]:
    """Score the ``missing`` rows again with the prompts the study built (``build_requests``).

    Returns ``(rows, log-probs)`` in the ``on_scores`` form, one problem's missing pairs per
    engine call.
    """
    from analysis.teacher_scoring import build_requests, score_row
    from mopd_eval.records import group_rollouts

    want = {row_key(r) for r in missing}
    by_name = {c.name: c for c in conditions}
    rows: list[dict] = []
    lps: list[np.ndarray] = []
    for pid, group in group_rollouts(rollouts).items():
        conds = [by_name[c] for c in by_name if any((c, pid, r.rollout_id) in want for r in group)]
        if not conds:
            continue
        reqs = [q for q in build_requests(group, conds, engine.tokenizer, **context_options)
                if (q.condition, q.problem_id, q.rollout_id) in want]
        out = engine.score([q.prompt_ids for q in reqs], [q.target_ids for q in reqs])
        rows += [score_row(q, lp) for q, lp in zip(reqs, out, strict=True)]
        lps += list(out)
    return rows, lps


def target_tokens(rollouts: Sequence, tokenizer: Any) -> dict[str, np.ndarray]:
    """The ``target_*``, ``token_ids`` and ``token_text`` arrays: every target's scored ids
    (``response_token_ids``, the ids the teacher scored) and each token's text."""
    from mopd_eval.contexts import response_token_ids

    ids = [response_token_ids(r, tokenizer) for r in rollouts]
    flat_ids, offsets = _flat(ids, np.int32)
    pieces = [p for seq in ids for p in token_pieces(tokenizer, seq)]
    return {
        "target_problem_id": np.array([r.problem_id for r in rollouts], dtype=str),
        "target_rollout_id": np.array([r.rollout_id for r in rollouts], dtype=str),
        "target_offsets": offsets,
        "token_ids": flat_ids,
        "token_text": np.array(pieces, dtype=str) if pieces else np.zeros(0, dtype="<U1"),
    }


def write_store(path: Path, rows: Sequence[dict], stored: dict[Key, np.ndarray],
                targets: dict[str, np.ndarray], meta: dict) -> int:
    """Write the merged file (rows in ``rows`` order); return its size in bytes."""
    arrays = shard_arrays(rows, [stored[row_key(r)] for r in rows])
    meta = {"format": FORMAT, "version": VERSION, "dtype": "float32", "n_rows": len(rows), **meta}
    data = _npz_bytes({"meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays, **targets})
    write_bytes_atomic(path, data)
    return len(data)


@dataclass
class TokenStore:
    """Shards written while the study scores, merged into ``OUT/token_logprobs.npz`` at the end.

    ``fresh`` (``--rescore``) discards earlier shards; that happens on the first write or at
    ``finish``, after the score log's lock is taken, never before.
    """

    work: Path
    fresh: bool = False
    seconds: float = 0.0  # spent saving: shards, reconciling, detokenizing, merging
    rescore_seconds: float = 0.0
    _next: int | None = field(default=None, repr=False)

    @property
    def directory(self) -> Path:
        return self.work / SHARD_DIR

    def _prepare(self) -> None:
        if self._next is not None:
            return
        if self.fresh:
            shutil.rmtree(self.directory, ignore_errors=True)
        self.directory.mkdir(parents=True, exist_ok=True)
        done = [int(p.stem.split("-")[1]) for p in self.directory.glob("shard-*.npz") if p.stem.split("-")[1].isdigit()]
        self._next = max(done, default=-1) + 1

    def on_scores(self, rows: list[dict], logprobs: list[np.ndarray]) -> None:
        """``score_rollouts``' hook: one shard per scored batch, written before the log append."""
        t0 = time.perf_counter()
        self._write_shard(rows, logprobs)
        self.seconds += time.perf_counter() - t0

    def _write_shard(self, rows: Sequence[dict], logprobs: Sequence[np.ndarray]) -> None:
        self._prepare()
        write_bytes_atomic(self.directory / f"shard-{self._next:06d}.npz", _npz_bytes(shard_arrays(rows, logprobs)))
        self._next += 1

    def finish(self, out: Path, rows: Sequence[dict], engine: Any, inputs: Any, args: Any) -> dict:
        """Reconcile the shards with the score log ``rows``, rescore what is missing, and write
        ``out/token_logprobs.npz``. ``inputs``/``args``: the study's (``analysis.signal_study``).
        Returns what it cost: ``{rows, rescored, seconds, rescore_seconds, bytes}``."""
        t0 = time.perf_counter()
        self._prepare()
        stored = self._stored(out)
        missing = reconcile(rows, stored)
        self.seconds += time.perf_counter() - t0
        if missing:
            print(f"token log-probs: {len(missing)} scored rows have none on disk or disagree with the score log "
                  "(scored without --save-token-logprobs?); scoring them again", file=sys.stderr)
            t1 = time.perf_counter()
            again, lps = rescore(engine, inputs.rollouts, inputs.conditions, missing, placement=inputs.placement,
                                 templates=inputs.templates, order=args.order, seed=args.seed)
            self.rescore_seconds += time.perf_counter() - t1
            self.on_scores(again, lps)
            stored.update({row_key(r): lp for r, lp in zip(again, lps, strict=True)})
            off = reconcile(rows, stored)
            if off:
                print(f"token log-probs: {len(off)} rescored rows still disagree with the score log beyond "
                      "float32 rounding; rerun with --rescore", file=sys.stderr)
        t0 = time.perf_counter()
        meta = _meta(inputs, args, n_rescored=len(missing))
        size = write_store(out / STORE_FILE, rows, stored, target_tokens(inputs.rollouts, engine.tokenizer), meta)
        self._compact(stored, rows)
        self.seconds += time.perf_counter() - t0
        cost = {"rows": len(rows), "rescored": len(missing), "seconds": self.seconds,
                "rescore_seconds": self.rescore_seconds, "bytes": size}
        write_bytes_atomic(self.work / "token_logprobs.cost.json", json.dumps(cost, indent=2).encode())
        return cost

    def _stored(self, out: Path) -> dict[Key, np.ndarray]:
        """What is on disk: the merged file of an earlier run (unless ``fresh``), then the shards."""
        merged = out / STORE_FILE
        stored = read_shard(merged) if merged.exists() and not self.fresh else {}
        stored.update(read_shards(self.directory))
        return stored

    def _compact(self, stored: dict[Key, np.ndarray], rows: Sequence[dict]) -> None:
        """The merged file now holds ``rows`` and a later run reads it back, so the shards go;
        rows outside it (conditions or problems this run did not select) stay, in one shard."""
        old = sorted(self.directory.glob("shard-*.npz"))
        keep = {row_key(r) for r in rows}
        extra = {k: v for k, v in stored.items() if k not in keep}
        if extra:
            keys = [dict(zip(("condition", "problem_id", "rollout_id"), k, strict=True)) for k in extra]
            self._write_shard(keys, list(extra.values()))
        for p in old:
            p.unlink()


def _meta(inputs: Any, args: Any, *, n_rescored: int) -> dict:
    """What a reader needs to rebuild the contexts (``mopd_eval.contexts.build_context``)."""
    from dataclasses import asdict

    from mopd_eval.resumable import file_sha256

    return {
        "model": str(args.model),
        "engine": args.engine,
        "rollouts": str(inputs.rollouts_path),
        "rollouts_sha256": file_sha256(inputs.rollouts_path),
        "placement": inputs.placement,
        "templates": asdict(inputs.templates),
        "order": args.order,
        "seed": args.seed,
        "conditions": {c.name: asdict(c) for c in inputs.conditions},
        "n_rescored": n_rescored,
    }


@dataclass
class TokenLogprobs:
    """A read ``token_logprobs.npz``: per-row log-probs and per-target tokens, by key."""

    path: Path
    meta: dict
    rows: dict[Key, np.ndarray]  # (condition, problem_id, rollout_id) -> float32 log-probs
    tokens: dict[tuple[str, str], tuple[np.ndarray, list[str]]]  # (problem_id, rollout_id) -> ids, texts

    @property
    def conditions(self) -> list[str]:
        return list(dict.fromkeys(k[0] for k in self.rows))

    def logprobs(self, condition: str, problem_id: str, rollout_id: str) -> np.ndarray | None:
        return self.rows.get((condition, str(problem_id), str(rollout_id)))


def _load_arrays(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in ("meta", *_ROW_ARRAYS, *_TARGET_ARRAYS) if k not in z.files]
            if missing:
                raise InputError(f"not a token log-prob store: arrays {missing} missing", path=path,
                                 field=missing[0])
            return {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise InputError("file not found (run `mopd-eval signal --save-token-logprobs`)", path=path) from None
    except (ValueError, zipfile.BadZipFile, EOFError, OSError) as e:
        raise InputError(f"cannot read as npz: {e}", path=path) from None


def _check_offsets(path: Path, name: str, offsets: np.ndarray, n: int, total: int) -> None:
    if (offsets.ndim != 1 or len(offsets) != n + 1 or (len(offsets) and (offsets[0] != 0 or offsets[-1] != total))
            or np.any(np.diff(offsets) < 0)):
        raise InputError(f"offsets do not index the flat array ({n} entries, {total} values)", path=path, field=name)


def load_token_logprobs(path: str | Path) -> TokenLogprobs:
    """Read and check ``token_logprobs.npz``; ``InputError`` naming the file and array when bad."""
    path = Path(path)
    a = _load_arrays(path)
    try:
        meta = json.loads(a["meta"].tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"meta is not UTF-8 JSON: {e}", path=path, field="meta") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise InputError(f"meta names format {meta.get('format') if isinstance(meta, dict) else meta!r}, "
                         f"version {meta.get('version') if isinstance(meta, dict) else None}; "
                         f"expected {FORMAT!r} version {VERSION}", path=path, field="meta")
    n_rows, n_targets = len(a["condition"]), len(a["target_problem_id"])
    _check_offsets(path, "offsets", a["offsets"], n_rows, len(a["logprobs"]))
    _check_offsets(path, "target_offsets", a["target_offsets"], n_targets, len(a["token_ids"]))
    if len(a["token_text"]) != len(a["token_ids"]):
        raise InputError("token_text and token_ids differ in length", path=path, field="token_text")
    tkeys = list(zip(a["target_problem_id"].tolist(), a["target_rollout_id"].tolist(), strict=True))
    tokens = {k: (ids, texts.tolist()) for k, ids, texts in zip(
        tkeys, _split(a["token_ids"], a["target_offsets"]), _split(a["token_text"], a["target_offsets"]), strict=True)}
    keys = list(zip(a["condition"].tolist(), a["problem_id"].tolist(), a["rollout_id"].tolist(), strict=True))
    rows = dict(zip(keys, _split(a["logprobs"], a["offsets"]), strict=True))
    for i, (k, lp) in enumerate(rows.items()):
        ids = tokens.get(k[1:])
        if ids is None or len(ids[0]) != len(lp):
            raise InputError(f"row {i} ({k[0]}, {k[1]}, {k[2]}): {len(lp)} log-probs but "
                             f"{'no target' if ids is None else len(ids[0])} tokens", path=path, field="offsets")
    return TokenLogprobs(path, meta, rows, tokens)
