"""Importers from neighbouring formats into rollout records (keys read: docs/formats.md).

* verl/SDPO rollout dumps: one JSON object per rollout, one file per step (``{step}.jsonl``),
  keys ``input`` (the chat-templated prompt decoded without special tokens), ``output``,
  ``score``, ``gts``, ``step`` and the reward function's extras (``acc``, ``pred``,
  ``feedback``, ...). A group is the rows with the same ``input`` text, per step by default or
  pooled over steps (the reference analysis code's grouping).
* The reference analysis code's ``candidate_responses.jsonl``: ``prompt_id, response_id,
  prompt, response_text, reward, success, feedback_text, ground_truth, rollout_step, ...``;
  its ``prompt`` is verl's ``input`` copied through.

Both prompts are decoded transcripts. Without a tokenizer they are kept as text and marked
``meta["prompt_format"] = "transcript"`` (flat placement only, see ``records.placement_for``);
with one, ``TranscriptParser`` turns them back into the chat messages that produced them.
"""

from __future__ import annotations

import glob
import hashlib
import json
import re
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from mopd_eval.errors import InputError
from mopd_eval.jsonl import iter_jsonl
from mopd_eval.records import (
    DEFAULT_SUCCESS_THRESHOLD,
    PROMPT_FORMAT,
    TRANSCRIPT,
    Rollout,
    check_unique_id,
    rollout_from_json,
)

VERL_KNOWN = {"input", "output", "score", "gts", "step", "feedback"}
CANDIDATE_KNOWN = {
    "prompt_id", "uid", "prompt", "response_id", "response_text", "reward", "success",
    "feedback_text", "ground_truth", "difficulty_bucket", "rollout_step",
}
Warn = Callable[[str], None]


def _warn(msg: str) -> None:
    warnings.warn(msg, UserWarning, stacklevel=3)


# ---- finding dump files ----------------------------------------------------------------------


def natural_key(path: str | Path) -> tuple:
    """Sort key that orders numbers by value: ``2.jsonl`` before ``10.jsonl``, ``step_9/`` before ``step_10/``."""
    return tuple(
        (0, int(tok), "") if tok.isdigit() else (1, 0, tok)
        for part in Path(path).parts
        for tok in re.split(r"(\d+)", part)
        if tok
    )


def _expand(arg: str | Path) -> list[Path]:
    p = Path(arg)
    if p.is_dir():
        files = [f for f in p.rglob("*.jsonl") if f.is_file()]
        if not files:
            raise InputError("directory holds no *.jsonl file (searched recursively)", path=p)
        return files
    if p.is_file():
        return [p]
    if any(c in str(arg) for c in "*?["):
        out: list[Path] = []
        for m in glob.glob(str(arg), recursive=True):
            mp = Path(m)
            out += [f for f in mp.rglob("*.jsonl") if f.is_file()] if mp.is_dir() else [mp]
        if not out:
            raise InputError("no file matches this pattern", path=arg)
        return out
    raise InputError("file not found", path=p)


def resolve_inputs(inputs: Sequence[str | Path], *, warn: Warn | None = None) -> list[Path]:
    """Files named by ``inputs`` (files, directories searched recursively for ``*.jsonl``, globs).

    The result is in natural order of the paths, so step files come in numeric step order however
    the shell expanded them; a file named twice is read once (with a warning).
    """
    warn = warn or _warn
    if not inputs:
        raise InputError("no input file given")
    files: dict[Path, Path] = {}
    for arg in inputs:
        for f in _expand(arg):
            key = f.resolve()
            if key in files:
                warn(f"{f}: given more than once; read once")
                continue
            files[key] = f
    return sorted(files.values(), key=natural_key)


class _Dedup:
    """Drops rows that repeat an earlier row exactly and summarises what it dropped."""

    def __init__(self, keep: bool) -> None:
        self.keep = keep
        self.first: dict[bytes, tuple[Path, int]] = {}
        self.same_file = 0
        self.other_file = 0
        self.example = ""

    def is_repeat(self, obj: dict, path: Path, line: int) -> bool:
        # A digest, not the row: dumps of a long run hold gigabytes of responses.
        key = hashlib.sha1(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode("utf-8")).digest()
        if key not in self.first:
            self.first[key] = (path, line)
            return False
        if self.keep:
            return False
        fpath, fline = self.first[key]
        if fpath == path:
            self.same_file += 1
        else:
            self.other_file += 1
        if not self.example:
            self.example = f"{path}:{line} repeats {fpath}:{fline}"
        return True

    def report(self, warn: Warn) -> None:
        n = self.same_file + self.other_file
        if n:
            warn(
                f"dropped {n} rows that repeat an earlier row exactly ({self.other_file} from another "
                f"file, {self.same_file} within one file; first: {self.example}). Identical samples of "
                "one prompt can be genuine; --keep-duplicates keeps them."
            )


