"""Peer contexts: what the teacher sees when it scores one target rollout.

The single place where teacher prompts are assembled, used by the signal study (``analysis/``)
and by the trainer (``training/``), so the teacher reads the same text in both. The conditions,
template sets, placements and the spec-file format are documented in ``docs/conditions.md``.

A condition picks peers of the target (the other rollouts of its group, never the target
itself) and puts them into the slots of a template set:

    reprompt = {prompt}{solution}{another}{failure}{feedback} + closing instruction

The first success shown goes under the ``solution`` header, every further success under
``another``, each failure under ``failure``, and the target's own verifier feedback under
``feedback``. With no slot filled the teacher prompt is the original prompt, unchanged. A row
is *effective* when every slot its condition names was filled.

Rules worth knowing (each has a test in ``tests/test_contexts.py``):

* ``all`` shows every peer. It names the solution and failure slots, so it is effective when at
  least one success and one failure are shown. ``all-capped`` is the reference code's "All
  Solutions": the first two successes and no failure, the same text as ``solution`` +
  ``another``, effective when both are shown.
* ``random_peer`` and ``score_ordered`` fill the target's own 2s1f budget: as many solution
  slots as 2s1f fills for this target (0-2) and as many failure slots (0-1). ``random_peer``
  puts seeded random peers into those slots in slot order, whatever their labels;
  ``score_ordered`` takes the highest-reward peers (ties keep group order) and shows each under
  the header of its true label. Both are effective exactly when 2s1f is.
* ``second`` needs two successes among the peers and shows the second one alone.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

from mopd_eval.errors import InputError
from mopd_eval.records import Rollout, group_rollouts, is_transcript

Placement = Literal["chat", "flat"]
PeerOrder = Literal["group", "random"]
SlotRole = Literal["solution", "another", "failure", "feedback"]


@dataclass(frozen=True)
class TemplateSet:
    """Text templates of the teacher prompt. ``reprompt`` has the five slot fields; blocks use ``{text}``."""

    name: str
    reprompt: str
    solution: str
    another: str
    failure: str
    feedback: str

    def __post_init__(self) -> None:
        for slot in ("prompt", "solution", "another", "failure", "feedback"):
            if "{" + slot + "}" not in self.reprompt:
                raise InputError(f"template set {self.name!r}: reprompt lacks the {{{slot}}} slot", field="reprompt")
        for block in ("solution", "another", "failure", "feedback"):
            if "{text}" not in getattr(self, block):
                raise InputError(f"template set {self.name!r}: {block} template lacks {{text}}", field=block)


# The trainer's template set of the reference code, byte for byte.
PAPER_TEMPLATES = TemplateSet(
    name="paper",
    reprompt="{prompt}{solution}{another}{failure}{feedback}\n\nCorrectly solve the original question.",
    solution="\nCorrect solution:\n\n{text}",
    another="\nAnother successful solution:\n\n{text}",
    failure="\nA known failed solution (avoid repeating this mistake):\n\n{text}",
    feedback="\nThe following is feedback from your unsuccessful earlier attempt:\n\n{text}",
)
# The reference analysis script's strings, byte for byte: every block ends with a blank line and
# the closing instruction with a newline. With placement ``flat`` these reproduce its prompts.
PAPER_ANALYSIS_TEMPLATES = TemplateSet(
    name="paper-analysis",
    reprompt="{prompt}{solution}{another}{failure}{feedback}\n\nCorrectly solve the original question.\n",
    solution="\nCorrect solution:\n\n{text}\n\n",
    another="\nAnother successful solution:\n\n{text}\n\n",
    failure="\nA known failed solution (avoid repeating this mistake):\n\n{text}\n\n",
    feedback="\nThe following is feedback from your unsuccessful earlier attempt:\n\n{text}\n\n",
)
BUILTIN_TEMPLATES: dict[str, TemplateSet] = {t.name: t for t in (PAPER_TEMPLATES, PAPER_ANALYSIS_TEMPLATES)}


@dataclass(frozen=True)
class Condition:
    """Which peers a condition shows, and how tables and figures name it.

    ``select="label"``: the first ``successes`` successes after skipping ``skip_successes`` and the
    first ``failures`` failures (``None`` = all of them, capped by ``max_successes``).
    ``select="random"`` / ``"reward"``: the budget is what ``select="label"`` with the same counts
    would fill for this target; the slots are filled with peers chosen ignoring labels, at random
    (shown in slot order: success slots first) or by highest reward (each shown under its true
    label). ``feedback`` adds the target's own verifier feedback. ``require="all"``: the row is
    effective when every named slot was filled; ``"any"``: when at least one was.

    ``label`` is the name in Table 7 and Figure 4 (the condition's name when empty); ``control``
    marks a control condition, set apart from the paper's rows and drawn hatched.
    """

    name: str
    successes: int | None = 0
    failures: int | None = 0
    skip_successes: int = 0
    max_successes: int | None = None
    select: Literal["label", "random", "reward"] = "label"
    feedback: bool = False
    require: Literal["all", "any"] = "all"
    label: str = ""
    control: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise InputError("a condition needs a non-empty name", field="name")
        if self.select not in ("label", "random", "reward"):
            raise InputError(f"condition {self.name!r}: select must be label, random or reward", field="select")
        if self.require not in ("all", "any"):
            raise InputError(f"condition {self.name!r}: require must be all or any", field="require")
        if self.select != "label" and (self.successes is None or self.failures is None):
            raise InputError(f"condition {self.name!r}: select={self.select} needs fixed slot counts", field="select")
        if self.select != "label" and (self.skip_successes or self.max_successes is not None):
            # The budget of a label-blind pick is counted from the first success on.
            raise InputError(
                f"condition {self.name!r}: skip_successes and max_successes need select=label", field="select"
            )
        for name in ("successes", "failures", "max_successes", "skip_successes"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
                raise InputError(f"condition {self.name!r}: {name} must be a non-negative integer or null", field=name)
        for name in ("feedback", "control"):
            if not isinstance(getattr(self, name), bool):
                raise InputError(f"condition {self.name!r}: {name} must be true or false", field=name)
        if not isinstance(self.label, str):
            raise InputError(f"condition {self.name!r}: label must be a string", field="label")
        if not self.label:
            object.__setattr__(self, "label", self.name)


BUILTIN_CONDITIONS: dict[str, Condition] = {
    c.name: c
    for c in [
        Condition("base", label="Question only"),
        Condition("primary", successes=1, label="Primary Sol."),
        Condition("second", successes=1, skip_successes=1, label="Second Sol."),
        Condition("failure", failures=1, label="Failure Sol."),
        Condition("primary+failure", successes=1, failures=1, label="Sol.+Failure"),
        Condition("2s1f", successes=2, failures=1, label="2 Suc.+1 Failure"),
        Condition("all", successes=None, failures=None, label="All Solutions (every peer)"),
        Condition("all-capped", successes=2, label="All Solutions (reference)"),
        Condition("random_peer", successes=2, failures=1, select="random", label="Random peers", control=True),
        Condition("score_ordered", successes=2, failures=1, select="reward", label="Score-ordered", control=True),
        Condition("feedback", feedback=True, label="SDPO feedback", control=True),
    ]
}
PAPER_CONDITIONS = ["base", "primary", "second", "failure", "primary+failure", "2s1f", "all"]
# The study adds the reference's reading of "All Solutions" next to ours, and the controls.
STUDY_CONDITIONS = [*PAPER_CONDITIONS, "all-capped", "random_peer", "score_ordered", "feedback"]


@dataclass(frozen=True)
class Block:
    role: SlotRole
    text: str
    rollout_id: str | None  # None for the target's own feedback


@dataclass(frozen=True)
class TeacherContext:
    """One (condition, target) row: the filled slots and the teacher's user-turn text."""

    condition: str
    problem_id: str
    rollout_id: str
    effective: bool
    blocks: tuple[Block, ...]
    reprompt: str  # the user-turn text; the original prompt when no slot is filled

    @property
    def peer_ids(self) -> list[str]:
        return [b.rollout_id for b in self.blocks if b.rollout_id is not None]


def _seed_for(seed: int, *parts: str) -> int:
    # Python's hash() is salted per process; a digest keeps orders identical across runs.
    digest = hashlib.sha256("\x1f".join([str(seed), *parts]).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def order_peers(group: Sequence[Rollout], target_index: int, order: PeerOrder = "group", seed: int = 0) -> list[Rollout]:
    """The target's peers: the group without the target, in group order or a seeded random order.

    The random order depends only on (seed, problem_id, target rollout_id), not on what else is
    scored, so a resumed or partial run sees the same peers.
    """
    target = group[target_index]
    peers = [r for i, r in enumerate(group) if i != target_index]
    if order == "random":
        random.Random(_seed_for(seed, "order", target.problem_id, target.rollout_id)).shuffle(peers)
    elif order != "group":
        raise InputError(f"unknown peer order {order!r} (use group or random)", field="order")
    return peers


def _select(cond: Condition, target: Rollout, peers: list[Rollout], seed: int) -> tuple[list[Rollout], list[Rollout], list[bool]]:
    """Return (peers shown under success headers, peers under the failure header, per named slot: filled)."""
    succ_all = [p for p in peers if p.success][cond.skip_successes :]
    fail_all = [p for p in peers if not p.success]
    if cond.max_successes is not None:
        succ_all = succ_all[: cond.max_successes]
    succ = succ_all if cond.successes is None else succ_all[: cond.successes]
    fail = fail_all if cond.failures is None else fail_all[: cond.failures]
    want_s = 1 if cond.successes is None else cond.successes
    want_f = 1 if cond.failures is None else cond.failures
    filled = [len(succ) >= want_s] * (want_s > 0) + [len(fail) >= want_f] * (want_f > 0)
    if cond.select == "label":
        return succ, fail, filled
    # Label-blind picks keep the label rule's budget for this target, so they show exactly as
    # many peers as the labelled condition would, and are effective exactly when it is.
    budget = len(succ) + len(fail)
    if cond.select == "random":
        chosen = random.Random(_seed_for(seed, "pick", cond.name, target.problem_id, target.rollout_id)).sample(
            peers, budget
        )
        return chosen[: len(succ)], chosen[len(succ) :], filled
    chosen = sorted(peers, key=lambda p: -p.reward)[:budget]  # stable: ties keep group order
    return [p for p in chosen if p.success], [p for p in chosen if not p.success], filled


def build_context(
    group: Sequence[Rollout],
    target_index: int,
    condition: Condition,
    templates: TemplateSet = PAPER_TEMPLATES,
    *,
    order: PeerOrder = "group",
    seed: int = 0,
) -> TeacherContext:
    """Assemble the teacher context of ``group[target_index]`` under ``condition``."""
    target = group[target_index]
    peers = order_peers(group, target_index, order, seed)
    succ, fail, filled = _select(condition, target, peers, seed)
    blocks: list[Block] = []
    for i, p in enumerate(succ):
        # Under `second` the one success shown is the second one, so it gets the "another" header.
        role: SlotRole = "solution" if i == 0 and condition.skip_successes == 0 else "another"
        blocks.append(Block(role, p.response, p.rollout_id))
    blocks += [Block("failure", p.response, p.rollout_id) for p in fail]
    if condition.feedback:
        fb = target.feedback if target.feedback and target.feedback.strip() else None
        filled.append(fb is not None)
        if fb is not None:
            blocks.append(Block("feedback", fb, None))
    # A condition that names no slot (base) is trivially effective.
    effective = all(filled) if condition.require == "all" else (any(filled) or not filled)
    return TeacherContext(
        condition=condition.name,
        problem_id=target.problem_id,
        rollout_id=target.rollout_id,
        effective=effective,
        blocks=tuple(blocks),
        reprompt=render_reprompt(target.prompt_text, blocks, templates),
    )


_SLOT_RE = re.compile(r"\{(prompt|solution|another|failure|feedback)\}")


def render_reprompt(prompt: str, blocks: Sequence[Block], templates: TemplateSet = PAPER_TEMPLATES) -> str:
    """The teacher's user turn. With no block it is ``prompt`` itself, without the closing line."""
    if not blocks:
        return prompt
    slots = {role: "" for role in ("solution", "another", "failure", "feedback")}
    for b in blocks:
        slots[b.role] += getattr(templates, b.role).replace("{text}", b.text)
    slots["prompt"] = prompt
    # One pass over the template only: str.format would choke on braces in code, and chained
    # replace() would substitute inside texts already inserted (a "{solution}" in the question).
    return _SLOT_RE.sub(lambda m: slots[m.group(1)], templates.reprompt)


def build_contexts(
    rollouts: Sequence[Rollout],
    conditions: Sequence[Condition],
    templates: TemplateSet = PAPER_TEMPLATES,
    *,
    order: PeerOrder = "group",
    seed: int = 0,
) -> Iterator[tuple[Rollout, TeacherContext]]:
    """Every (target, context) pair: problems in file order, then conditions, then targets."""
    for group in group_rollouts(rollouts).values():
        for cond in conditions:
            for i, target in enumerate(group):
                yield target, build_context(group, i, cond, templates, order=order, seed=seed)


# ---- rendering for a model -------------------------------------------------------------------


def teacher_messages(target: Rollout, ctx: TeacherContext) -> list[dict]:
    """Chat messages of the teacher: the target's prompt with its last user turn replaced."""
    if isinstance(target.prompt, str):
        return [{"role": "user", "content": ctx.reprompt}]
    msgs = [dict(m) for m in target.prompt]
    last_user = max(i for i, m in enumerate(msgs) if m["role"] == "user")
    msgs[last_user]["content"] = ctx.reprompt
    return msgs


def render_teacher_prompt(
    target: Rollout,
    ctx: TeacherContext,
    tokenizer: Any,
    placement: Placement = "chat",
    templates: TemplateSet = PAPER_TEMPLATES,
) -> str:
    """The exact text the teacher reads before the target response.

    ``chat`` (default, as in training): the reprompt is the user turn, rendered with the
    tokenizer's chat template and generation prompt. ``flat`` (the reference analysis script):
    the student's transcript decoded without special tokens, then the blocks and the closing
    instruction after the assistant marker, no chat tokens.
    """
    if placement == "chat":
        return tokenizer.apply_chat_template(teacher_messages(target, ctx), tokenize=False, add_generation_prompt=True)
    if placement == "flat":
        if is_transcript(target):
            # The prompt already is the decoded transcript (a verl import): the reprompt puts the
            # blocks and the closing line after it, which is the whole flat prompt.
            return ctx.reprompt
        student = teacher_messages(target, _no_blocks(ctx, target))
        ids = tokenizer.apply_chat_template(student, tokenize=True, add_generation_prompt=True)
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):
            ids = ids["input_ids"]
        transcript = tokenizer.decode(ids, skip_special_tokens=True)
        if not ctx.blocks:
            return transcript
        return transcript + render_reprompt("", ctx.blocks, templates)
    raise InputError(f"unknown placement {placement!r} (use chat or flat)", field="placement")


def _no_blocks(ctx: TeacherContext, target: Rollout) -> TeacherContext:
    return TeacherContext(ctx.condition, ctx.problem_id, ctx.rollout_id, ctx.effective, (), target.prompt_text)


def response_token_ids(target: Rollout, tokenizer: Any) -> list[int]:
    """The target as token ids: the ids the student sampled when recorded, else the tokenized text."""
    ids = _recorded_ids(target)
    if ids is not None:
        return ids
    return tokenizer(target.response, add_special_tokens=False)["input_ids"]


def _recorded_ids(target: Rollout) -> list[int] | None:
    ids = target.meta.get("response_token_ids")
    if isinstance(ids, list) and ids and all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        return ids
    return None


def check_response_token_ids(rollouts: Sequence[Rollout], tokenizer: Any, path: str | Path) -> None:
    """Refuse rollouts whose ``response`` is not what their recorded token ids decode to.

    The teacher scores the recorded ids, so a response edited after sampling (or ids left from
    another response) would silently score text nobody sees. ``InputError`` names the file, the
    line and the field; a record without ids is scored from its text and never refused.
    """
    for r in rollouts:
        ids = _recorded_ids(r)
        if ids is None:
            continue
        text = tokenizer.decode(ids, skip_special_tokens=True)
        if text != r.response and text.strip() != r.response.strip():
            from mopd_eval.jsonl import iter_jsonl

            line = next((n for n, obj in iter_jsonl(path) if str(obj.get("rollout_id")) == r.rollout_id
                         and str(obj.get("problem_id")) == r.problem_id), None)
            raise InputError(f"rollout {r.rollout_id!r}: the response is not what meta.response_token_ids decode to "
                             f"({text[:40]!r}... vs {r.response[:40]!r}...); fix the record or drop the ids to "
                             "score the text", path=path, line=line, field="meta.response_token_ids")


# ---- user-defined conditions and template sets -----------------------------------------------


def load_spec_file(path: str | Path) -> tuple[dict[str, Condition], dict[str, TemplateSet]]:
    """Read user conditions and template sets from YAML or JSON (format: ``docs/conditions.md``).

    Shape: ``{"conditions": [{"name": ..., "successes": 1, ...}], "templates": [{"name": ...,
    "reprompt": ..., "solution": ..., "another": ..., "failure": ..., "feedback": ...}]}``;
    fields are those of ``Condition`` and ``TemplateSet``. A name that is built in or given twice
    is an error: a spec adds conditions and template sets, it never changes one that scores may
    already have been computed with.
    """
    import yaml

    path = Path(path)
    if not path.exists():
        raise InputError("file not found", path=path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))  # YAML is a superset of JSON
    except yaml.YAMLError as e:
        line = getattr(getattr(e, "problem_mark", None), "line", None)
        raise InputError(f"cannot parse: {e}", path=path, line=None if line is None else line + 1) from None
    if not isinstance(data, dict):
        raise InputError("expected a mapping with 'conditions' and/or 'templates'", path=path)
    unknown = set(data) - {"conditions", "templates"}
    if unknown:
        raise InputError(f"unknown top-level keys {sorted(unknown)} (allowed: conditions, templates)", path=path)
    conds = _spec_entries(path, data, "conditions", Condition, BUILTIN_CONDITIONS)
    temps = _spec_entries(path, data, "templates", TemplateSet, BUILTIN_TEMPLATES)
    return conds, temps


