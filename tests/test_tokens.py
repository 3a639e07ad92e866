"""mopd-eval tokens: divergence finder, answer spans, the per-prompt numbers, the command, the viewer."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from analysis.token_logprobs import STORE_FILE, load_token_logprobs
from analysis.tokens import (
    Target,
    answer_char_span,
    find_divergence,
    prompt_values,
    target_values,
    token_span,
)
from mopd_eval.cli import main

# --------------------------------------------------------------------------- divergence finder


def test_identical_responses_have_no_divergence():
    d = find_divergence([5, 6, 7], [5, 6, 7], "abc", "abc")
    assert d.index is None and d.same_text


def test_a_prefix_diverges_where_the_shorter_one_ends():
    assert find_divergence([5, 6], [5, 6, 7]).index == 2
    assert find_divergence([5, 6, 7], [5, 6]).index == 2
    assert not find_divergence([5, 6], [5, 6, 7], "ab", "abc").same_text


def test_a_differing_first_token_diverges_at_zero():
    assert find_divergence([1, 6, 7], [2, 6, 7]).index == 0
    assert find_divergence([], [2]).index == 0


def test_token_boundaries_that_differ_while_the_text_agrees(tiny_tokenizer):
    # " 12" as one token against " 1" + "2": the ids part at 0 although the text is the same.
    one = tiny_tokenizer.convert_tokens_to_ids(["Ġ1", "2"])
    whole = tiny_tokenizer.convert_tokens_to_ids(["Ġ12"])
    assert tiny_tokenizer.decode(one) == tiny_tokenizer.decode(whole) == " 12"
    d = find_divergence(one, whole, " 12", " 12")
    assert d.index == 0 and d.same_text
    # Same ids after a common prefix, then a re-split: the index is where the ids part.
    d = find_divergence([9, *one], [9, *whole], "x 12", "x 12")
    assert d.index == 1 and d.same_text


# --------------------------------------------------------------------------- answer spans


@pytest.mark.parametrize(("text", "task", "want"), [
    ("so 3 + 4 = 7, the answer is \\boxed{7}. Check: 7", "arith", "7"),
    ("x = \\boxed{\\frac{1}{2}} done", "aime24", "\\frac{1}{2}"),
    ("First 12 then 1,000 apples", "arith", "1,000"),
    ("no number here", "arith", None),
    ("Here:\n```python\ndef f():\n    return 1\n```\nDone.", "humaneval", "def f():\n    return 1"),
    ("a call", "toolalpaca", None),
])
def test_answer_char_span(text, task, want):
    span = answer_char_span(text, task)
    assert (None if span is None else text[span[0]:span[1]]) == want
    if want == "7":
        assert span[0] == text.index("{7}") + 1  # the boxed 7, not the later one


def test_token_span_covers_tokens_overlapping_the_characters():
    pieces = ["The", " answer", " is", " 1", "2", "."]
    text = "".join(pieces)
    assert token_span(pieces, (text.index("12"), text.index("12") + 2)) == (3, 5)
    assert token_span(pieces, None) is None


# --------------------------------------------------------------------------- per-target numbers


def test_target_values_by_hand():
    a = np.array([0.0, 1.0, -2.0, 3.0, 0.5, 0.5])
    lp = np.array([-1.0, -1.0, -2.0, -0.5, -0.1, -0.2])
    t = Target("p", "r", False, np.arange(6), list("abcdef"), span=(4, 6), pairs=[("s1", 2), ("s2", 4)])
    v = target_values(a, lp, t, window=2)
    # pair 1: at tokens 2,3 -> 0.5, elsewhere 0,1,4,5 -> 0.5; pair 2: at 4,5 -> 0.5, elsewhere -> 0.5
    assert v["at"] == pytest.approx(0.5) and v["else"] == pytest.approx(0.5)
    assert v["suffix"] == pytest.approx(((-2 + 3 + 0.5 + 0.5) + (0.5 + 0.5)) / 2)
    assert v["in"] == pytest.approx(0.5) and v["out"] == pytest.approx(0.5)
    assert v["adv_answer"] == pytest.approx(1.0) and v["lp_answer"] == pytest.approx(-0.3)
    assert v["profile"][4] == pytest.approx((-2.0 + 0.5) / 2)  # position 0 = the divergence token


def test_prompt_values_auc_and_gaps():
    vals = [(ok, s, {"at": at, "else": 0.0, "in": float("nan"), "out": float("nan"), "suffix": suf,
                     "mean": s, "adv_answer": suf, "lp_answer": s})
            for ok, s, at, suf in [(True, -0.1, 0.4, 2.0), (True, -0.2, 0.2, 1.0), (False, -0.3, -0.5, -1.0),
                                   (False, -0.05, -0.1, 3.0)]]
    m = prompt_values(vals)
    assert m["div_at_succ"] == pytest.approx(0.3) and m["div_at_fail"] == pytest.approx(-0.3)
    assert m["div_gap"] == pytest.approx(0.6)
    assert m["auc_seq_mean"] == pytest.approx(0.5)  # 2 of 4 success-failure pairs ordered right
    assert m["auc_adv_suffix"] == pytest.approx(0.5)
    assert np.isnan(m["ans_in_fail"])


# --------------------------------------------------------------------------- the command on a tiny run

RESPONSES = {  # problem -> [(response, success)]
    "p1": [("The answer is 12.", True), ("The answer is 13.", False), ("7 + 5 = 12, so \\boxed{12}.", True),
           ("7 + 5 = 11, so \\boxed{11}.", False)],
    "p2": [("The answer is 4.", True), ("The answer is 5.", False), ("The answer is 4.", True),
           ("2 plus 2 equals 5", False)],
    "p3": [("The answer is 9.", True), ("The answer is 8.", False), ("9", True), ("The answer is 10.", False)],
}


@pytest.fixture(scope="module")
def run(tiny_model_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("tokrun")
    lines = [json.dumps({"problem_id": pid, "rollout_id": f"{pid}#{i}", "task": "arith",
                         "prompt": [{"role": "user", "content": f"What is {pid}?"}], "response": text,
                         "reward": float(ok), "success": ok, "feedback": None if ok else "wrong"})
             for pid, rs in RESPONSES.items() for i, (text, ok) in enumerate(rs)]
    (d / "r.jsonl").write_text("\n".join(lines) + "\n")
    assert main(["signal", "--rollouts", str(d / "r.jsonl"), "--model", str(tiny_model_dir), "--bootstrap", "20",
                 "--conditions", "base,primary,failure,2s1f", "--out", str(d / "sig"), "--save-token-logprobs"]) == 0
    assert main(["tokens", "--run", str(d / "sig"), "--bootstrap", "50"]) == 0
    return d / "sig"


@pytest.fixture(scope="module")
def rollouts_of_run(run):
    from mopd_eval.records import read_rollouts

    return read_rollouts(run.parent / "r.jsonl")


def test_tokens_command_writes_the_report(run):
    out = run / "tokens"
    for name in ("tokens.json", "tokens.md", "token_metrics.csv", "per_prompt.csv", "profile.csv",
                 "divergence_profile.png", "token_summary.png", "viewer.html"):
        assert (out / name).stat().st_size > 0, name
    result = json.loads((out / "tokens.json").read_text())
    assert result["conditions"] == ["base", "primary", "failure", "2s1f"]
    base = result["summary"]["base"]
    assert base["div_at_fail"]["mean"] == 0 and base["auc_adv_suffix"]["mean"] == 0.5  # A_t(base) = 0
    # Table 7's sequence-mean AUC is reproduced from the same rows.
    metrics = json.loads((run / "metrics.json").read_text())
    for c in result["conditions"]:
        assert result["summary"][c]["auc_seq_mean"]["mean"] == pytest.approx(metrics["conditions"][c]["success_auc"]["mean"])
    assert result["counts"]["pairs"] > 0 and result["counts"]["targets_with_answer_span"] == 12
    # 2s1f is effective for failures only here (two successes among three peers), so no gap.
    assert result["summary"]["2s1f"]["div_gap"]["n_prompts"] == 0
    vs = result["vs_base"]["primary"]["div_gap"]
    assert vs["n_prompts"] == result["summary"]["primary"]["div_gap"]["n_prompts"] > 0 and vs["p_value"] is not None
    md = (out / "tokens.md").read_text()
    assert "| 2 Suc.+1 Failure |" in md and "Σ A_t, divergent suffix" in md


def test_per_prompt_divergence_matches_a_direct_computation(run):
    """One prompt's 'failures at divergence' recomputed from the store with plain loops."""
    store = load_token_logprobs(run / STORE_FILE)
    table = pd.read_csv(run / "tokens" / "per_prompt.csv")
    row = table[(table.condition == "primary") & (table.problem_id == "p1")].iloc[0]
    ids = {rid: store.tokens[("p1", rid)][0].tolist() for rid in (f"p1#{i}" for i in range(4))}
    ok = {f"p1#{i}": s for i, (_, s) in enumerate(RESPONSES["p1"])}
    per_target = []
    for f in (r for r in ids if not ok[r]):
        a = store.logprobs("primary", "p1", f).astype(float) - store.logprobs("base", "p1", f).astype(float)
        ats = []
        for s in (r for r in ids if ok[r]):
            d = next((i for i, (x, y) in enumerate(zip(ids[f], ids[s], strict=False)) if x != y), None)
            if d is not None:
                ats.append(a[d : d + 3].mean())
        if ats:
            per_target.append(np.mean(ats))
    assert row.div_at_fail == pytest.approx(np.mean(per_target))