# ---- transcripts back to chat messages --------------------------------------------------------

_SENTINELS = [f"MOPDSENTINEL{c}" for c in "ABCDEFGH"]
_MAX_CANDIDATES = 64  # parses tried per transcript; real prompts have one or two


class TranscriptParser:
    """Parses a chat transcript decoded without special tokens back into chat messages.

    The family's frame strings (what stands between message contents once special tokens are
    dropped, e.g. ``"\\nuser\\n"`` for ChatML) are learned by rendering probe conversations with
    the tokenizer's own chat template, the way verl builds ``input``: template with generation
    prompt, tokenize, decode with ``skip_special_tokens=True``. A parse is accepted only when
    rendering it again gives the transcript back exactly; among exact parses the one with the
    fewest messages wins (a question that quotes a role marker stays one turn).
    """

    def __init__(self, tokenizer: Any, name: str = "the tokenizer") -> None:
        if not getattr(tokenizer, "chat_template", None):
            raise InputError(f"{name} has no chat template", field="--tokenizer")
        self.tok = tokenizer
        self.name = name
        self.openings: dict[str, str] = {}  # role of the first message -> text before its content
        self.seps: dict[tuple[str, str], str] = {}  # (role, next role) -> text between contents
        self.tails: list[str] = []  # text after the last user content (the generation prompt)
        self._learn()
        if "user" not in self.openings:
            raise InputError(f"cannot learn the chat frame of {name}: its template rejects a user turn", field="--tokenizer")
        self._cache: dict[str, list[dict] | None] = {}
        self.ambiguous: set[str] = set()

    def render(self, messages: list[dict]) -> str:
        """The transcript verl would record for ``messages``."""
        text = self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = self.tok(text, add_special_tokens=False)["input_ids"]
        return self.tok.decode(ids, skip_special_tokens=True)

    def _probe(self, roles: Sequence[str]) -> list[str] | None:
        msgs = [{"role": r, "content": s} for r, s in zip(roles, _SENTINELS[: len(roles)], strict=True)]
        try:
            text = self.render(msgs)
        except Exception:  # noqa: BLE001 -- a template may reject a role order; that frame is then unknown
            return None
        parts: list[str] = []
        for s in _SENTINELS[: len(roles)]:
            head, sep, text = text.partition(s)
            if not sep:
                return None  # the template rewrote a content: no usable frame
            parts.append(head)
        return [*parts, text]

    def _learn(self) -> None:
        for roles in (["user"], ["system", "user"], ["user", "assistant", "user"], ["system", "user", "assistant", "user"]):
            parts = self._probe(roles)
            if parts is None:
                continue
            self.openings.setdefault(roles[0], parts[0])
            for i in range(1, len(roles)):
                self.seps.setdefault((roles[i - 1], roles[i]), parts[i])
            if parts[-1] not in self.tails:
                self.tails.append(parts[-1])

    def _candidates(self, text: str) -> Iterator[list[dict]]:
        for role, opening in self.openings.items():
            if text.startswith(opening):
                yield from self._split(text, len(opening), role, [])

    def _split(self, text: str, pos: int, role: str, done: list[dict]) -> Iterator[list[dict]]:
        if role == "user":
            for tail in self.tails:
                if text.endswith(tail) and len(text) - len(tail) >= pos:
                    yield [*done, {"role": role, "content": text[pos : len(text) - len(tail)]}]
        for (prev, nxt), sep in self.seps.items():
            if prev != role or not sep:
                continue
            i = text.find(sep, pos)
            while i != -1:
                yield from self._split(text, i + len(sep), nxt, [*done, {"role": role, "content": text[pos:i]}])
                i = text.find(sep, i + 1)

    def parse(self, text: str) -> list[dict] | None:
        """The chat messages whose transcript is exactly ``text``, or None when there are none.

        When several conversations render to ``text``, the one with the fewest messages is
        returned and ``text`` is counted in ``ambiguous``. That happens when role markers decode
        to plain text: a multi-turn prompt then reads equally as one user turn quoting them, and
        one turn loses nothing (several invented turns would cut the question apart).
        """
        if text not in self._cache:
            cands: dict[str, list[dict]] = {}
            for c in self._candidates(text):
                cands.setdefault(json.dumps(c), c)
                if len(cands) >= _MAX_CANDIDATES:
                    break
            exact = [c for c in sorted(cands.values(), key=len) if self.render(c) == text]
            # A leading system turn equal to the template's default renders like no system turn:
            # the same conversation, not an ambiguity.
            if len({json.dumps(_without_system(c)) for c in exact}) > 1:
                self.ambiguous.add(text)
            self._cache[text] = exact[0] if exact else None
        return self._cache[text]


