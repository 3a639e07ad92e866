"""``toolalpaca``: ToolAlpaca tool-use requests, graded by exact structured matching.

Data (``--data``: files, a comma list, a glob or ``hf:NAME[:CONFIG]:SPLIT``; see
``tasks/data_files.py``): ToolAlpaca's evaluation file (``eval_real.json`` /
``eval_simulated.json``; JSON list, JSONL or parquet), one record per API: ``Name,
Description, Documentation, NLDocumentation, Function_Description, Instructions`` and
``Golden_Answers``, where ``Golden_Answers[i]`` is the list of steps ``{"Action": NAME,
"Action_Input": JSON string}`` that answers ``Instructions[i]``. One problem per instruction,
id ``<Name>-<i>``.

Prompt (our ReAct wording of ToolAlpaca's agent format; ``{tools}`` lists
``Function_Description`` as ``- name: description``, or ``NLDocumentation`` when there is none)::

    Answer the user's request with the tools of the {Name} API.
    {Description}

    Tools:
    {tools}

    Use this format:
    Thought: what to do next
    Action: the tool to use, one of [{names}]
    Action Input: the tool's input as a JSON object
    Observation: the tool's result
    ... (Thought / Action / Action Input / Observation can repeat)
    Thought: I know the final answer.
    Final Answer: the answer to the user

    Request: {instruction}

Verdict (offline; the official grade is a GPT-4 judge): the calls of the response are every
``Action:`` line before the first ``Final Answer:`` with the JSON object that follows its
``Action Input:`` (read with balanced braces, strings respected; an empty input is ``{}``).
Correct when the multiset of calls ``(action name, canonical JSON of the arguments)`` (sorted
keys; ``"5"`` and ``5`` differ) equals the gold's: the gold's calls in another order are right;
one call repeated in place of two different ones, a missing call or an extra call are wrong. An
Action Input that is not a JSON object fails the sample (``invalid_format``).

Invalid problems (``invalid_test`` for every sample, the run goes on): a gold step whose
``Action_Input`` is not JSON (a placeholder, as in 30 of ToolAlpaca's 100 simulated golds)
cannot be graded this way; a gold step that is not ``{Action, Action_Input}`` makes that
instruction invalid; a record whose ``Instructions`` and ``Golden_Answers`` are missing, not
lists or of different lengths makes each of its instructions (or, without a list of
instructions, one problem ``<Name>-0``) invalid.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from mopd_eval.errors import InputError
from mopd_eval.tasks.base import Problem
from mopd_eval.tasks.data_files import (
    Record,
    build_problems,
    invalid_problem,
    invalid_verdict,
    read_records,
    require_data,
)
from mopd_eval.verdict import Verdict

FORMAT = (
    "Use this format:\n"
    "Thought: what to do next\n"
    "Action: the tool to use, one of [{names}]\n"
    "Action Input: the tool's input as a JSON object\n"
    "Observation: the tool's result\n"
    "... (Thought / Action / Action Input / Observation can repeat)\n"
    "Thought: I know the final answer.\n"
    "Final Answer: the answer to the user"
)
COLUMNS = ("Name", "Description", "Function_Description", "NLDocumentation", "Instructions", "Golden_Answers")
_ACTION_RE = re.compile(r"^[ \t]*Action[ \t]*:[ \t]*(.*?)[ \t]*$", re.M)
_INPUT_RE = re.compile(r"^[ \t]*Action[ \t]+Input[ \t]*:", re.M)
_FINAL_RE = re.compile(r"^[ \t]*Final[ \t]+Answer[ \t]*:", re.M)


@dataclass(frozen=True)
class Call:
    """One tool call: ``arguments`` is None when the Action Input is not a JSON object."""

    action: str
    arguments: dict | None
    raw_input: str


def balanced_json(text: str, start: int = 0) -> tuple[str, int] | None:
    """The ``{...}`` starting at the first ``{`` at or after ``start``, with nested braces and
    JSON strings respected: ``(text of the object, end index)``, or None if there is no ``{``
    or it is never closed."""
    i = text.find("{", start)
    if i < 0:
        return None
    depth, in_str, esc = 0, False, False
    for j in range(i, len(text)):
        ch = text[j]
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[i : j + 1], j + 1
    return None


def _parse_input(segment: str) -> tuple[dict | None, str]:
    """Arguments from the text after ``Action Input:`` up to the next action."""
    line = segment.strip().split("\n", 1)[0].strip()
    if not line or line in ("{}", "None", "none", "null"):
        return {}, line
    if not line.startswith("{"):
        return None, line
    found = balanced_json(segment)
    if found is None:
        return None, line
    try:
        value = json.loads(found[0])
    except json.JSONDecodeError:
        return None, found[0]
    return (value if isinstance(value, dict) else None), found[0]


def parse_calls(response: str) -> list[Call]:
    """The tool calls of a ReAct response, in order (module docstring rules)."""
    final = _FINAL_RE.search(response)
    text = response[: final.start()] if final else response
    actions = list(_ACTION_RE.finditer(text))
    calls = []
    for k, m in enumerate(actions):
        end = actions[k + 1].start() if k + 1 < len(actions) else len(text)
        inp = _INPUT_RE.search(text, m.end(), end)
        if inp is None:
            calls.append(Call(m.group(1), {}, ""))
            continue
        args, raw = _parse_input(text[inp.end() : end])
        calls.append(Call(m.group(1), args, raw))
    return calls


def canonical(value) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def call_multiset(calls: Sequence[Call]) -> Counter:
    """The calls as a multiset of ``(action, canonical JSON of the arguments)``."""
    return Counter((c.action, canonical(c.arguments)) for c in calls)


def gold_calls(steps, rec: Record, i: int) -> tuple[list[Call], str | None]:
    """Gold steps of instruction ``i`` -> (calls, why the gold cannot be graded or None).

    Raises ``InputError`` for steps that are not a list of ``{Action, Action_Input}``."""
    if not isinstance(steps, list):
        raise rec.error(f"Golden_Answers[{i}]: expected a list of steps, got {type(steps).__name__}", field="Golden_Answers")
    calls, problem = [], None
    for s, step in enumerate(steps):
        if not isinstance(step, dict) or "Action" not in step:
            raise rec.error(f"Golden_Answers[{i}][{s}]: expected {{Action, Action_Input}}", field="Golden_Answers")
        raw = step.get("Action_Input", "")
        if isinstance(raw, dict):
            args = raw
        elif raw is None or str(raw).strip() in ("", "{}"):
            args = {}
        else:
            try:
                args = json.loads(raw)
            except (json.JSONDecodeError, TypeError):
                args = None
            if not isinstance(args, dict):
                problem = f"gold step {s} ({step['Action']}) has a non-JSON Action_Input: {str(raw)[:80]!r}"
                args = None
        calls.append(Call(str(step["Action"]), args, str(raw)))
    return calls, problem


def _tools(rec: Record) -> tuple[str, list[str]]:
    desc = rec.get("Function_Description")
    if isinstance(desc, str):
        with contextlib.suppress(json.JSONDecodeError):
            desc = json.loads(desc)
    if isinstance(desc, dict):
        items = {k: v for k, v in desc.items() if k != "components"}
        return "\n".join(f"- {k}: {str(v).strip()}" for k, v in items.items()), list(items)
    doc = rec.get("NLDocumentation", default=desc or "")
    return str(doc).strip(), []


def build_prompt(name: str, description: str, tools: str, names: Sequence[str], instruction: str) -> str:
    return (f"Answer the user's request with the tools of the {name} API.\n{description.strip()}\n\n"
            f"Tools:\n{tools}\n\n{FORMAT.format(names=', '.join(names))}\n\nRequest: {instruction.strip()}")


def _api(rec: Record) -> str:
    return str(rec.get("Name", default=f"toolalpaca-{rec.position}"))


def _instruction_problem(rec: Record, i: int, instruction, steps, tools: str, names: list[str]) -> Problem:
    api, pid = _api(rec), f"{_api(rec)}-{i}"
    try:
        if not isinstance(instruction, str) or not instruction.strip():
            raise rec.error(f"Instructions[{i}]: expected a non-empty string, got {instruction!r:.40}", field="Instructions")
        calls, invalid = gold_calls(steps, rec, i)
    except InputError as e:  # this instruction only; the API's other instructions still count
        return invalid_problem(pid, str(e), instruction if isinstance(instruction, str) else "", {"api": api, "index": i})
    description = str(rec.get("Description", default=""))
    prompt = build_prompt(api, description, tools, names or sorted({c.action for c in calls}), instruction)
    meta = {"api": api, "index": i}
    if invalid:
        meta["invalid"] = invalid
    gold = [{"Action": c.action, "Action_Input": c.raw_input if c.arguments is None else canonical(c.arguments)}
            for c in calls]
    return Problem(pid, prompt, gold, meta)


def _record_problems(rec: Record) -> list[Problem]:
    rec.require("Name")
    instructions = rec.require("Instructions")
    golds = rec.require("Golden_Answers")
    if not isinstance(instructions, list):
        raise rec.error(f"expected a list, got {type(instructions).__name__}", field="Instructions")
    if not isinstance(golds, list):
        raise rec.error(f"expected a list, got {type(golds).__name__}", field="Golden_Answers")
    if len(instructions) != len(golds):
        raise rec.error(f"{len(instructions)} instructions but {len(golds)} golden answers", field="Golden_Answers")
    tools, names = _tools(rec)
    return [_instruction_problem(rec, i, instr, steps, tools, names)
            for i, (instr, steps) in enumerate(zip(instructions, golds, strict=True))]


def _invalid_record(rec: Record, err: InputError) -> list[Problem]:
    instructions = rec.data.get("Instructions")
    texts = instructions if isinstance(instructions, list) and instructions else [""]
    return [invalid_problem(f"{_api(rec)}-{i}", str(err), t if isinstance(t, str) else "", {"api": _api(rec), "index": i})
            for i, t in enumerate(texts)]


class ToolAlpacaTask:
    name = "toolalpaca"

    def load(self, data: str | None = None, *, limit: int | None = None, seed: int = 0) -> list[Problem]:
        """One problem per (API, instruction) of ``data``, in order (``seed`` unused)."""
        data = require_data(data, self.name, "ToolAlpaca's eval_simulated.json or eval_real.json")
        out = build_problems(read_records(data, columns=COLUMNS), _record_problems, _invalid_record, id_field="Name")
        return out[:limit] if limit else out

    def messages(self, problem: Problem) -> list[dict]:
        return [{"role": "user", "content": problem.question}]

    def verify(self, problems: Sequence[Problem], responses: Sequence[str], *, progress: bool = False) -> list[Verdict]:
        return [verify_calls(p, r) for p, r in zip(problems, responses, strict=True)]

    def close(self) -> None:
        pass


def verify_calls(problem: Problem, response: str) -> Verdict:
    """The verdict of one response (module docstring rules)."""
    invalid = invalid_verdict(problem)
    if invalid is not None:
        return invalid
    gold = [Call(g["Action"], _gold_args(g["Action_Input"]), g["Action_Input"]) for g in problem.ground_truth]
    calls = parse_calls(response)
    if not calls:
        return Verdict.failed("no_answer", "No tool call found: write 'Action: <tool>' and 'Action Input: {...}'.")
    bad = [c for c in calls if c.arguments is None]
    if bad:
        return Verdict.failed("invalid_format", f"The Action Input of {bad[0].action!r} is not a JSON object: {bad[0].raw_input[:200]!r}.")
    if call_multiset(calls) == call_multiset(gold):
        return Verdict.correct()
    if Counter(c.action for c in calls) != Counter(c.action for c in gold):
        return Verdict.failed("wrong", f"The tools called ({', '.join(c.action for c in calls)}) are not the right ones.")
    return Verdict.failed("wrong", "The right tools were called, but not with the right arguments for each call.")


def _gold_args(raw: str) -> dict:
    if not raw.strip() or raw.strip() == "{}":
        return {}
    return json.loads(raw)
