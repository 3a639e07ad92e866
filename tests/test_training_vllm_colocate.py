"""The colocated vLLM path of the trainer against a recording fake of vLLM's API.

vLLM cannot run on the CPU development machine (docs/training.md), so ``vllm`` is replaced by a
fake that records what the trainer asks of it: the ``LLM`` arguments (external launcher, memory
fraction, tensor parallelism, sleep mode), the order of generate / sleep / wake-up / weight
loads, and the weights each ``load_weights`` call carries.
"""

from __future__ import annotations

import json
import os
import sys
import types
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from training import vllm_colocate
from training.config import load_config
from training.trainer import train
from training.vllm_colocate import split_back, weight_chunks


class FakeModel(torch.nn.Module):
    def __init__(self, events: list) -> None:
        super().__init__()
        self.events = events
        self.loaded: dict[str, torch.Tensor] = {}

    def load_weights(self, weights):
        batch = list(weights)
        self.events.append(("load_weights", [n for n, _ in batch]))
        self.loaded.update({n: t.clone() for n, t in batch})


class FakeLLM:
    instances: list[FakeLLM] = []

    def __init__(self, **kwargs) -> None:
        self.kwargs = kwargs
        self.events: list = []
        self.model = FakeModel(self.events)
        self.env_multiprocessing = os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING")
        FakeLLM.instances.append(self)

    def generate(self, prompts, params, use_tqdm=False):
        self.events.append(("generate", len(prompts)))
        outs = []
        for p, sp in zip(prompts, params, strict=True):
            g = torch.Generator().manual_seed(sp.seed)
            samples = [types.SimpleNamespace(token_ids=torch.randint(5, 40, (sp.max_tokens,), generator=g).tolist(),
                                             finish_reason="length") for _ in range(sp.n)]
            outs.append(types.SimpleNamespace(outputs=samples, prompt=p))
        return outs

    def apply_model(self, func):
        return [func(self.model)]

    def sleep(self, level=1):
        self.events.append(("sleep", level))

    def wake_up(self, tags=None):
        self.events.append(("wake_up", tuple(tags) if tags else None))

    def reset_prefix_cache(self):
        self.events.append(("reset_prefix_cache",))


class FakeSamplingParams:
    def __init__(self, **kwargs) -> None:
        self.__dict__.update(kwargs)


@pytest.fixture
def fake_vllm(monkeypatch):
    vllm = types.ModuleType("vllm")
    vllm.LLM, vllm.SamplingParams = FakeLLM, FakeSamplingParams
    inputs = types.ModuleType("vllm.inputs")
    inputs.TokensPrompt = lambda prompt_token_ids: {"prompt_token_ids": prompt_token_ids}
    platforms = types.ModuleType("vllm.platforms")
    platforms.current_platform = types.SimpleNamespace(is_cpu=lambda: False, is_sleep_mode_available=lambda: True)
    for name, mod in (("vllm", vllm), ("vllm.inputs", inputs), ("vllm.platforms", platforms)):
        monkeypatch.setitem(sys.modules, name, mod)
    monkeypatch.delenv("VLLM_ENABLE_V1_MULTIPROCESSING", raising=False)
    monkeypatch.setattr(vllm_colocate, "WEIGHT_CHUNK_MB", 0.01)  # several chunks even for a tiny model
    FakeLLM.instances.clear()
    yield FakeLLM
    os.environ.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)


def _config(tmp_path: Path, model: Path, **extra) -> Path:
    cfg = {"model_name_or_path": str(model), "task": "training.synthetic_task:StartsWithTask",
           "task_kwargs": {"target": "The", "num_problems": 4}, "engine": "vllm", "num_prompts_per_step": 2,
           "num_generations": 4, "max_completion_length": 3, "learning_rate": 1e-2, "lr_scheduler_type": "constant",
           "warmup_steps": 0, "max_steps": 2, "output_dir": str(tmp_path / "run"), "seed": 0, **extra}
    path = tmp_path / "cfg.yaml"
    path.write_text(json.dumps(cfg))
    return path