def _without_system(messages: list[dict]) -> list[dict]:
    return messages[1:] if messages and messages[0]["role"] == "system" else messages


def transcript_parser(model: str) -> TranscriptParser:
    """A ``TranscriptParser`` for ``--tokenizer`` (an alias or a local model directory)."""
    from mopd_eval.models import load_tokenizer

    return TranscriptParser(load_tokenizer(model), name=str(model))


def _prompt_fields(text: str, parser: TranscriptParser | None, path: Path, line: int, field: str) -> tuple[str | list[dict], dict]:
    """(prompt, meta entries) of a transcript: kept as text and marked, or parsed into messages."""
    if parser is None:
        return text, {PROMPT_FORMAT: TRANSCRIPT}
    messages = parser.parse(text)
    if messages is None:
        raise InputError(
            f"this transcript is not what {parser.name}'s chat template renders for any conversation "
            "(wrong --tokenizer for this dump?); import without --tokenizer to keep it as a transcript",
            path=path, line=line, field=field,
        )
    return messages, {PROMPT_FORMAT: "chat", "prompt_parsed_with": parser.name}


def _report_ambiguous(parser: TranscriptParser | None, warn: Warn) -> None:
    if parser is not None and parser.ambiguous:
        warn(
            f"{len(parser.ambiguous)} distinct transcripts read as more than one conversation under "
            f"{parser.name}'s template (a turn quotes a role marker on its own line); kept the reading "
            "with the fewest messages"
        )


# ---- verl ------------------------------------------------------------------------------------


def _string(obj: dict, name: str, path: Path, line: int) -> str:
    if name not in obj:
        raise InputError("missing", path=path, line=line, field=name)
    if not isinstance(obj[name], str):
        raise InputError(f"expected string, got {type(obj[name]).__name__}", path=path, line=line, field=name)
    return obj[name]


def _step(obj: dict, path: Path, line: int) -> int | None:
    step = obj.get("step")
    if step is None:
        # verl names each file after its step; rows of older dumps carry no step key.
        return int(path.stem) if path.stem.isdigit() else None
    if isinstance(step, float) and step.is_integer():
        step = int(step)
    if not isinstance(step, int) or isinstance(step, bool):
        raise InputError(f"expected an integer, got {step!r:.40}", path=path, line=line, field="step")
    return step


def import_verl(
    paths: Iterable[str | Path],
    *,
    threshold: float = DEFAULT_SUCCESS_THRESHOLD,
    task: str = "verl",
    pool_steps: bool = False,
    parser: TranscriptParser | None = None,
    keep_duplicates: bool = False,
    warn: Warn | None = None,
) -> list[Rollout]:
    """Read verl/SDPO dumps (files, directories, globs; see ``resolve_inputs``).

    ``problem_id`` is the first 16 hex digits of sha1(``input``) (the reference's prompt id),
    with ``-s{step}`` appended unless ``pool_steps``; ``rollout_id`` is ``{problem_id}_r{k}`` in
    read order. ``success`` is ``score >= threshold``; ``acc`` and every other extra key go to
    ``meta``. Rows that repeat an earlier row exactly are dropped with a warning.
    """
    warn = warn or _warn
    dedup = _Dedup(keep_duplicates)
    counts: dict[str, int] = {}
    rollouts: list[Rollout] = []
    for path in resolve_inputs(list(paths), warn=warn):
        for line, obj in iter_jsonl(path):
            if dedup.is_repeat(obj, path, line):
                continue
            text = _string(obj, "input", path, line)
            step = _step(obj, path, line)
            digest = hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]
            pid = digest if pool_steps or step is None else f"{digest}-s{step}"
            k = counts.get(pid, 0)
            counts[pid] = k + 1
            if "score" not in obj:
                raise InputError("missing", path=path, line=line, field="score")
            prompt, prompt_meta = _prompt_fields(text, parser, path, line, "input")
            feedback = obj.get("feedback")
            rec = {
                "problem_id": pid,
                "rollout_id": f"{pid}_r{k}",
                "prompt": prompt,
                "response": _string(obj, "output", path, line),
                "reward": obj.get("score"),
                "feedback": feedback if feedback not in ("", None) else None,
                "task": task,
                "ground_truth": obj.get("gts"),
                "meta": {"step": step, "source": str(path), "source_line": line, **prompt_meta}
                | {k2: v for k2, v in obj.items() if k2 not in VERL_KNOWN},
            }
            rollouts.append(_validated(rec, path, line, threshold, {"score": "reward"}))
    dedup.report(warn)
    _report_ambiguous(parser, warn)
    if not rollouts:
        raise InputError("no rows in the given verl dump files")
    return rollouts


