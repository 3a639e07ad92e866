"""ToolAlpaca: ReAct parsing with balanced-brace JSON and the multiset-of-calls rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mopd_eval.errors import InputError
from mopd_eval.tasks.toolalpaca import ToolAlpacaTask, balanced_json, parse_calls

FIXTURE = Path(__file__).parent / "fixtures" / "toolalpaca_eval.json"


@pytest.fixture(scope="module")
def problems():
    return {p.problem_id: p for p in ToolAlpacaTask().load(str(FIXTURE))}


def test_one_problem_per_instruction_with_the_api_in_the_prompt(problems):
    assert list(problems) == ["WeatherNow-0", "WeatherNow-1", "BookShelf-0", "BookShelf-1"]
    q = problems["WeatherNow-1"].question
    assert "- getForecast: Forecast of a city." in q and "components" not in q
    assert "Action: the tool to use, one of [getCurrentWeather, getForecast]" in q
    assert q.endswith("Request: Give me the 3-day forecast for Oslo and the current weather there.")


def test_balanced_json_respects_nesting_and_strings():
    text = 'Action Input: {"q": "a } b", "f": {"x": [1, {"y": 2}]}} trailing }'
    obj, end = balanced_json(text)
    assert json.loads(obj) == {"q": "a } b", "f": {"x": [1, {"y": 2}]}}
    assert text[end:] == " trailing }"
    assert balanced_json('{"a": "\\"}"}')[0] == '{"a": "\\"}"}'
    assert balanced_json("{never closed") is None and balanced_json("no brace") is None


def test_parse_calls_reads_multiline_inputs_and_stops_at_final_answer():
    resp = ("Thought: look it up\nAction: getForecast\nAction Input: {\n  \"city\": \"Oslo\",\n  \"days\": 3\n}\n"
            "Observation: sunny\nThought: now current\nAction: getCurrentWeather\nAction Input: {\"city\": \"Oslo\"}\n"
            "Final Answer: sunny.\nAction: getForecast\nAction Input: {}")
    calls = parse_calls(resp)
    assert [(c.action, c.arguments) for c in calls] == [
        ("getForecast", {"city": "Oslo", "days": 3}), ("getCurrentWeather", {"city": "Oslo"})]


@pytest.mark.parametrize("pid, response, success, status", [
    ("WeatherNow-0", 'Action: getCurrentWeather\nAction Input: {"city": "Paris"}', True, "correct"),
    # the gold's calls in another order are right
    ("WeatherNow-1", 'Action: getCurrentWeather\nAction Input: {"city": "Oslo"}\nObservation: ok\n'
                     'Action: getForecast\nAction Input: {"days": 3, "city": "Oslo"}', True, "correct"),
    ("WeatherNow-1", 'Action: getForecast\nAction Input: {"city": "Oslo", "days": 3}', False, "wrong"),
    ("WeatherNow-1", 'Action: getForecast\nAction Input: {"city": "Oslo", "days": "3"}\n'
                     'Action: getCurrentWeather\nAction Input: {"city": "Oslo"}', False, "wrong"),
    ("WeatherNow-0", 'Action: getCurrentWeather\nAction Input: {"city": "Paris"}\n'
                     'Action: getCurrentWeather\nAction Input: {"city": "Paris"}', False, "wrong"),
    ("WeatherNow-0", "Action: getCurrentWeather\nAction Input: city=Paris", False, "invalid_format"),
    ("WeatherNow-0", "Final Answer: it is sunny in Paris.", False, "no_answer"),
])
def test_verdicts(problems, pid, response, success, status):
    v = ToolAlpacaTask().verify([problems[pid]], [response])[0]
    assert (v.success, v.status) == (success, status)
    assert (v.feedback is None) == success


def test_gold_with_a_placeholder_input_is_invalid_for_that_problem_only(problems):
    p = problems["BookShelf-1"]
    assert "invalid" in p.meta and "<id of the first result>" in p.meta["invalid"]
    v = ToolAlpacaTask().verify([p, problems["BookShelf-0"]],
                                ["Action: searchBooks\nAction Input: {}", 'Action: searchBooks\nAction Input: {"query": "volcanoes"}'])
    assert v[0].status == "invalid_test" and v[1].success


def _holiday_problem(tmp_path):
    """One instruction whose gold calls the same tool twice with different arguments."""
    rec = {"Name": "Holidays", "Description": "Public holidays.",
           "Function_Description": {"getHolidays": "Holidays of a country. Parameters: {\"country\": \"string\"}"},
           "Instructions": ["List the public holidays of Japan and of Germany."],
           "Golden_Answers": [[{"Action": "getHolidays", "Action_Input": "{\"country\": \"JP\"}"},
                               {"Action": "getHolidays", "Action_Input": "{\"country\": \"DE\"}"}]]}
    f = tmp_path / "h.json"
    f.write_text(json.dumps([rec]))
    return ToolAlpacaTask().load(str(f))[0]


def _calls(*countries: str) -> str:
    return "\n".join(f'Thought: next\nAction: getHolidays\nAction Input: {{"country": "{c}"}}\nObservation: ok'
                     for c in countries) + "\nFinal Answer: done."


@pytest.mark.parametrize("countries, success", [
    (("JP", "DE"), True),
    (("DE", "JP"), True),          # the gold's calls in another order
    (("DE", "DE"), False),         # one call repeated instead of two different ones (accepted by merged arguments)
    (("JP", "JP"), False),
    (("JP",), False),              # a call missing
    (("JP", "DE", "DE"), False),   # an extra call
])
def test_same_tool_twice_is_graded_by_the_multiset_of_calls(tmp_path, countries, success):
    p = _holiday_problem(tmp_path)
    v = ToolAlpacaTask().verify([p], [_calls(*countries)])[0]
    assert (v.success, v.status) == (success, "correct" if success else "wrong")


def test_argument_order_and_spacing_do_not_matter_but_types_do(problems):
    p = problems["WeatherNow-1"]
    ok = 'Action: getForecast\nAction Input: {"days":3,   "city":"Oslo"}\nAction: getCurrentWeather\nAction Input: {"city": "Oslo"}'
    swapped = ('Action: getForecast\nAction Input: {"city": "Oslo"}\n'
               'Action: getCurrentWeather\nAction Input: {"city": "Oslo", "days": 3}')
    v = ToolAlpacaTask().verify([p, p], [ok, swapped])
    assert [x.success for x in v] == [True, False]
    assert "right tools" in v[1].feedback  # same tool multiset, arguments on the wrong call


def test_malformed_record_is_invalid_problems_not_a_stop(tmp_path):
    rows = json.loads(FIXTURE.read_text())
    rows[1]["Golden_Answers"] = rows[1]["Golden_Answers"][:1]
    f = tmp_path / "t.json"
    f.write_text(json.dumps(rows, indent=2))
    ps = {p.problem_id: p for p in ToolAlpacaTask().load(str(f))}
    assert list(ps) == ["WeatherNow-0", "WeatherNow-1", "BookShelf-0", "BookShelf-1"]
    assert "invalid" not in ps["WeatherNow-0"].meta
    reason = ps["BookShelf-0"].meta["invalid"]
    # the reason names the file, the line where the record's '{' is, and the field
    line = f.read_text().splitlines().index("  {", 2) + 1
    assert reason == f"{f}:{line}: field 'Golden_Answers': 2 instructions but 1 golden answers"
    v = ToolAlpacaTask().verify([ps["BookShelf-1"], ps["WeatherNow-0"]],
                                ["Action: searchBooks\nAction Input: {}", 'Action: getCurrentWeather\nAction Input: {"city": "Paris"}'])
    assert (v[0].status, v[0].feedback) == ("invalid_test", reason) and v[1].success


def test_missing_instructions_and_a_bad_gold_step(tmp_path):
    rows = json.loads(FIXTURE.read_text())
    del rows[0]["Instructions"]
    rows[1]["Golden_Answers"][0] = [{"Input": "no action"}]
    f = tmp_path / "t.json"
    f.write_text(json.dumps(rows))
    ps = ToolAlpacaTask().load(str(f))
    assert [p.problem_id for p in ps] == ["WeatherNow-0", "BookShelf-0", "BookShelf-1"]
    assert ps[0].meta["invalid"] == f"{f}:1: field 'Instructions': missing"
    assert "Golden_Answers[0][0]: expected {Action, Action_Input}" in ps[1].meta["invalid"]
    assert "invalid" in ps[2].meta  # its own placeholder gold, as in the fixture


def test_duplicate_api_names_stop_the_load(tmp_path):
    rows = json.loads(FIXTURE.read_text())
    f = tmp_path / "t.json"
    f.write_text(json.dumps(rows + rows[:1]))
    with pytest.raises(InputError, match="duplicate problem id 'WeatherNow-0'"):
        ToolAlpacaTask().load(str(f))
