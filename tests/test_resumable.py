"""ResumableRun: content keys, refusal messages, growing keys, the lock, torn tails, the finish."""

from __future__ import annotations

import json
import multiprocessing as mp

import pytest

from mopd_eval.errors import InputError
from mopd_eval.jsonl import read_jsonl
from mopd_eval.resumable import ResumableRun, key_changes, key_sha256


def make(tmp_path, key, **kw):
    return ResumableRun(tmp_path / "log.jsonl", tmp_path / "run.json", key, **kw)


def test_same_key_resumes_and_other_key_is_refused_naming_the_change(tmp_path):
    with make(tmp_path, {"seed": 1, "model": "m"}) as run:
        assert run.start() == []
        run.append([{"i": 1}, {"i": 2}])
    with make(tmp_path, {"seed": 1, "model": "m"}) as run:
        assert run.start() == [{"i": 1}, {"i": 2}]
        assert run.recovered_rows == 2
    with pytest.raises(InputError) as e, make(tmp_path, {"seed": 2, "model": "m"}) as run:
        run.start()
    msg = str(e.value)
    assert "seed: 1 -> 2" in msg and "model" not in msg.split("settings:")[1].split(".")[0]
    assert "--rescore" in msg and "new --out" in msg
    record = json.loads((tmp_path / "run.json").read_text())
    assert record["key"] == {"seed": 1, "model": "m"} and record["key_sha256"] == key_sha256(record["key"])


def test_fresh_discards_and_rekeys(tmp_path):
    with make(tmp_path, {"seed": 1}) as run:
        run.start()
        run.append([{"i": 1}])
    with make(tmp_path, {"seed": 2}) as run:
        assert run.start(fresh=True) == []
        run.append([{"i": 2}])
    assert json.loads((tmp_path / "run.json").read_text())["key"] == {"seed": 2}


def test_extendable_mapping_grows_but_a_changed_entry_is_refused(tmp_path):
    with make(tmp_path, {"conditions": {"a": {"k": 1}}}, extendable=("conditions",)) as run:
        run.start()
        run.append([{"condition": "a"}])
    with make(tmp_path, {"conditions": {"b": {"k": 2}}}, extendable=("conditions",)) as run:
        run.start()
        run.append([{"condition": "b"}])
    key = json.loads((tmp_path / "run.json").read_text())["key"]
    assert key["conditions"] == {"a": {"k": 1}, "b": {"k": 2}}
    with pytest.raises(InputError, match=r"conditions\.a: \{\"k\": 1\} -> \{\"k\": 3\}"), \
            make(tmp_path, {"conditions": {"a": {"k": 3}}}, extendable=("conditions",)) as run:
        run.start()


def test_key_changes_is_empty_for_equal_keys_and_lists_each_change():
    assert key_changes({"a": 1, "b": [1]}, {"b": [1], "a": 1}) == []
    assert key_changes({"a": 1}, {"a": 1, "c": 2}) == ["c: null -> 2"]


def test_a_torn_tail_is_dropped_and_finish_renames_atomically(tmp_path):
    final = tmp_path / "out.jsonl"
    with make(tmp_path, {"x": 1}, final_path=final) as run:
        run.start()
        run.append([{"i": 1}])
    with (tmp_path / "log.jsonl").open("a") as f:
        f.write('{"i": 2')  # a kill in the middle of a line
    with make(tmp_path, {"x": 1}, final_path=final) as run:
        assert run.start() == [{"i": 1}]
        run.append([{"i": 3}])
        assert run.finish() == final
    assert read_jsonl(final) == [{"i": 1}, {"i": 3}] and not (tmp_path / "log.jsonl").exists()
    with make(tmp_path, {"x": 1}, final_path=final) as run:  # finished: rows come from the final file
        assert run.start() == [{"i": 1}, {"i": 3}] and run.finished
    with pytest.raises(InputError, match="x: 1 -> 2"), make(tmp_path, {"x": 2}, final_path=final) as run:
        run.start()


def test_results_without_a_record_are_refused(tmp_path):
    (tmp_path / "log.jsonl").write_text('{"i": 1}\n')
    with pytest.raises(InputError, match="without their run record"), make(tmp_path, {"x": 1}) as run:
        run.start()


def _hold(path, ready, stop):
    run = ResumableRun(path / "log.jsonl", path / "run.json", {"x": 1})
    run.start()
    ready.set()
    stop.wait(30)
    run.release()


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    ctx = mp.get_context("spawn")
    ready, stop = ctx.Event(), ctx.Event()
    p = ctx.Process(target=_hold, args=(tmp_path, ready, stop))
    p.start()
    try:
        assert ready.wait(60)
        with pytest.raises(InputError, match=rf"another run is writing here \(pid {p.pid} "), \
                make(tmp_path, {"x": 1}) as run:
            run.start()
    finally:
        stop.set()
        p.join(30)
    with make(tmp_path, {"x": 1}) as run:  # released: the next run goes on
        run.start()


def test_readers_name_file_and_line_for_bytes_gzip_and_directories(tmp_path):
    import gzip

    from mopd_eval.jsonl import iter_jsonl

    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"a": 1}\n{"b": "\xff\xfe"}\n')
    with pytest.raises(InputError, match=r"bad\.jsonl:2: not UTF-8"):
        list(iter_jsonl(bad))
    gz = tmp_path / "rows.jsonl"  # gzip under a plain name: detected by content
    gz.write_bytes(gzip.compress(b'{"a": 1}\n{"a": 2}\n'))
    assert [o["a"] for _, o in iter_jsonl(gz)] == [1, 2]
    with pytest.raises(InputError, match="is a directory"):
        list(iter_jsonl(tmp_path))
    deep = tmp_path / "deep.jsonl"
    deep.write_text("[" * 200000 + "\n")
    with pytest.raises(InputError, match="deep.jsonl:1"):
        list(iter_jsonl(deep))


def test_a_run_that_fails_before_its_first_result_leaves_nothing(tmp_path):
    out = tmp_path / "new" / "out"
    with pytest.raises(RuntimeError), ResumableRun(out / "log.jsonl", out / "run.json", {"x": 1}) as run:
        run.start()
        raise RuntimeError("the model failed to load")
    assert not (tmp_path / "new").exists()
    with ResumableRun(out / "log.jsonl", out / "run.json", {"x": 2}) as run:  # a corrected rerun is not refused
        run.start()
        run.append([{"i": 1}])
    assert json.loads((out / "run.json").read_text())["key"] == {"x": 2}