def test_trainer_drives_a_colocated_vllm(fake_vllm, tiny_model_dir, tmp_path):
    torch.set_num_threads(1)
    last = train(load_config(_config(tmp_path, tiny_model_dir, vllm_enable_sleep_mode=True), algo="grpo"))
    (llm,) = fake_vllm.instances
    kw = llm.kwargs
    assert kw["distributed_executor_backend"] == "external_launcher"
    assert kw["gpu_memory_utilization"] == 0.3 and kw["tensor_parallel_size"] == 1
    assert kw["enable_sleep_mode"] is True and kw["seed"] == 0 and kw.get("enable_prefix_caching") is not False
    assert llm.env_multiprocessing == "0"  # the engine core runs in the training process
    kinds = [e[0] for e in llm.events]
    # per step: generate, sleep for the update, wake the weights, push them, reset the cache, wake the KV cache
    loads = [e for e in llm.events if e[0] == "load_weights"]
    per_step = len(loads) // 2
    assert per_step > 1, "weights must go in chunks, not as one full state dict"
    one_step = (["generate", "sleep", "wake_up"] + ["load_weights"] * per_step
                + ["reset_prefix_cache", "wake_up"])
    assert kinds == one_step * 2
    wakes = [e[1] for e in llm.events if e[0] == "wake_up"]
    assert wakes == [("weights",), ("kv_cache",)] * 2
    assert ("sleep", 1) in llm.events
    # the last push carried every parameter, equal to the saved policy (Hugging Face names)
    saved = load_file(last / "model.safetensors")
    names = [n for e in loads[per_step:] for n in e[1]]
    assert len(names) == len(set(names))
    for name, t in saved.items():
        torch.testing.assert_close(llm.model.loaded[name].float(), t.float(), rtol=0, atol=0)


def test_without_sleep_mode_the_engine_stays_awake(fake_vllm, tiny_model_dir, tmp_path):
    torch.set_num_threads(1)
    train(load_config(_config(tmp_path, tiny_model_dir, max_steps=1, gpu_memory_utilization=0.45,
                              tensor_parallel_size=1), algo="grpo"))
    (llm,) = fake_vllm.instances
    assert llm.kwargs["gpu_memory_utilization"] == 0.45 and llm.kwargs["enable_sleep_mode"] is False
    assert not any(e[0] in ("sleep", "wake_up") for e in llm.events)
    assert ("reset_prefix_cache",) in llm.events


def test_sleep_mode_is_skipped_where_vllm_has_none(fake_vllm, tiny_model_dir, tmp_path):
    sys.modules["vllm.platforms"].current_platform.is_sleep_mode_available = lambda: False  # e.g. vLLM's CPU build
    torch.set_num_threads(1)
    with pytest.warns(UserWarning, match="no sleep mode"):
        train(load_config(_config(tmp_path, tiny_model_dir, max_steps=1, vllm_enable_sleep_mode=True), algo="grpo"))
    (llm,) = fake_vllm.instances
    assert llm.kwargs["enable_sleep_mode"] is False
    assert not any(e[0] in ("sleep", "wake_up") for e in llm.events)


def test_weight_chunks_and_tensor_parallel_split():
    model = torch.nn.Sequential(torch.nn.Linear(10, 10), torch.nn.Linear(10, 2))
    chunks = list(weight_chunks(model, max_bytes=150, dtype=torch.bfloat16))
    assert [n for c in chunks for n, _ in c] == list(model.state_dict())
    assert len(chunks) > 1 and all(t.dtype == torch.bfloat16 for c in chunks for _, t in c)
    # a tensor-parallel group generated the prompts of its 2 ranks (sizes 2 and 3) together
    outputs = ["a0", "a1", "b0", "b1", "b2"]
    assert split_back(outputs, [2, 3], 0) == ["a0", "a1"] and split_back(outputs, [2, 3], 1) == ["b0", "b1", "b2"]