# ---- reference candidate_responses.jsonl -----------------------------------------------------


def _get(obj: dict, name: str, path: Path, line: int) -> Any:
    if name not in obj:
        raise InputError("missing", path=path, line=line, field=name)
    return obj[name]


def import_candidates(
    path: str | Path,
    *,
    threshold: float = DEFAULT_SUCCESS_THRESHOLD,
    task: str = "reference",
    parser: TranscriptParser | None = None,
) -> list[Rollout]:
    """Read the reference code's ``candidate_responses.jsonl``; its ``success`` is kept when present.

    A string ``prompt`` is verl's transcript: marked as such, or parsed with ``parser``.
    """
    path = Path(path)
    rollouts: list[Rollout] = []
    seen: dict[tuple[str, str], int] = {}
    for line, obj in iter_jsonl(path):
        pid = obj.get("prompt_id", obj.get("uid"))
        if pid is None:
            raise InputError("missing (neither prompt_id nor uid)", path=path, line=line, field="prompt_id")
        prompt, prompt_meta = _get(obj, "prompt", path, line), {}
        if isinstance(prompt, str):
            prompt, prompt_meta = _prompt_fields(prompt, parser, path, line, "prompt")
        rec = {
            "problem_id": pid,
            "rollout_id": _get(obj, "response_id", path, line),
            "prompt": prompt,
            "response": _get(obj, "response_text", path, line),
            "reward": _get(obj, "reward", path, line),
            "success": obj.get("success"),
            "feedback": obj.get("feedback_text") or None,
            "task": task,
            "ground_truth": obj.get("ground_truth"),
            "meta": {"step": obj.get("rollout_step"), "difficulty_bucket": obj.get("difficulty_bucket"), **prompt_meta}
            | {k: v for k, v in obj.items() if k not in CANDIDATE_KNOWN},
        }
        r = _validated(rec, path, line, threshold, {"response_text": "response", "response_id": "rollout_id", "prompt_id": "problem_id", "feedback_text": "feedback"})
        check_unique_id(r, seen, path, line)
        rollouts.append(r)
    if not rollouts:
        raise InputError("no rows (empty file)", path=path)
    return rollouts


def import_candidate_files(
    inputs: Sequence[str | Path],
    *,
    threshold: float = DEFAULT_SUCCESS_THRESHOLD,
    task: str = "reference",
    parser: TranscriptParser | None = None,
    warn: Warn | None = None,
) -> list[Rollout]:
    """Several candidate files (or directories, globs): a rollout met again is dropped with a warning.

    Two files of one study can hold the same prompt; a ``(prompt_id, response_id)`` seen twice with
    different content is an error, as within one file.
    """
    warn = warn or _warn
    out: list[Rollout] = []
    first: dict[tuple[str, str], tuple[Rollout, Path]] = {}
    dropped = 0
    for path in resolve_inputs(inputs, warn=warn):
        for r in import_candidates(path, threshold=threshold, task=task, parser=parser):
            key = (r.problem_id, r.rollout_id)
            if key in first:
                prev, prev_path = first[key]
                if prev.to_json() != r.to_json():
                    raise InputError(
                        f"rollout {r.rollout_id!r} of problem {r.problem_id!r} differs from the one in {prev_path}",
                        path=path, field="response_id",
                    )
                dropped += 1
                continue
            first[key] = (r, path)
            out.append(r)
    _report_ambiguous(parser, warn)
    if dropped:
        warn(f"dropped {dropped} rollouts read before from another file (same prompt_id, response_id and content)")
    return out


def _validated(rec: dict, path: Path, line: int, threshold: float, renamed: dict[str, str]) -> Rollout:
    """Validate through the rollout schema, reporting the *source* field name on error."""
    try:
        return rollout_from_json(rec, path=path, line=line, threshold=threshold)
    except InputError as e:
        back = {v: k for k, v in renamed.items()}
        raise InputError(e.message, path=path, line=line, field=back.get(e.field, e.field)) from None
