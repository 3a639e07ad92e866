"""``lcb``: LiveCodeBench code generation problems from its release files, graded in the sandbox.

Data (``--data``: files, a comma list, a glob or ``hf:NAME[:CONFIG]:SPLIT``; see
``tasks/data_files.py``): release files (``test.jsonl`` ... ``test6.jsonl`` of
``livecodebench/code_generation_lite``, or the same records as a JSON list or parquet) with
``question_id, question_title, question_content, platform, contest_id, contest_date (ISO),
starter_code, difficulty, public_test_cases, private_test_cases, metadata``. Problems keep the
data's order. Only those with ``start <= contest_date < end`` are kept (default: the paper's v6
window, 2025-02-01 to 2025-05-01); an empty bound is open.

Tests: ``public_test_cases`` (a JSON string: a list of ``{input, output, testtype}``) then
``private_test_cases`` (the same as a JSON string, or base64 -> zlib -> pickle of that JSON
string). The pickle is read by an unpickler that refuses every global (``find_class``), so a
payload can only yield plain data and never runs code; the payload must be that JSON text.
``testtype`` ``stdin`` runs :func:`sandbox.run_stdio_tests`; ``functional`` runs
:func:`sandbox.run_call_tests` on ``Solution().<metadata.func_name>``.

Invalid problems (each sample gets ``invalid_test`` saying why, the run goes on): tests that
cannot be decoded, mixed test types, call-based tests without ``func_name``, and a record that
does not fit the schema (no ``question_id`` or ``question_content``, a ``contest_date`` that is
not an ISO date: such a record cannot be placed in the window and is kept). A duplicate
``question_id`` stops the load.

Prompt, ``prompt_style="lcb"`` (default): lcb_runner's generic chat format (its ``OpenAIChat``
style), a system message and a user turn::

    system: You are an expert Python programmer. You will be given a question (problem
            specification) and will generate a correct Python program that matches the
            specification and passes all tests.
    user:   ### Question:
            {question_content}

            ### Format: {with starter code: "You will use the following starter code to write
            the solution to the problem and enclose your code within delimiters." / without:
            "Read the inputs from stdin solve the problem and write the answer to stdout (do
            not directly test on the sample inputs). Enclose your code within delimiters as
            follows. Ensure that when the python program runs, it reads the inputs, runs the
            algorithm and writes output to STDOUT."}
            ```python
            {starter_code, or "# YOUR CODE HERE"}
            ```

            ### Answer: (use the provided format with backticks)

``prompt_style="mopd"``: this project's earlier wording, one user turn::

    You will be given a programming problem. Write a correct Python 3 program that solves it
    and passes all tests.

    Question: {question_content}

    ### Format: <starter-code instructions, or stdin/stdout instructions>

    ### Answer: (use the format above, with backticks)

Program (``code_extraction``): ``"lcb"`` (default) is LiveCodeBench's rule
(:func:`code_extract.extract_code_lcb`: the lines between the last two lines containing
```` ``` ````, empty with fewer than two), so scores compare with the leaderboard; ``"general"``
is this project's rule (:func:`code_extract.extract_code`). Per-test timeout 6 s; tests stop at
the first failure unless ``partial_credit`` (then every test runs and ``partial`` is the exact
fraction passed).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import pickle
import zlib
from collections.abc import Sequence
from datetime import date
from functools import partial

from mopd_eval.code_extract import extract_code, extract_code_lcb
from mopd_eval.errors import InputError
from mopd_eval.tasks.base import Problem
from mopd_eval.tasks.code_verdict import harness_verdict, run_jobs
from mopd_eval.tasks.data_files import (
    Record,
    build_problems,
    invalid_problem,
    invalid_verdict,
    read_records,
    require_data,
)
from mopd_eval.verdict import Verdict

COLUMNS = ("question_id", "question_title", "question_content", "platform", "contest_date", "starter_code",
           "difficulty", "public_test_cases", "private_test_cases", "metadata")
PROMPT_STYLES = ("lcb", "mopd")
CODE_EXTRACTIONS = {"lcb": extract_code_lcb, "general": extract_code}

# lcb_runner's generic chat prompt (prompts/code_generation.py, OpenAIChat style), verbatim:
# the same text as the leaderboard's runs, so scores compare.
LCB_SYSTEM = ("You are an expert Python programmer. You will be given a question (problem specification) "
              "and will generate a correct Python program that matches the specification and passes all tests.")
LCB_FORMAT_STARTER = ("You will use the following starter code to write the solution to the problem and "
                      "enclose your code within delimiters.")
LCB_FORMAT_STDIN = ("Read the inputs from stdin solve the problem and write the answer to stdout (do not "
                    "directly test on the sample inputs). Enclose your code within delimiters as follows. "
                    "Ensure that when the python program runs, it reads the inputs, runs the algorithm and "
                    "writes output to STDOUT.")

# This project's earlier wording (prompt_style="mopd").
HEADER = ("You will be given a programming problem. Write a correct Python 3 program that solves it "
          "and passes all tests.\n\nQuestion: {question}\n\n")
FORMAT_STARTER = ("### Format: Use the following starter code and put your complete solution in one "
                  "```python code block.\n```python\n{starter}\n```\n\n")
FORMAT_STDIN = ("### Format: Read the input from standard input, solve the problem, and write the answer "
                "to standard output (do not test on the sample inputs yourself). Put your program in one "
                "```python code block:\n```python\n# YOUR CODE HERE\n```\n\n")
ANSWER = "### Answer: (use the format above, with backticks)\n"


def build_prompt(question: str, starter_code: str, style: str = "lcb") -> str:
    """The user turn of a problem in ``style`` (module docstring)."""
    if style == "mopd":
        fmt = FORMAT_STARTER.format(starter=starter_code) if starter_code.strip() else FORMAT_STDIN
        return HEADER.format(question=question) + fmt + ANSWER
    # lcb_runner tests the starter code's truthiness, so whitespace-only starter code counts.
    fmt, code = (LCB_FORMAT_STARTER, starter_code) if starter_code else (LCB_FORMAT_STDIN, "# YOUR CODE HERE")
    return (f"### Question:\n{question}\n\n### Format: {fmt}\n```python\n{code}\n```\n\n"
            "### Answer: (use the provided format with backticks)\n\n")


class _PlainDataUnpickler(pickle.Unpickler):
    """Unpickles plain data only: any reference to a class or function is refused."""

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only plain data is accepted")


def decode_test_cases(raw) -> list[dict]:
    """Test cases from LiveCodeBench's ``*_test_cases`` field.

    ``raw`` is a JSON string, base64 of zlib of a pickled JSON string (LiveCodeBench's private
    tests; a pickled list of plain data is accepted too), or an already decoded list. Returns ``[{input, output, testtype}, ...]``. Raises
    ``ValueError`` saying what is wrong for anything else; never executes pickled code.
    """
    if isinstance(raw, list):
        value = raw
    elif isinstance(raw, str):
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = _unpack_compressed(raw)
            if isinstance(value, str):
                try:
                    value = json.loads(value)
                except json.JSONDecodeError as e:
                    raise ValueError(f"the unpacked tests are not JSON ({e.msg})") from None
    else:
        raise ValueError(f"expected a string or a list, got {type(raw).__name__}")
    if not isinstance(value, list):
        raise ValueError(f"expected a list of test cases, got {type(value).__name__}")
    for i, t in enumerate(value):
        if not isinstance(t, dict):
            raise ValueError(f"test {i} is a {type(t).__name__}, not an object")
        for f in ("input", "output"):
            if not isinstance(t.get(f), str):
                raise ValueError(f"test {i}: field {f!r} missing or not a string")
        if t.get("testtype", "stdin") not in ("stdin", "functional"):
            raise ValueError(f"test {i}: unknown testtype {t.get('testtype')!r}")
    return value


def _unpack_compressed(raw: str):
    """base64 -> zlib -> plain-data pickle; the JSON text (or an already decoded list)."""
    try:
        packed = base64.b64decode(raw.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("neither JSON nor base64") from None
    try:
        data = zlib.decompress(packed)
    except zlib.error as e:
        raise ValueError(f"base64 but not zlib data ({e})") from None
    try:
        obj = _PlainDataUnpickler(io.BytesIO(data)).load()
    except Exception as e:  # any malformed pickle: the problem is invalid, the run goes on
        raise ValueError(f"not a plain-data pickle ({type(e).__name__}: {e})") from None
    if isinstance(obj, bytes):
        try:
            obj = obj.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError("the pickle holds bytes that are not UTF-8 text") from None
    if not isinstance(obj, (str, list)):
        raise ValueError(f"the pickle holds a {type(obj).__name__}, not the JSON text of the tests")
    return obj


def _date(rec: Record, value) -> str:
    text = str(value)[:10]
    try:
        date.fromisoformat(text)
    except ValueError:
        raise rec.error(f"not an ISO date: {value!r:.40}", field="contest_date") from None
    return text


def _tests(rec: Record) -> dict:
    """``{tests, style, func_name}`` of a record; ValueError saying why they cannot be used."""
    tests = decode_test_cases(rec.data["public_test_cases"])
    tests += decode_test_cases(rec.get("private_test_cases", default="[]"))
    types = {t.get("testtype", "stdin") for t in tests}
    if not tests:
        raise ValueError("the problem has no tests")
    if len(types) > 1:
        raise ValueError(f"mixed test types {sorted(types)}")
    metadata = rec.get("metadata", default="{}")
    metadata = json.loads(metadata) if isinstance(metadata, str) else metadata
    if not isinstance(metadata, dict):
        raise ValueError("metadata is not a JSON object")
    style = types.pop()
    func = metadata.get("func_name")
    if style == "functional" and not (isinstance(func, str) and func):
        raise ValueError("call-based tests but no metadata.func_name")
    return {"tests": [(t["input"], t["output"]) for t in tests], "style": style, "func_name": func}


def _problem(rec: Record, prompt_style: str = "lcb") -> Problem:
    qid = rec.require("question_id")
    question = rec.require("question_content")
    if not isinstance(question, str):
        raise rec.error(f"expected a string, got {type(question).__name__}", field="question_content")
    starter = rec.get("starter_code", default="")
    if not isinstance(starter, str):
        raise rec.error(f"expected a string, got {type(starter).__name__}", field="starter_code")
    meta = {"question_title": rec.get("question_title"), "platform": rec.get("platform"),
            "contest_date": _date(rec, rec.require("contest_date")), "difficulty": rec.get("difficulty"),
            "source": _source(rec)}
    rec.require("public_test_cases")
    try:
        meta.update(_tests(rec))
    except (ValueError, json.JSONDecodeError) as e:
        meta["invalid"] = f"the problem's tests cannot be used: {e}"
    return Problem(str(qid), build_prompt(question, starter, prompt_style), None, meta)


def _source(rec: Record) -> str:
    return f"{rec.path}:{rec.line if rec.line is not None else rec.index}"


def _invalid(rec: Record, err: InputError) -> list[Problem]:
    qid = rec.get("question_id", default=f"lcb-{rec.position}")
    question = rec.get("question_content", default="")
    return [invalid_problem(str(qid), str(err), question if isinstance(question, str) else "",
                            {"source": _source(rec), "contest_date": None})]


class LCBTask:
    name = "lcb"

    def __init__(self, start: str | None = "2025-02-01", end: str | None = "2025-05-01",
                 partial_credit: bool = False, timeout_s: float = 6.0, memory_mb: int = 2048,
                 workers: int | None = None, prompt_style: str = "lcb", code_extraction: str = "lcb") -> None:
        for v in (start, end):
            if v:
                try:
                    date.fromisoformat(v)
                except ValueError:
                    raise InputError(f"not an ISO date (YYYY-MM-DD): {v!r}", field="start/end") from None
        if prompt_style not in PROMPT_STYLES:
            raise InputError(f"unknown prompt style {prompt_style!r}; known: {', '.join(PROMPT_STYLES)}", field="prompt_style")
        if code_extraction not in CODE_EXTRACTIONS:
            raise InputError(f"unknown code extraction {code_extraction!r}; known: {', '.join(CODE_EXTRACTIONS)}",
                             field="code_extraction")
        self.start, self.end = start or None, end or None
        self.partial_credit = partial_credit
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self.workers = workers
        self.prompt_style = prompt_style
        self.code_extraction = code_extraction

    def _problems(self, rec: Record) -> list[Problem]:
        p = _problem(rec, self.prompt_style)
        d = p.meta["contest_date"]
        if (self.start and d < self.start) or (self.end and d >= self.end):
            return []
        return [p]

    def load(self, data: str | None = None, *, limit: int | None = None, seed: int = 0) -> list[Problem]:
        """Problems of the release data inside the date window, in order (``seed`` unused)."""
        data = require_data(data, self.name, "a release file such as test6.jsonl")
        out = build_problems(read_records(data, columns=COLUMNS), self._problems, _invalid, id_field="question_id")
        return out[:limit] if limit else out

    def messages(self, problem: Problem) -> list[dict]:
        user = [{"role": "user", "content": problem.question}]
        return [{"role": "system", "content": LCB_SYSTEM}, *user] if self.prompt_style == "lcb" else user

    def program(self, response: str) -> str:
        """The program a response proposes, by the task's ``code_extraction`` rule."""
        return CODE_EXTRACTIONS[self.code_extraction](response)

    def verify(self, problems: Sequence[Problem], responses: Sequence[str], *, progress: bool = False) -> list[Verdict]:
        from sandbox import Limits

        limits = Limits(timeout_s=self.timeout_s, memory_mb=self.memory_mb)
        jobs = [partial(self._one, p, self.program(r), limits) for p, r in zip(problems, responses, strict=True)]
        return run_jobs(jobs, workers=self.workers, progress=progress, desc="verify lcb")

    def _one(self, p: Problem, program: str, limits) -> Verdict:
        from sandbox import run_call_tests, run_stdio_tests

        invalid = invalid_verdict(p)
        if invalid is not None:
            return invalid
        stop = not self.partial_credit
        try:
            if p.meta["style"] == "functional":
                res = run_call_tests(program, p.meta["func_name"], p.meta["tests"], limits, stop_at_first_failure=stop)
            else:
                res = run_stdio_tests(program, p.meta["tests"], limits, stop_at_first_failure=stop)
        except ValueError as e:  # a call-based test whose input or output is not JSON
            return Verdict.failed("invalid_test", f"the problem's tests cannot be used: {e}")
        return harness_verdict(res)

    def close(self) -> None:
        pass
