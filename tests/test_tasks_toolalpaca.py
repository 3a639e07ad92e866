"""ToolAlpaca: ReAct parsing with balanced-brace JSON and the multiset / merged-arguments rule."""

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
    # order of calls does not matter; the multiset of names and the merged arguments do
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


def test_wrong_schema_names_file_line_and_field(tmp_path):
    rows = json.loads(FIXTURE.read_text())
    rows[1]["Golden_Answers"] = rows[1]["Golden_Answers"][:1]
    f = tmp_path / "t.json"
    f.write_text(json.dumps(rows, indent=2))
    with pytest.raises(InputError) as e:
        ToolAlpacaTask().load(str(f))
    assert e.value.field == "Golden_Answers" and "2 instructions but 1 golden answers" in str(e.value)
    # the second record starts on the line where its '{' is
    assert e.value.line == f.read_text().splitlines().index("  {", 2) + 1
    del rows[0]["Instructions"]
    f.write_text(json.dumps(rows))
    with pytest.raises(InputError, match=r"t\.json:1: field 'Instructions': missing"):
        ToolAlpacaTask().load(str(f))
