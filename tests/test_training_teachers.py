"""Teachers (EMA direction, frozen, tokenizer check), teacher contexts of a step, padding, report."""

from __future__ import annotations

import json

import pytest
import torch
from tiny_model import make_tiny_model, make_tiny_tokenizer

from mopd_eval.contexts import BUILTIN_CONDITIONS
from mopd_eval.engines.base import Sample
from mopd_eval.errors import InputError
from mopd_eval.pipeline import SampledRecord
from mopd_eval.tasks.base import Problem
from mopd_eval.verdict import Verdict
from training.config import TRAINING_CONDITIONS
from training.forward import pad_batch, response_logits
from training.samples import attach_advantages, attach_contexts, make_samples
from training.teachers import check_same_tokenizer, copy_teacher, ema_update_


def test_ema_moves_the_teacher_towards_the_student_by_the_rate():
    student, _ = make_tiny_model(seed=0)
    teacher = copy_teacher(student, "ema", ema_rate=0.05)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    before = [p.clone() for p in teacher.model.parameters()]
    teacher.update(student)
    for b, t, s in zip(before, teacher.model.parameters(), student.parameters(), strict=True):
        torch.testing.assert_close(t, 0.95 * b + 0.05 * s)
        # the distance to the student shrinks by exactly (1 - rate)
        torch.testing.assert_close((s - t).abs().sum(), 0.95 * (s - b).abs().sum())
    assert not any(p.requires_grad for p in teacher.model.parameters())


def test_frozen_teacher_does_not_move():
    student, _ = make_tiny_model(seed=0)
    teacher = copy_teacher(student, "frozen")
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    before = [p.clone() for p in teacher.model.parameters()]
    teacher.update(student)
    for b, t in zip(before, teacher.model.parameters(), strict=True):
        assert torch.equal(b, t)


def test_ema_rate_one_copies_the_student():
    a, _ = make_tiny_model(seed=0)
    b, _ = make_tiny_model(seed=1)
    ema_update_(a, b, 1.0)
    for x, y in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(x, y)


def test_tokenizer_check():
    tok = make_tiny_tokenizer()
    check_same_tokenizer(tok, make_tiny_tokenizer(), "same")
    with pytest.raises(InputError, match="sizes 320 vs 300"):
        check_same_tokenizer(tok, make_tiny_tokenizer(vocab_size=300), "other")


def _step_samples(tok, outcomes, feedback=True):
    p = Problem("p1", "What is 7 + 5?", "12", {})
    msgs = [{"role": "user", "content": p.question}]
    pids = tok.apply_chat_template(msgs, tokenize=True, add_generation_prompt=True)
    pids = list(pids if isinstance(pids, list) else pids["input_ids"])
    gen = [[Sample(f"answer {i}", tok.encode(f"answer {i}"), "stop" if i % 2 else "length") for i in range(len(outcomes))]]
    verdicts = [Verdict.correct() if ok else Verdict.failed("wrong", "wrong answer" if feedback else "")
                for ok in outcomes]
    records = [SampledRecord(p, 0, j, msgs, pids, g, v, 0, 0.0, 0.0) for j, (g, v) in enumerate(zip(gen[0], verdicts, strict=True))]
    return make_samples(records, task_name="arith", stop_id=tok.eos_token_id, step=1)


def test_samples_train_on_sampled_ids_plus_the_stop_token(tiny_tokenizer):
    s = _step_samples(tiny_tokenizer, [True, False])
    assert s[0].response_ids == tiny_tokenizer.encode("answer 0")  # ran out of length: no stop token
    assert s[1].response_ids == tiny_tokenizer.encode("answer 1") + [tiny_tokenizer.eos_token_id]