def _spec_entries(path: Path, data: dict, kind: str, cls: type, builtin: dict) -> dict:
    items = data.get(kind) or []
    if not isinstance(items, list):
        raise InputError(f"{kind}: expected a list", path=path, field=kind)
    allowed = {f.name for f in fields(cls)}
    out: dict = {}
    for i, item in enumerate(items):
        where = f"{kind}[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"]:
            raise InputError(f"{where}: expected a mapping with a non-empty 'name'", path=path, field=where)
        name = item["name"]
        if name in builtin:
            raise InputError(
                f"{where}: {name!r} is a built-in {kind[:-1]}; give yours another name",
                path=path, field=f"{where}.name",
            )
        if name in out:
            raise InputError(f"{where}: {name!r} is defined twice in this file", path=path, field=f"{where}.name")
        extra = set(item) - allowed
        if extra:
            raise InputError(f"{where}: unknown keys {sorted(extra)} (allowed: {sorted(allowed)})", path=path, field=where)
        try:
            out[name] = cls(**item)
        except TypeError as e:
            raise InputError(f"{where}: {e}", path=path, field=where) from None
        except InputError as e:
            raise InputError(e.message, path=path, field=f"{where}.{e.field}") from None
    return out


def resolve_conditions(names: Iterable[str], extra: dict[str, Condition] | None = None) -> list[Condition]:
    """Look condition names up among the built-in and user-defined ones; unknown names are an error."""
    known = {**BUILTIN_CONDITIONS, **(extra or {})}
    out = []
    for name in names:
        if name not in known:
            raise InputError(f"unknown condition {name!r}; known: {', '.join(known)}", field="conditions")
        out.append(known[name])
    return out


def resolve_templates(name: str, extra: dict[str, TemplateSet] | None = None) -> TemplateSet:
    """Look a template-set name up among the built-in and user-defined ones; unknown is an error."""
    known = {**BUILTIN_TEMPLATES, **(extra or {})}
    if name not in known:
        raise InputError(f"unknown template set {name!r}; known: {', '.join(known)}", field="templates")
    return known[name]


def context_row(target: Rollout, ctx: TeacherContext) -> dict:
    """A JSON-ready record of one context (what ``mopd-eval contexts`` writes)."""
    return {
        "condition": ctx.condition,
        "problem_id": ctx.problem_id,
        "rollout_id": ctx.rollout_id,
        "effective": ctx.effective,
        "target_success": target.success,
        "blocks": [{"role": b.role, "rollout_id": b.rollout_id} for b in ctx.blocks],
        "teacher_user_turn": ctx.reprompt,
    }
