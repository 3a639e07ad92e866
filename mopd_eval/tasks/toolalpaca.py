"""``toolalpaca``: ToolAlpaca tool-use requests, graded by exact structured matching.

Data: ToolAlpaca's evaluation file (``eval_real.json`` / ``eval_simulated.json``; JSON list,
JSONL or parquet), one record per API: ``Name, Description, Documentation, NLDocumentation,
Function_Description, Instructions`` and ``Golden_Answers``, where ``Golden_Answers[i]`` is the
list of steps ``{"Action": NAME, "Action_Input": JSON string}`` that answers
``Instructions[i]``. One problem per instruction, id ``<Name>-<i>``.

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

Verdict (offline; the official grade is a GPT-4 judge): every ``Action:`` line before the first
``Final Answer:`` with the JSON object that follows its ``Action Input:`` (read with balanced
braces, strings respected; an empty input is ``{}``). Correct when the multiset of action names
equals the gold's and the merged arguments (all steps' objects merged in order, later keys win)
equal the gold's as canonical JSON (sorted keys; ``"5"`` and ``5`` differ). An Action Input
that is not a JSON object fails the sample (``invalid_format``). A gold step whose
``Action_Input`` is not JSON (a placeholder, as in 30 of ToolAlpaca's 100 simulated golds)
cannot be graded this way: that problem gets ``invalid_test``.
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
from mopd_eval.tasks.data_files import Record, read_records
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


def merged_arguments(calls: Sequence[Call]) -> dict:
    merged: dict = {}
    for c in calls:
        merged.update(c.arguments or {})
    return merged


def gold_calls(steps, rec: Record, i: int) -> tuple[list[Call], str | None]:
    """Gold steps of instruction ``i`` -> (calls, why the gold cannot be graded or None)."""
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


class ToolAlpacaTask:
    name = "toolalpaca"

    def load(self, path: str | None = None, *, limit: int | None = None, seed: int = 0) -> list[Problem]:
        """One problem per (API, instruction) of ``path``, in file order (``seed`` unused)."""
        if path is None:
            raise InputError("toolalpaca needs an evaluation file: --data eval_simulated.json (see docs/tasks.md)", field="--data")
        out: list[Problem] = []
        for rec in read_records(path):
            api = str(rec.require("Name"))
            instructions = rec.require("Instructions")
            golds = rec.require("Golden_Answers")
            if not isinstance(instructions, list) or not isinstance(golds, list):
                raise rec.error("expected lists", field="Instructions")
            if len(instructions) != len(golds):
                raise rec.error(f"{len(instructions)} instructions but {len(golds)} golden answers", field="Golden_Answers")
            tools, names = _tools(rec)
            description = str(rec.get("Description", default=""))
            for i, (instr, steps) in enumerate(zip(instructions, golds, strict=True)):
                calls, invalid = gold_calls(steps, rec, i)
                names_i = names or sorted({c.action for c in calls})
                meta = {"api": api, "index": i}
                if invalid:
                    meta["invalid"] = invalid
                gold = [{"Action": c.action, "Action_Input": c.raw_input if c.arguments is None else canonical(c.arguments)}
                        for c in calls]
                out.append(Problem(f"{api}-{i}", build_prompt(api, description, tools, names_i, str(instr)), gold, meta))
        return out[:limit] if limit else out

    def messages(self, problem: Problem) -> list[dict]:
        return [{"role": "user", "content": problem.question}]

    def verify(self, problems: Sequence[Problem], responses: Sequence[str], *, progress: bool = False) -> list[Verdict]:
        return [verify_calls(p, r) for p, r in zip(problems, responses, strict=True)]

    def close(self) -> None:
        pass


def verify_calls(problem: Problem, response: str) -> Verdict:
    """The verdict of one response (module docstring rules)."""
    if "invalid" in problem.meta:
        return Verdict.failed("invalid_test", problem.meta["invalid"])
    gold = [Call(g["Action"], _gold_args(g["Action_Input"]), g["Action_Input"]) for g in problem.ground_truth]
    calls = parse_calls(response)
    if not calls:
        return Verdict.failed("no_answer", "No tool call found: write 'Action: <tool>' and 'Action Input: {...}'.")
    bad = [c for c in calls if c.arguments is None]
    if bad:
        return Verdict.failed("invalid_format", f"The Action Input of {bad[0].action!r} is not a JSON object: {bad[0].raw_input[:200]!r}.")
    if Counter(c.action for c in calls) != Counter(c.action for c in gold):
        return Verdict.failed("wrong", f"The tools called ({', '.join(c.action for c in calls)}) are not the right ones.")
    if canonical(merged_arguments(calls)) != canonical(merged_arguments(gold)):
        return Verdict.failed("wrong", "The right tools were called, but with the wrong arguments.")
    return Verdict.correct()


def _gold_args(raw: str) -> dict:
    if not raw.strip() or raw.strip() == "{}":
        return {}
    return json.loads(raw)
