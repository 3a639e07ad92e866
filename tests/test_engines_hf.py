"""The hf engine on a tiny random Llama: shared-prefix scoring equals one-pair-per-forward
scoring, and sampling is reproducible whatever the batch holds."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tiny_model import make_tiny_model, make_tiny_model_dir

from mopd_eval.engines import make_engine
from mopd_eval.engines.base import row_seed, stop_token_ids
from mopd_eval.engines.hf import HFEngine
from mopd_eval.errors import InputError

TOL = 1e-4


@pytest.fixture(scope="module")
def tiny():
    return make_tiny_model(seed=0)


@pytest.fixture(scope="module")
def engine(tiny):
    model, tok = tiny
    return HFEngine(model, tok)


def chat_ids(tok, question, generation_prompt=True):
    text = tok.apply_chat_template(
        [{"role": "user", "content": question}],
        tokenize=False,
        add_generation_prompt=generation_prompt,
    )
    return tok.encode(text, add_special_tokens=False)


def signal_like_workload(tok, seed=0):
    """Teacher prompts built the way the signal study builds them: a chat header + question,
    then peer blocks; targets follow; pairs repeat prompts; a few edge cases on top."""
    rng = np.random.default_rng(seed)
    V = len(tok)
    question = chat_ids(tok, "What is 7 + 5?", generation_prompt=False)
    header = list(question[:-3])
    tail = tok.encode(
        "\n\nCorrectly solve the original question.<|im_end|>\n<|im_start|>assistant\n"
    )
    peers = [list(rng.integers(3, V, int(rng.integers(5, 15)))) for _ in range(4)]
    blocks = {
        "sol": tok.encode("\nCorrect solution:\n\n"),
        "fail": tok.encode("\nA known failed solution:\n\n"),
    }
    targets = [list(rng.integers(3, V, int(rng.integers(1, 12)))) for _ in range(4)]
    prompts, tgts = [], []
    for t_idx, t in enumerate(targets):
        others = [p for k, p in enumerate(peers) if k != t_idx]
        conditions = [
            [],
            blocks["sol"] + others[0],
            blocks["sol"] + others[0] + blocks["fail"] + others[2],
            blocks["sol"] + others[1],
        ]
        for c in conditions:
            prompts.append(header + c + tail)
            tgts.append(t)
    # duplicates, a pair whose prompt is a prefix of another pair's input, an empty target
    prompts += [prompts[0], prompts[0][:7], header + tail]
    tgts += [tgts[0], prompts[0][7:12], []]
    return prompts, tgts


def assert_close(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == np.float32
        assert g.shape == w.shape
        if w.size:
            assert np.abs(g - w).max() < TOL


@pytest.mark.parametrize(("pack_tokens", "row_tokens"), [(1, 1), (9, 4), (60, 16), (1024, 256)])
def test_score_equals_one_pair_per_forward(tiny, pack_tokens, row_tokens):
    model, tok = tiny
    eng = HFEngine(model, tok, pack_tokens=pack_tokens, row_tokens=row_tokens)
    prompts, tgts = signal_like_workload(tok)
    fast = eng.score(prompts, tgts)
    stats = eng.last_stats
    naive = eng.score_naive(prompts, tgts)
    assert_close(fast, naive)
    # The log-probs are informative (not a constant a wrong index would also match).
    assert np.concatenate(naive).std() > 0.3
    # Every distinct prefix is encoded exactly once, and sharing beats the naive count.
    distinct = {
        tuple((p + t)[:k])
        for p, t in zip(prompts, tgts, strict=True)
        if t
        for k in range(1, len(p) + len(t))
    }
    assert stats.lower_bound == len(distinct) == stats.forwarded
    assert stats.naive_positions > 2 * stats.lower_bound
    assert stats.target_tokens == sum(len(t) for t in tgts)


def test_score_keeps_input_order_and_pairs(engine, tiny):
    _, tok = tiny
    prompts, tgts = signal_like_workload(tok, seed=3)
    perm = np.random.default_rng(1).permutation(len(prompts))
    a = engine.score(prompts, tgts)
    b = engine.score([prompts[i] for i in perm], [tgts[i] for i in perm])
    for j, i in enumerate(perm):
        np.testing.assert_allclose(b[j], a[i], atol=TOL)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=st.lists(
        st.tuples(
            st.lists(st.integers(3, 6), min_size=1, max_size=9),
            st.lists(st.integers(3, 6), min_size=0, max_size=6),
        ),
        min_size=1,
        max_size=12,
    ),
    pack_tokens=st.integers(1, 30),
    row_tokens=st.integers(1, 12),
)
def test_score_property_small_alphabet(tiny, data, pack_tokens, row_tokens):
    # A 4-token alphabet makes prefixes collide in every way a trie can branch.
    model, tok = tiny
    eng = HFEngine(model, tok, pack_tokens=pack_tokens, row_tokens=row_tokens)
    prompts = [p for p, _ in data]
    tgts = [t for _, t in data]
    assert_close(eng.score(prompts, tgts), eng.score_naive(prompts, tgts))
    assert eng.last_stats.forwarded == eng.last_stats.lower_bound


def test_score_within_a_small_kv_budget_splits_into_chunks(tiny):
    # A budget of about half the trie's keys/values splits the call into chunks: results stay
    # exact, and only the prefixes shared across chunk boundaries are encoded again.
    model, tok = tiny
    prompts, tgts = signal_like_workload(tok)
    want = HFEngine(model, tok, row_tokens=8).score(prompts, tgts)
    c = model.config
    per_position = 2 * c.num_hidden_layers * c.num_key_value_heads * c.head_dim * 4
    eng = HFEngine(model, tok, row_tokens=8, kv_budget_mb=250 * per_position / 2**20)
    assert_close(eng.score(prompts, tgts), eng.score_naive(prompts, tgts))
    assert_close(eng.score(prompts, tgts), want)
    s = eng.last_stats
    assert s.lower_bound < s.forwarded < s.naive_positions


def test_score_through_the_models_own_head(tiny):
    # The hidden-state path is taken only when the head is a plain linear map (it is here);
    # the fallback through the model's forward with logits_to_keep gives the same numbers.
    from mopd_eval.engines.tree_scoring import head_is_linear

    model, tok = tiny
    assert head_is_linear(model)
    eng = HFEngine(model, tok, row_tokens=8)
    eng._linear_head = False
    prompts, tgts = signal_like_workload(tok, seed=5)
    assert_close(eng.score(prompts, tgts), eng.score_naive(prompts, tgts))
    assert eng.last_stats.forwarded == eng.last_stats.lower_bound


def test_score_input_errors(engine):
    with pytest.raises(ValueError, match="pair up"):
        engine.score([[1, 2]], [[3], [4]])
    with pytest.raises(ValueError, match="empty teacher prompt"):
        engine.score([[]], [[3]])
    assert engine.score([], []) == []
    out = engine.score([[5]], [[]])
    assert out[0].shape == (0,)


def test_score_progress_bar_counts_forwarded_tokens(engine, tiny, capsys):
    _, tok = tiny
    prompts, tgts = signal_like_workload(tok)
    engine.score(prompts, tgts, progress=True)
    err = capsys.readouterr().err
    assert f"{engine.last_stats.lower_bound}/{engine.last_stats.lower_bound}" in err


# ---------------------------------------------------------------------------- generation


def prompts_for(tok, questions):
    return [chat_ids(tok, q) for q in questions]


def test_generate_is_independent_of_batch_composition(tiny):
    model, tok = tiny
    ps = prompts_for(tok, ["What is 7 + 5?", "def add(a, b):", "1 2 3 4 5 6 7 8 9 10 11 12 13"])
    big = HFEngine(model, tok, gen_batch_rows=32).generate(
        ps, n=3, temperature=1.0, top_p=0.95, max_tokens=12, seed=7
    )
    alone = HFEngine(model, tok, gen_batch_rows=1).generate(
        [ps[2]], n=2, temperature=1.0, top_p=0.95, max_tokens=12, seed=7
    )
    reordered = HFEngine(model, tok).generate(
        [ps[1], ps[0]], n=3, temperature=1.0, top_p=0.95, max_tokens=12, seed=7
    )
    assert [s.token_ids for s in alone[0]] == [s.token_ids for s in big[2][:2]]
    assert [s.token_ids for s in reordered[1]] == [s.token_ids for s in big[0]]
    # Samples of one prompt differ from each other, and another seed gives other samples.
    assert len({tuple(s.token_ids) for s in big[0]}) == 3
    other = HFEngine(model, tok).generate(
        ps[:1], n=3, temperature=1.0, top_p=0.95, max_tokens=12, seed=8
    )
    assert [s.token_ids for s in other[0]] != [s.token_ids for s in big[0]]


def test_greedy_matches_transformers_generate(tiny):
    model, tok = tiny
    eng = HFEngine(model, tok)
    ps = prompts_for(tok, ["What is 7 + 5?", "Correctly solve the original question please"])
    got = eng.generate(ps, n=2, temperature=0.0, top_p=1.0, max_tokens=10, seed=0)
    for p, samples in zip(ps, got, strict=True):
        ref = model.generate(
            torch.tensor([p]),
            do_sample=False,
            max_new_tokens=10,
            eos_token_id=eng.stop_ids,
            pad_token_id=eng.pad_id,
        )[0, len(p) :].tolist()
        ref = [t for t in ref if t not in eng.stop_ids][:10]
        assert samples[0].token_ids == samples[1].token_ids == ref


def test_tiny_top_p_is_greedy(tiny):
    model, tok = tiny
    eng = HFEngine(model, tok)
    ps = prompts_for(tok, ["What is 7 + 5?"])
    greedy = eng.generate(ps, n=1, temperature=0.0, top_p=1.0, max_tokens=8, seed=0)[0][0]
    nucleus = eng.generate(ps, n=4, temperature=1.0, top_p=1e-6, max_tokens=8, seed=0)[0]
    assert all(s.token_ids == greedy.token_ids for s in nucleus)


@pytest.mark.parametrize("top_p", [1.0, 0.8])
def test_sampling_follows_the_model_distribution(tiny, top_p):
    model, tok = tiny
    eng = HFEngine(model, tok)
    p = prompts_for(tok, ["What is 7 + 5?"])[0]
    n = 4000
    samples = eng.generate([p], n=n, temperature=0.7, top_p=top_p, max_tokens=1, seed=1)[0]
    with torch.no_grad():
        probs = (
            torch.softmax(model(torch.tensor([p])).logits[0, -1] / 0.7, -1)
            .numpy()
            .astype(np.float64)
        )
    order = np.argsort(-probs, kind="stable")
    head = np.cumsum(probs[order]) - probs[order] < top_p
    want = np.zeros_like(probs)
    want[order[head]] = probs[order[head]]
    want /= want.sum()
    counts = np.zeros_like(probs)
    for s in samples:
        counts[s.token_ids[0] if s.token_ids else tok.eos_token_id] += 1
    assert counts[want == 0].sum() == 0
    tv = 0.5 * np.abs(counts / n - want).sum()
    assert tv < 0.06


def test_stop_and_length_finish_reasons(tiny):
    model, tok = tiny
    eng = HFEngine(model, tok)
    # Make the stop token likely so both outcomes occur: raise its output-embedding row.
    stop = eng.stop_ids[0]
    boosted, _ = make_tiny_model(seed=0)
    with torch.no_grad():
        w = boosted.get_output_embeddings().weight
        w[stop] = w.mean(0) + 0.0
        boosted.model.norm.weight.fill_(1.0)
    eng = HFEngine(boosted, tok)
    ps = prompts_for(tok, ["What is 7 + 5?", "def add(a, b):"])
    out = eng.generate(ps, n=16, temperature=2.0, top_p=1.0, max_tokens=6, seed=3)
    reasons = {s.finish_reason for row in out for s in row}
    for row in out:
        for s in row:
            assert not set(s.token_ids) & set(eng.stop_ids)
            assert s.text == tok.decode(s.token_ids, skip_special_tokens=True)
            if s.finish_reason == "length":
                assert len(s.token_ids) == 6
            else:
                assert s.finish_reason == "stop" and len(s.token_ids) < 6
    assert reasons == {"stop", "length"}


def test_generate_input_checks(engine, tiny):
    _, tok = tiny
    ps = prompts_for(tok, ["hi"])
    with pytest.raises(ValueError):
        engine.generate(ps, n=0, temperature=1.0, top_p=1.0, max_tokens=4, seed=0)
    with pytest.raises(ValueError):
        engine.generate(ps, n=1, temperature=1.0, top_p=0.0, max_tokens=4, seed=0)
    with pytest.raises(ValueError):
        engine.generate([[]], n=1, temperature=1.0, top_p=1.0, max_tokens=4, seed=0)
    out = engine.generate(ps, n=2, temperature=1.0, top_p=1.0, max_tokens=0, seed=0)
    assert [[s.finish_reason for s in r] for r in out] == [["length", "length"]]


# ---------------------------------------------------------------------------- helpers, factory


def test_row_seed_depends_on_every_part():
    base = row_seed(1, [5, 6, 7], 0)
    assert base == row_seed(1, [5, 6, 7], 0)
    assert (
        len(
            {
                base,
                row_seed(2, [5, 6, 7], 0),
                row_seed(1, [5, 6, 8], 0),
                row_seed(1, [5, 6, 7], 1),
                row_seed(1, [5, 6], 0),
            }
        )
        == 5
    )
    assert 0 <= base < 2**63


def test_stop_token_ids_include_eos_and_im_end(tiny):
    _, tok = tiny
    assert stop_token_ids(tok) == [tok.convert_tokens_to_ids("<|im_end|>")]


def test_make_engine_loads_a_model_directory(tmp_path):
    path = make_tiny_model_dir(tmp_path / "tiny")
    eng = make_engine("hf", str(path))
    assert isinstance(eng, HFEngine)
    p = eng.tokenizer.encode("What is 7 + 5?")
    t = eng.tokenizer.encode(" 12")
    assert_close(eng.score([p], [t]), eng.score_naive([p], [t]))


def test_make_engine_rejects_unknown_names(tmp_path):
    with pytest.raises(InputError, match="unknown engine"):
        make_engine("tgi", str(tmp_path))
    with pytest.raises(InputError) as e:
        make_engine("hf", str(tmp_path / "missing"))
    assert e.value.field == "model"
