"""The hf engine in bfloat16: scores through both paths, float32 log-softmax, seeded sampling."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from tiny_model import make_tiny_model, make_tiny_model_dir

from mopd_eval.engines.hf import HFEngine, torch_dtype


@pytest.fixture(scope="module")
def engines():
    model, tok = make_tiny_model(seed=0, hidden=64, heads=4, kv_heads=2)
    return HFEngine(model, tok), HFEngine(copy.deepcopy(model).to(torch.bfloat16), tok)


def workload(tok, seed=0):
    rng = np.random.default_rng(seed)
    header = tok.encode("<|im_start|>user\nWhat is 7 + 5?")
    prompts, targets = [], []
    for _ in range(12):
        peers = list(rng.integers(3, len(tok), int(rng.integers(0, 20))))
        prompts.append(header + peers + tok.encode("<|im_end|>\n<|im_start|>assistant\n"))
        targets.append(list(rng.integers(3, len(tok), int(rng.integers(1, 15)))))
    return prompts, targets


def test_bf16_scores_track_fp32_and_both_paths_agree(engines):
    fp32, bf16 = engines
    assert bf16.dtype == torch.bfloat16 and fp32.dtype == torch.float32
    prompts, targets = workload(fp32.tokenizer)
    ref = fp32.score(prompts, targets)
    tree = bf16.score(prompts, targets)
    naive = bf16.score_naive(prompts, targets)
    assert all(a.dtype == np.float32 for a in tree)  # log-softmax in float32, whatever the weights
    d_prec = np.concatenate([np.abs(a - b) for a, b in zip(tree, ref, strict=True)])
    d_path = np.concatenate([np.abs(a - b) for a, b in zip(tree, naive, strict=True)])
    # bf16 keeps 8 bits of mantissa: on this sharp random model (logits of tens) per-token
    # log-probs move by about 0.05 on average; a wrong mask or position moves them by nats
    assert d_prec.mean() < 0.15 and d_prec.max() < 1.0
    assert d_path.mean() < 0.15 and d_path.max() < 1.0
    # and the per-pair scores keep their order
    s_ref = [a.mean() for a in ref]
    s_bf = [a.mean() for a in tree]
    assert np.corrcoef(np.argsort(np.argsort(s_ref)), np.argsort(np.argsort(s_bf)))[0, 1] > 0.95


def test_bf16_sampling_is_seeded_and_valid(engines):
    _, bf16 = engines
    tok = bf16.tokenizer
    prompts = [tok.encode("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")] * 2
    a = bf16.generate(prompts, 3, 1.0, 0.9, 12, seed=5)
    b = bf16.generate(prompts, 3, 1.0, 0.9, 12, seed=5)
    assert [[s.token_ids for s in g] for g in a] == [[s.token_ids for s in g] for g in b]
    assert all(0 <= t < len(tok) for g in a for s in g for t in s.token_ids)
    assert a[0][0].token_ids != a[0][1].token_ids  # rows draw from their own streams


def test_dtype_reaches_the_loaded_model(tmp_path):
    path = make_tiny_model_dir(tmp_path / "m", seed=1)
    eng = HFEngine(str(path), dtype="bfloat16")
    assert eng.model.dtype == torch.bfloat16
    assert eng.attn_implementation == "sdpa"
    assert torch_dtype("auto") == torch.float32 and torch_dtype(torch.float16) == torch.float16
    with pytest.raises(ValueError):
        torch_dtype("int8")


def test_bench_bf16_compare_finds_the_largest_change_and_flipped_conclusions():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from bench_bf16 import compare

    def stat(mean, lo, hi):
        return {"mean": mean, "ci_low": lo, "ci_high": hi, "n_prompts": 10}

    def pair(diff, p):
        return {"diff": diff, "p_value": p, "n_prompts": 10, "ci_low": None, "ci_high": None}

    a = {"conditions": {"base": {"auroc": stat(0.6, 0.5, 0.7)}, "x": {"auroc": stat(0.7, 0.6, 0.8)}},
         "paired": {"x-vs-base": {"auroc": pair(0.1, 0.01)}}}
    b = {"conditions": {"base": {"auroc": stat(0.61, 0.5, 0.7)}, "x": {"auroc": stat(0.73, 0.6, 0.8)}},
         "paired": {"x-vs-base": {"auroc": pair(0.12, 0.2)}}}
    out = compare(a, b)
    assert out["largest_mean_change"]["condition"] == "x"
    assert abs(out["largest_mean_change"]["ratio"] - 0.3) < 1e-9  # 0.03 / half-width 0.1
    assert out["paired_changed"] == [{"pair": "x-vs-base", "metric": "auroc", "fp32": 1, "bf16": 0,
                                      "p_fp32": 0.01, "p_bf16": 0.2}]
