"""The task registry: every declared option reaches its task's constructor, the same flags and
sampling defaults serve bench, rollouts and verify, and results-only keys leave worker counts out."""

from __future__ import annotations

import argparse
import importlib
import inspect

import pytest

from mopd_eval.commands import bench, rollouts, verify
from mopd_eval.errors import InputError
from mopd_eval.tasks import (
    TASK_SPECS,
    add_sampling_arguments,
    add_task_arguments,
    get_spec,
    sampling_for,
    task_from_args,
    task_options,
)


def parser_of(module) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    module.add_arguments(p)
    return p


NON_DEFAULT = {int: "7", float: "2.5", str: "mopd"}


def _argv_value(o):
    if o.action == "store_true":
        return [o.flag]
    if o.type is None or o.type in NON_DEFAULT:
        return [o.flag, NON_DEFAULT.get(o.type, "x")]
    return [o.flag, "1,2"]  # list-valued options


@pytest.mark.parametrize("name", list(TASK_SPECS))
def test_every_option_is_a_constructor_keyword_and_reaches_the_task(name, monkeypatch):
    spec = TASK_SPECS[name]
    module, cls = spec.target.split(":")
    mod = importlib.import_module(module)
    params = inspect.signature(getattr(mod, cls)).parameters
    for o in spec.options:
        assert o.kwarg in params, f"{name}: {o.flag} -> {o.kwarg} is not a constructor keyword"
    seen = {}
    monkeypatch.setattr(mod, cls, lambda **kw: seen.update(kw))
    argv = ["--task", name, "--out", "x"] + [v for o in spec.options for v in _argv_value(o)]
    args = parser_of(bench).parse_args(argv)
    task_from_args(name, args)
    assert set(seen) == {o.kwarg for o in spec.options}
    for o in spec.options:
        assert seen[o.kwarg] == getattr(args, o.dest) and seen[o.kwarg] != o.default, (name, o.flag)


def test_bench_rollouts_and_verify_share_the_task_flags():
    flags = lambda m: {a.option_strings[0] for a in parser_of(m)._actions if a.option_strings}  # noqa: E731
    task_flags = {o.flag for s in TASK_SPECS.values() for o in s.options}
    for m in (bench, rollouts, verify):
        assert task_flags <= flags(m), m.__name__
    sampling = {"-n", "--temperature", "--top-p", "--max-tokens", "--seed"}
    assert sampling <= flags(bench) and sampling <= flags(rollouts)


def test_sampling_defaults_come_from_the_task_and_flags_override_them():
    p = argparse.ArgumentParser()
    add_sampling_arguments(p)
    args = p.parse_args([])
    assert sampling_for("arith", args).max_tokens == get_spec("arith").max_tokens == 256
    assert sampling_for("lcb", args).max_tokens == get_spec("lcb").max_tokens
    assert sampling_for("lcb", p.parse_args(["--max-tokens", "7"])).max_tokens == 7
    for bad in (["-n", "0"], ["--max-tokens", "0"], ["--temperature", "-1"], ["--top-p", "0"]):
        with pytest.raises(InputError):
            sampling_for("arith", p.parse_args(bad))


def test_run_keys_hold_result_options_but_not_worker_counts():
    p = argparse.ArgumentParser()
    add_task_arguments(p)
    args = p.parse_args(["--workers", "3", "--lcb-start", "2024-01-01", "--levels", "1,2"])
    assert "workers" not in task_options("lcb", args) and task_options("lcb", args)["start"] == "2024-01-01"
    assert task_options("arith", args) == {"per_level": 20, "levels": [1, 2]}


def test_unknown_task_is_an_input_error():
    with pytest.raises(InputError, match="unknown task 'nope'"):
        get_spec("nope")
