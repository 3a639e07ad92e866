"""Peer contexts: what the teacher sees when it scores one target rollout.

The single place where teacher prompts are assembled, used by the signal study (``analysis/``)
and by the trainer (``training/``), so the teacher reads the same text in both.

A condition picks peers of the target (the other rollouts of its group, never the target
itself) and puts them into the slots of a template set:

    reprompt = {prompt}{solution}{another}{failure}{feedback} + closing instruction

The first success shown goes under the ``solution`` header, every further success under
``another``, each failure under ``failure``, and the target's own verifier feedback under
``feedback``. With no slot filled the teacher prompt is the original prompt, unchanged. A row
is *effective* when every slot its condition names was filled.

Choices where DESIGN.md is silent (also in the README):

* ``all`` shows every peer: first success as ``solution``, further successes as ``another``,
  every failure as ``failure``. It names the solution and failure slots, so it is effective
  when at least one success and one failure are shown. ``all-capped`` keeps at most two
  successes (the reference code's behaviour) and every failure.
* ``random_peer`` and ``score_ordered`` fill the 2s1f budget (two solution slots, one failure
  slot) with peers chosen ignoring their labels: uniformly at random (seeded per target) or by
  highest reward (ties keep group order).
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
from mopd_eval.records import Rollout, group_rollouts

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


# The paper's template set, byte for byte (DESIGN.md).
PAPER_TEMPLATES = TemplateSet(
    name="paper",
    reprompt="{prompt}{solution}{another}{failure}{feedback}\n\nCorrectly solve the original question.",
    solution="\nCorrect solution:\n\n{text}",
    another="\nAnother successful solution:\n\n{text}",
    failure="\nA known failed solution (avoid repeating this mistake):\n\n{text}",
    feedback="\nThe following is feedback from your unsuccessful earlier attempt:\n\n{text}",
)


@dataclass(frozen=True)
class Condition:
    """Which peers a condition shows.

    ``select="label"``: the first ``successes`` successes after skipping ``skip_successes`` and the
    first ``failures`` failures (``None`` = all of them, capped by ``max_successes``).
    ``select="random"`` / ``"reward"``: ``successes + failures`` peers ignoring labels, picked
    at random or by highest reward; the first ``successes`` fill success slots, the rest
    failure slots. ``feedback`` adds the target's own verifier feedback. ``require="all"``: the
    row is effective when every named slot was filled; ``"any"``: when at least one was.
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

    def __post_init__(self) -> None:
        if self.select not in ("label", "random", "reward"):
            raise InputError(f"condition {self.name!r}: select must be label, random or reward", field="select")
        if self.require not in ("all", "any"):
            raise InputError(f"condition {self.name!r}: require must be all or any", field="require")
        if self.select != "label" and (self.successes is None or self.failures is None):
            raise InputError(f"condition {self.name!r}: select={self.select} needs fixed slot counts", field="select")
        for name in ("successes", "failures", "max_successes"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
                raise InputError(f"condition {self.name!r}: {name} must be a non-negative integer or null", field=name)


BUILTIN_CONDITIONS: dict[str, Condition] = {
    c.name: c
    for c in [
        Condition("base", label="Question only"),
        Condition("primary", successes=1, label="Primary Sol."),
        Condition("second", successes=1, skip_successes=1, label="Second Sol."),
        Condition("failure", failures=1, label="Failure Sol."),
        Condition("primary+failure", successes=1, failures=1, label="Sol.+Failure"),
        Condition("2s1f", successes=2, failures=1, label="2 Suc.+1 Failure"),
        Condition("all", successes=None, failures=None, label="All Solutions"),
        Condition("all-capped", successes=None, failures=None, max_successes=2, label="All (capped 2 suc.)"),
        Condition("random_peer", successes=2, failures=1, select="random", label="Random peers"),
        Condition("score_ordered", successes=2, failures=1, select="reward", label="Score-ordered"),
        Condition("feedback", feedback=True, label="SDPO feedback"),
    ]
}
PAPER_CONDITIONS = ["base", "primary", "second", "failure", "primary+failure", "2s1f", "all"]
STUDY_CONDITIONS = [*PAPER_CONDITIONS, "random_peer", "score_ordered", "feedback"]


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


def _select(cond: Condition, target: Rollout, peers: list[Rollout], seed: int) -> tuple[list[Rollout], list[Rollout], bool]:
    """Return (success-slot peers, failure-slot peers, every named slot filled)."""
    if cond.select == "label":
        succ_all = [p for p in peers if p.success][cond.skip_successes :]
        fail_all = [p for p in peers if not p.success]
        if cond.max_successes is not None:
            succ_all = succ_all[: cond.max_successes]
        succ = succ_all if cond.successes is None else succ_all[: cond.successes]
        fail = fail_all if cond.failures is None else fail_all[: cond.failures]
        want_s = 1 if cond.successes is None else cond.successes
        want_f = 1 if cond.failures is None else cond.failures
        filled = [len(succ) >= want_s] * (want_s > 0) + [len(fail) >= want_f] * (want_f > 0)
        return succ, fail, filled
    budget = cond.successes + cond.failures
    if cond.select == "random":
        chosen = random.Random(_seed_for(seed, "pick", cond.name, target.problem_id, target.rollout_id)).sample(
            peers, min(budget, len(peers))
        )
    else:  # reward: stable sort keeps group order among equal rewards
        chosen = sorted(peers, key=lambda p: -p.reward)[:budget]
    return chosen[: cond.successes], chosen[cond.successes :], [len(chosen) >= budget] * (budget > 0)


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
    ids = target.meta.get("response_token_ids")
    if isinstance(ids, list) and ids and all(isinstance(i, int) for i in ids):
        return ids
    return tokenizer(target.response, add_special_tokens=False)["input_ids"]


# ---- user-defined conditions and template sets -----------------------------------------------


def load_spec_file(path: str | Path) -> tuple[dict[str, Condition], dict[str, TemplateSet]]:
    """Read user conditions and template sets from YAML or JSON.

    Shape: ``{"conditions": [{"name": ..., "successes": 1, ...}], "templates": [{"name": ...,
    "reprompt": ..., "solution": ..., "another": ..., "failure": ..., "feedback": ...}]}``;
    fields are those of ``Condition`` and ``TemplateSet``.
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
    conds: dict[str, Condition] = {}
    temps: dict[str, TemplateSet] = {}
    for kind, cls, out in (("conditions", Condition, conds), ("templates", TemplateSet, temps)):
        allowed = {f.name for f in fields(cls)}
        for i, item in enumerate(data.get(kind) or []):
            where = f"{kind}[{i}]"
            if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"]:
                raise InputError(f"{where}: expected a mapping with a non-empty 'name'", path=path, field=where)
            extra = set(item) - allowed
            if extra:
                raise InputError(f"{where}: unknown keys {sorted(extra)} (allowed: {sorted(allowed)})", path=path, field=where)
            try:
                out[item["name"]] = cls(**item)
            except TypeError as e:
                raise InputError(f"{where}: {e}", path=path, field=where) from None
            except InputError as e:
                raise InputError(e.message, path=path, field=f"{where}.{e.field}") from None
    return conds, temps


def resolve_conditions(names: Iterable[str], extra: dict[str, Condition] | None = None) -> list[Condition]:
    """Look condition names up among the built-in and user-defined ones; unknown names are an error."""
    known = {**BUILTIN_CONDITIONS, **(extra or {})}
    out = []
    for name in names:
        if name not in known:
            raise InputError(f"unknown condition {name!r}; known: {', '.join(known)}", field="conditions")
        out.append(known[name])
    return out


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
