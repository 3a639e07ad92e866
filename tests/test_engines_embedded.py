"""The hf engine on the embedded model (SmolLM2-135M-Instruct): slow, fetches it once if needed."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def engine():
    from mopd_eval.engines import make_engine

    return make_engine("hf", "smollm2-135m")


def teacher_prompt(tok, question, peers=()):
    blocks = "".join(
        ("\nCorrect solution:\n\n" if i == 0 else "\nAnother successful solution:\n\n") + p
        for i, p in enumerate(peers)
    )
    content = question + blocks + ("\n\nCorrectly solve the original question." if peers else "")
    text = tok.apply_chat_template(
        [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
    )
    return tok.encode(text, add_special_tokens=False)


def test_shared_prefix_scores_equal_one_pair_per_forward(engine):
    tok = engine.tokenizer
    q = "What is 17 + 25?\n\nPlease reason step by step, and put your final answer within \\boxed{}."
    answers = [
        "17 + 25 = 42. The final answer is \\boxed{42}.",
        "Adding the tens gives 30 and the ones give 12, so the total is \\boxed{42}.",
        "17 + 25 = 32, so the answer is \\boxed{32}.",
        "First 17 + 20 = 37, then 37 + 5 = 42. \\boxed{42}",
    ]
    prompts, targets = [], []
    for i, a in enumerate(answers):
        peers = [p for j, p in enumerate(answers) if j != i]
        for ctx in ([], peers[:1], peers[:2], peers):
            prompts.append(teacher_prompt(tok, q, ctx))
            targets.append(tok.encode(a, add_special_tokens=False))
    fast = engine.score(prompts, targets)
    stats = engine.last_stats
    naive = engine.score_naive(prompts, targets)
    diff = max(float(np.abs(f - n).max()) for f, n in zip(fast, naive, strict=True))
    print(f"max |fast - naive| = {diff:.2e}; {stats}")
    assert diff < 1e-4
    assert stats.forwarded == stats.lower_bound < stats.naive_positions / 2


def test_greedy_answer_stops_at_im_end(engine):
    tok = engine.tokenizer
    p = teacher_prompt(tok, "What is 7 + 5?")
    out = engine.generate([p], n=2, temperature=0.0, top_p=1.0, max_tokens=64, seed=0)[0]
    assert out[0].token_ids == out[1].token_ids
    assert out[0].finish_reason == "stop"
    assert "12" in out[0].text
    assert "<|im_end|>" not in out[0].text