def test_mopd_contexts_need_two_successes_and_a_failure(tiny_tokenizer):
    tok = tiny_tokenizer
    samples = _step_samples(tok, [True, True, False, True, False])
    attach_contexts(samples, BUILTIN_CONDITIONS["2s1f"], tok)
    # each target sees its peers only: success targets have 2 other successes and 2 failures
    assert [s.has_context for s in samples] == [True, True, True, True, True]
    text = tok.decode(samples[2].teacher_prompt_ids)
    assert "Correct solution:\n\nanswer 0" in text and "Another successful solution:\n\nanswer 1" in text
    assert "A known failed solution (avoid repeating this mistake):\n\nanswer 4" in text
    assert text.endswith("Correctly solve the original question.<|im_end|>\n<|im_start|>assistant\n")
    samples = _step_samples(tok, [True, True, False, False])
    attach_contexts(samples, BUILTIN_CONDITIONS["2s1f"], tok)
    # a success target has only one other success: masked
    assert [s.has_context for s in samples] == [False, False, True, True]


def test_sdpo_contexts_use_a_success_or_feedback(tiny_tokenizer):
    tok = tiny_tokenizer
    samples = _step_samples(tok, [False, False, False])
    attach_contexts(samples, TRAINING_CONDITIONS["sdpo"], tok)
    assert all(s.has_context for s in samples)  # own feedback alone is enough
    assert "feedback from your unsuccessful earlier attempt:\n\nwrong answer" in tok.decode(samples[0].teacher_prompt_ids)
    samples = _step_samples(tok, [True, False], feedback=False)
    attach_contexts(samples, TRAINING_CONDITIONS["sdpo"], tok)
    # the success has no successful sibling and no feedback: masked; the failure sees the success
    assert [s.has_context for s in samples] == [False, True]


def test_base_context_is_the_student_prompt(tiny_tokenizer):
    samples = _step_samples(tiny_tokenizer, [True, False])
    attach_contexts(samples, BUILTIN_CONDITIONS["base"], tiny_tokenizer)
    assert all(s.has_context and s.teacher_prompt_ids == s.prompt_ids for s in samples)


def test_grpo_advantages_attached_per_group(tiny_tokenizer):
    samples = _step_samples(tiny_tokenizer, [True, False, False, True])
    attach_advantages(samples, scale="none")
    assert [s.advantage for s in samples] == [0.5, -0.5, -0.5, 0.5]


def test_padded_forward_equals_one_row_at_a_time():
    model, _ = make_tiny_model(seed=0)
    prompts = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14]]
    responses = [[20, 21], [22, 23, 24, 25], [26]]
    batch = pad_batch(prompts, responses, pad_id=0)
    with torch.no_grad():
        logits = response_logits(model, batch)
        for i, (p, r) in enumerate(zip(prompts, responses, strict=True)):
            full = model(input_ids=torch.tensor([p + r])).logits[0, len(p) - 1:len(p) + len(r) - 1]
            torch.testing.assert_close(logits[i, :len(r)], full, atol=1e-5, rtol=1e-5)
    assert batch.response_mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]


def test_train_report_table_and_curves(tmp_path):
    from training.report import write_train_report

    for name, gen in (("a", 1.0), ("b", 1.5)):
        d = tmp_path / name
        d.mkdir()
        rows = [{"step": s, "timing_s/gen": gen * (3 if s == 1 else 1), "timing_s/reward": 0.1, "timing_s/adv": 0.2,
                 "timing_s/update_actor": 2.0, "timing_s/teacher": 0.5, "timing_s/step": gen + 2.3,
                 "critic/rewards/mean": 0.1 * s, "teacher/context_fraction": 0.5, "response_length/mean": 10}
                for s in (1, 2, 3)]
        (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (d / "train_config.json").write_text(json.dumps({"algo": name}))
    md, csv, png, summary = write_train_report([tmp_path / "a", tmp_path / "b"], tmp_path / "rep", names=["SDPO", "MOPD"])
    text = md.read_text()
    assert "MOPD / SDPO" in text
    table = json.loads(summary.read_text())["table"]
    assert table["SDPO"]["gen (sampling)"] == pytest.approx(1.0)  # step 1 left out
    assert table["MOPD / SDPO"]["gen (sampling)"] == pytest.approx(1.5)
    assert table["MOPD / SDPO"]["step (total)"] == pytest.approx(3.8 / 3.3)
    assert png.stat().st_size > 1000
    with pytest.raises(InputError):
        write_train_report([tmp_path / "missing"], tmp_path / "rep2")