def test_tokens_without_a_store_is_exit_2(tmp_path, capsys):
    (tmp_path / "teacher_scores.jsonl").write_text("")
    assert main(["tokens", "--run", str(tmp_path)]) == 2
    assert "token_logprobs.npz" in capsys.readouterr().err


def test_tokens_refuses_other_rollouts(run, tmp_path, capsys):
    (tmp_path / "other.jsonl").write_text(json.dumps({"problem_id": 1, "rollout_id": 1, "prompt": "q",
                                                      "response": "a", "reward": 0.0}) + "\n")
    assert main(["tokens", "--run", str(run), "--rollouts", str(tmp_path / "other.jsonl"),
                 "--out", str(tmp_path / "t")]) == 2
    assert "sha256 differs" in capsys.readouterr().err


def test_teacher_minus_student_uses_the_student_store(run, tmp_path):
    """A student store whose base row is the teacher's own gives the same numbers (self-teacher)."""
    assert main(["tokens", "--run", str(run), "--student", str(run / STORE_FILE), "--out", str(tmp_path / "t"),
                 "--bootstrap", "50"]) == 0
    a = json.loads((tmp_path / "t" / "tokens.json").read_text())
    b = json.loads((run / "tokens" / "tokens.json").read_text())
    assert a["reference"] == "student store" and a["summary"] == b["summary"]


