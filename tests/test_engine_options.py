"""The shared engine options: every value reaches the engine (recording fakes for vllm.LLM and
from_pretrained), and bad values are refused before any model loads (InputError, exit 2)."""

from __future__ import annotations

import argparse
import sys
import types

import pytest
import torch
from tiny_model import make_tiny_model_dir

from mopd_eval import engine_options as eo
from mopd_eval.engine_options import (
    EngineOptions,
    add_engine_arguments,
    engine_options,
    make_engine,
)
from mopd_eval.errors import InputError


def parse(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_engine_arguments(p)
    return p.parse_args(list(argv))


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny") / "m", seed=0)


@pytest.fixture
def record_from_pretrained(monkeypatch):
    """Record every ``from_pretrained`` call's kwargs, then load the model without the extras."""
    from transformers import AutoModelForCausalLM

    calls: list[dict] = []
    real = AutoModelForCausalLM.from_pretrained

    def fake(path, **kw):
        calls.append(dict(kw))
        keep = {k: kw[k] for k in ("dtype", "attn_implementation") if k in kw}
        return real(path, **keep)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", fake)
    return calls


@pytest.fixture
def fake_vllm(monkeypatch):
    """A ``vllm`` package whose ``LLM`` records its keyword arguments."""
    calls: list[dict] = []

    class LLM:
        def __init__(self, **kw):
            calls.append(kw)

    vllm = types.ModuleType("vllm")
    vllm.LLM = LLM
    platforms = types.ModuleType("vllm.platforms")
    platforms.current_platform = types.SimpleNamespace(is_cpu=lambda: True)
    monkeypatch.setitem(sys.modules, "vllm", vllm)
    monkeypatch.setitem(sys.modules, "vllm.platforms", platforms)
    return calls


def test_defaults_are_the_cpu_defaults():
    o = engine_options(parse())
    assert o == EngineOptions()
    if not torch.cuda.is_available():
        assert o.resolved_device() == "cpu"
        assert o.resolved_dtype() == "float32"
        assert o.key_fields() == {"engine": "hf", "dtype": "float32", "attn_implementation": "sdpa",
                                  "device_type": "cpu", "max_model_len": None}


def test_every_flag_is_read():
    o = engine_options(parse(
        "--engine", "vllm", "--dtype", "bfloat16", "--tensor-parallel-size", "2", "--data-parallel-size", "3",
        "--max-model-len", "4096", "--gpu-memory-utilization", "0.5", "--enforce-eager",
        "--engine-arg", "quantization=fp8", "--engine-arg", "max_num_seqs=8", "--engine-arg", "trust_remote_code=true",
        "--engine-arg", "tokenizer_revision=null", "--engine-arg", "revision=0123",
    ))
    assert (o.engine, o.dtype, o.tensor_parallel_size, o.data_parallel_size) == ("vllm", "bfloat16", 2, 3)
    assert (o.max_model_len, o.gpu_memory_utilization, o.enforce_eager) == (4096, 0.5, True)
    # YAML scalars: numbers, booleans and null typed; "0123" is YAML 1.1 octal 83, as PyYAML reads it
    assert o.engine_args == {"quantization": "fp8", "max_num_seqs": 8, "trust_remote_code": True,
                             "tokenizer_revision": None, "revision": 83}


def test_vllm_gets_every_value_unchanged(fake_vllm, tiny_dir):
    o = engine_options(parse(
        "--engine", "vllm", "--dtype", "float16", "--tensor-parallel-size", "2", "--data-parallel-size", "2",
        "--max-model-len", "2048", "--gpu-memory-utilization", "0.7", "--enforce-eager",
        "--engine-arg", "max_num_seqs=16", "--engine-arg", "swap_space=0",
    ))
    engine = make_engine(str(tiny_dir), o, purpose="score")
    [kw] = fake_vllm
    assert kw["model"] == str(tiny_dir)
    assert {k: kw[k] for k in ("tensor_parallel_size", "data_parallel_size", "dtype", "max_model_len",
                               "gpu_memory_utilization", "enforce_eager", "max_num_seqs", "swap_space")} == {
        "tensor_parallel_size": 2, "data_parallel_size": 2, "dtype": "float16", "max_model_len": 2048,
        "gpu_memory_utilization": 0.7, "enforce_eager": True, "max_num_seqs": 16, "swap_space": 0}
    assert kw["enable_prefix_caching"] is False and kw["skip_tokenizer_init"] is True
    assert engine.for_scoring


def test_vllm_sampling_engine_keeps_prefix_caching_and_refuses_to_score(fake_vllm, tiny_dir):
    engine = make_engine(str(tiny_dir), EngineOptions(engine="vllm"), purpose="generate")
    assert "enable_prefix_caching" not in fake_vllm[0]
    assert fake_vllm[0]["gpu_memory_utilization"] == 0.3  # CPU platform default
    with pytest.raises(RuntimeError, match="for sampling"):
        engine.score([[1, 2]], [[3]])
    with pytest.raises(ValueError, match="prefix caching"):
        make_engine(str(tiny_dir), EngineOptions(engine="vllm", engine_args={"enable_prefix_caching": True}),
                    purpose="score")


def test_hf_gets_dtype_attention_and_engine_args(record_from_pretrained, tiny_dir):
    o = engine_options(parse("--device", "cpu", "--dtype", "bfloat16", "--attn-implementation", "eager",
                             "--max-model-len", "64", "--engine-arg", "revision=main",
                             "--engine-arg", "low_cpu_mem_usage=true"))
    engine = make_engine(str(tiny_dir), o)
    [kw] = record_from_pretrained
    assert kw == {"dtype": torch.bfloat16, "attn_implementation": "eager", "revision": "main",
                  "low_cpu_mem_usage": True}
    assert engine.model.dtype == torch.bfloat16 and engine.device.type == "cpu"
    assert engine.attn_implementation == "eager" and engine.max_model_len == 64
    with pytest.raises(ValueError, match="max_model_len"):
        engine.score([[1] * 60], [[2] * 5])
    with pytest.raises(ValueError, match="max_model_len"):
        engine.generate([[1] * 60], 1, 1.0, 1.0, 5, 0)


def test_flash_attention_falls_back_to_sdpa_with_a_warning(record_from_pretrained, tiny_dir):
    o = EngineOptions(device="cpu", attn_implementation="flash_attention_2")
    assert o.key_fields()["attn_implementation"] == "sdpa"
    with pytest.warns(UserWarning, match="flash_attention_2.*sdpa"):
        engine = make_engine(str(tiny_dir), o)
    assert record_from_pretrained[0]["attn_implementation"] == "sdpa"
    assert engine.attn_implementation == "sdpa"


@pytest.mark.parametrize(
    ("argv", "field"),
    [
        (["--device", "gpu"], "--device"),
        (["--device", "cuda:x"], "--device"),
        (["--tensor-parallel-size", "2"], "--tensor-parallel-size"),  # hf: vllm only
        (["--data-parallel-size", "2"], "--data-parallel-size"),
        (["--gpu-memory-utilization", "0.5"], "--gpu-memory-utilization"),
        (["--enforce-eager"], "--enforce-eager"),
        (["--engine", "vllm", "--gpu-memory-utilization", "1.5"], "--gpu-memory-utilization"),
        (["--engine", "vllm", "--tensor-parallel-size", "0"], "--tensor-parallel-size"),
        (["--engine", "vllm", "--device", "cpu"], "--device"),
        (["--engine", "vllm", "--attn-implementation", "sdpa"], "--attn-implementation"),
        (["--engine", "vllm", "--engine-arg", "dtype=float16"], "--engine-arg"),
        (["--max-model-len", "0"], "--max-model-len"),
        (["--attn-implementation", "fastest"], "--attn-implementation"),
        (["--engine-arg", "novalue"], "--engine-arg"),
        (["--engine-arg", "2bad=1"], "--engine-arg"),
        (["--engine-arg", "a=1", "--engine-arg", "a=2"], "--engine-arg"),
        (["--engine-arg", "a=[1, 2"], "--engine-arg"),
        (["--engine-arg", "torch_dtype=float16"], "--engine-arg"),
    ],
)
def test_bad_values_name_their_flag(argv, field):
    with pytest.raises(InputError) as e:
        engine_options(parse(*argv))
    assert e.value.field == field


def test_cuda_without_cuda_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(InputError, match="no CUDA") as e:
        engine_options(parse("--device", "cuda"))
    assert e.value.field == "--device"


def test_config_style_names_fields_without_dashes():
    with pytest.raises(InputError) as e:
        EngineOptions(tensor_parallel_size=2).validated(flags=False)
    assert e.value.field == "tensor_parallel_size"


def test_auto_device_follows_local_rank_when_cuda_exists(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert eo.resolve_device("auto") == "cuda:3"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert eo.resolve_device("auto") == "cpu"


def test_key_fields_change_with_numbers_not_with_memory():
    base = EngineOptions(engine="vllm")
    assert base.key_fields() == EngineOptions(engine="vllm", gpu_memory_utilization=0.5,
                                              data_parallel_size=4).key_fields()
    for changed in (EngineOptions(engine="vllm", dtype="bfloat16"), EngineOptions(engine="vllm", max_model_len=99),
                    EngineOptions(engine="vllm", tensor_parallel_size=2),
                    EngineOptions(engine="vllm", engine_args={"quantization": "fp8"})):
        assert changed.key_fields() != base.key_fields()
    assert EngineOptions(device="cpu", dtype="bfloat16").key_fields()["dtype"] == "bfloat16"


@pytest.mark.parametrize("command", ["signal", "rollouts", "bench"])
def test_commands_refuse_bad_options_before_loading(command, monkeypatch, tmp_path, capsys):
    """Exit 2 naming the flag; neither a model nor a tokenizer was loaded, nothing was written."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mopd_eval import cli

    def boom(*a, **k):
        raise AssertionError("a model was loaded before the options were checked")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", boom)
    monkeypatch.setattr(AutoTokenizer, "from_pretrained", boom)
    out = tmp_path / "out"
    extra = {"signal": [], "rollouts": ["--task", "arith", "--out", str(out / "r.jsonl")],
             "bench": ["--task", "arith"]}[command]
    if command != "rollouts":
        extra += ["--out", str(out)]
    rc = cli.main([command, *extra, "--model", str(tmp_path / "nowhere"), "--dtype", "bfloat16",
                   "--gpu-memory-utilization", "0.5"])
    assert rc == 2
    assert "--gpu-memory-utilization" in capsys.readouterr().err
    assert not out.exists()


def test_train_config_takes_the_same_names():
    from training.config import TrainConfig

    cfg = TrainConfig(engine="vllm", dtype="bfloat16", tensor_parallel_size=2, max_model_len=4096,
                      gpu_memory_utilization=0.6, enforce_eager=True, engine_args={"max_num_seqs": 8})
    kw = eo.engine_kwargs(cfg.engine_options(), purpose="generate")
    assert {k: kw[k] for k in ("dtype", "tensor_parallel_size", "max_model_len", "gpu_memory_utilization",
                               "enforce_eager", "max_num_seqs", "for_scoring")} == {
        "dtype": "bfloat16", "tensor_parallel_size": 2, "max_model_len": 4096, "gpu_memory_utilization": 0.6,
        "enforce_eager": True, "max_num_seqs": 8, "for_scoring": False}
    for bad, field in ((dict(engine="vllm", tensor_parallel_size=0), "tensor_parallel_size"),
                       (dict(gpu_memory_utilization=0.5), "gpu_memory_utilization"),
                       (dict(dtype="bfloat16"), "dtype"),  # hf samples from the policy: bf16= decides
                       (dict(engine="vllm", engine_args={"seed": 1}), "engine_args")):
        with pytest.raises(InputError) as e:
            TrainConfig(**bad)
        assert e.value.field == field