def test_rows_a_student_store_lacks_are_counted_and_left_out(run, rollouts_of_run):
    from analysis.aggregate import select_sample_set
    from analysis.scores import load_scores
    from analysis.token_logprobs import TokenLogprobs
    from analysis.tokens import token_study

    store = load_token_logprobs(run / STORE_FILE)
    student = TokenLogprobs(store.path, store.meta, {k: v for k, v in store.rows.items() if k[1] != "p1"},
                            store.tokens)
    frame = load_scores(run / "teacher_scores.jsonl")
    full = token_study(store, frame, rollouts_of_run, n_boot=10)
    part = token_study(store, frame, rollouts_of_run, reference=student, n_boot=10)
    assert full["result"]["rows_without_logprobs"] == 0
    kept = select_sample_set(frame, "both_present_effective")  # the rows the analysis reads
    assert part["result"]["rows_without_logprobs"] == (kept.problem_id == "p1").sum() > 0
    assert set(part["table"][part["table"].n_rows > 0].problem_id) == {"p2", "p3"}


# --------------------------------------------------------------------------- the viewer in a browser


def test_viewer_is_self_contained(run):
    page = (run / "tokens" / "viewer.html").read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # nothing fetched from a network
    assert "<script src" not in page and "<link" not in page


def test_viewer_embeds_response_text_that_looks_like_markup_as_data():
    from analysis.token_viewer import render

    page = render({"title": "t", "problems": [{"id": "p", "prompt": "<!-- x", "targets": []}], "conditions": [],
                   "scale": 1.0, "start": "base", "pieces": ["</script><script>alert(1)</script>"]})
    assert page.count("</script>") == 2 and "<!-- x" not in page
    data = page.split('id="data">')[1].split("</script>")[0]
    assert json.loads(data)["pieces"] == ["</script><script>alert(1)</script>"]


def test_viewer_shows_coloured_tokens_in_headless_chromium(run, tmp_path):
    from analysis.token_viewer import dump_dom, find_chromium, screenshot

    if find_chromium() is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install -y chromium chromium-driver)")
    page = run / "tokens" / "viewer.html"
    dom = dump_dom(page, fragment="p=0&c=2s1f")
    tokens = re.findall(r'<span class="tok[^"]*" data-a="([^"]+)" style="background:\s*rgb\((\d+), ?(\d+), ?(\d+)\)', dom)
    assert len(tokens) >= 12, dom[:2000]
    coloured = [(float(a), tuple(map(int, rgb))) for a, *rgb in tokens if tuple(map(int, rgb)) != (255, 255, 255)]
    assert coloured, "no token is coloured"
    for a, (r, _, b) in coloured:  # red where the context lowered the token, blue where it raised it
        assert (b > r) if a > 0 else (r > b)
    assert "Problem 1 / 3" in dom and "2 Suc.+1 Failure" in dom and 'class="tok div' in dom
    # Keyboard state lives in the hash: another problem and condition open from a link.
    assert "Problem 3 / 3: p3" in dump_dom(page, fragment="p=2&c=failure")
    png = screenshot(page, tmp_path / "v.png", fragment="p=0&c=2s1f", size=(900, 700))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
