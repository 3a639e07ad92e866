"""Peer-context builder: slots, self-exclusion, effective flags, templates byte for byte."""

from __future__ import annotations

import pytest

from mopd_eval.contexts import (
    BUILTIN_CONDITIONS,
    BUILTIN_TEMPLATES,
    PAPER_ANALYSIS_TEMPLATES,
    PAPER_TEMPLATES,
    Condition,
    build_context,
    build_contexts,
    load_spec_file,
    order_peers,
    render_teacher_prompt,
    resolve_conditions,
    resolve_templates,
)
from mopd_eval.errors import InputError
from mopd_eval.records import Rollout


def R(
    rid: str,
    success: bool,
    reward: float | None = None,
    feedback: str | None = None,
    pid: str = "p",
) -> Rollout:
    return Rollout(
        problem_id=pid,
        rollout_id=rid,
        prompt="Q?",
        response=f"resp-{rid}",
        reward=float(success) if reward is None else reward,
        success=success,
        feedback=feedback,
    )


# Group order: s = success, f = failure.
GROUP = [
    R("f0", False, feedback="wrong answer"),
    R("s1", True),
    R("f2", False),
    R("s3", True),
    R("s4", True),
    R("f5", False),
]


def ctx(cond: str, target: str, group=GROUP, **kw):
    i = [r.rollout_id for r in group].index(target)
    return build_context(group, i, BUILTIN_CONDITIONS[cond], **kw)


def test_paper_2s1f_renders_byte_for_byte():
    c = ctx("2s1f", "f0")
    expected = (
        "Q?"
        "\nCorrect solution:\n\nresp-s1"
        "\nAnother successful solution:\n\nresp-s3"
        "\nA known failed solution (avoid repeating this mistake):\n\nresp-f2"
        "\n\nCorrectly solve the original question."
    )
    assert c.reprompt == expected
    assert c.effective
    assert c.peer_ids == ["s1", "s3", "f2"]


def test_paper_templates_are_the_trainer_strings():
    t = PAPER_TEMPLATES
    assert (
        t.reprompt
        == "{prompt}{solution}{another}{failure}{feedback}\n\nCorrectly solve the original question."
    )
    assert t.solution == "\nCorrect solution:\n\n{text}"
    assert t.another == "\nAnother successful solution:\n\n{text}"
    assert t.failure == "\nA known failed solution (avoid repeating this mistake):\n\n{text}"
    assert (
        t.feedback
        == "\nThe following is feedback from your unsuccessful earlier attempt:\n\n{text}"
    )


def test_target_is_never_its_own_peer():
    for cond in BUILTIN_CONDITIONS:
        for i, target in enumerate(GROUP):
            c = build_context(GROUP, i, BUILTIN_CONDITIONS[cond])
            assert target.rollout_id not in c.peer_ids, (cond, target.rollout_id)
    # The first success, as target, gets the next success as its primary.
    assert ctx("primary", "s1").peer_ids == ["s3"]
    assert ctx("primary", "f2").peer_ids == ["s1"]


def test_base_is_the_original_prompt_and_effective():
    c = ctx("base", "s1")
    assert c.reprompt == "Q?" and c.blocks == () and c.effective


def test_second_uses_the_another_header_alone():
    c = ctx("second", "f0")
    assert (
        c.reprompt
        == "Q?\nAnother successful solution:\n\nresp-s3\n\nCorrectly solve the original question."
    )
    assert c.effective
    # Target s1 has peers s3, s4: the second success is s4.
    assert ctx("second", "s1").peer_ids == ["s4"]


def test_all_shows_every_peer():
    c = ctx("all", "f0")
    assert c.peer_ids == ["s1", "s3", "s4", "f2", "f5"]
    assert [b.role for b in c.blocks] == ["solution", "another", "another", "failure", "failure"]
    assert c.effective


def test_all_capped_is_the_references_all_solutions():
    # The reference's all_solutions: first two successes, no failure; byte-identical to the
    # prompt a solution + another_solution condition gives.
    two = Condition("s+a", successes=2)
    for i, target in enumerate(GROUP):
        c = ctx("all-capped", target.rollout_id)
        assert c.reprompt == build_context(GROUP, i, two).reprompt
        assert all(p.startswith("s") for p in c.peer_ids) and len(c.peer_ids) == 2
    assert ctx("all-capped", "f0").reprompt == (
        "Q?\nCorrect solution:\n\nresp-s1\nAnother successful solution:\n\nresp-s3"
        "\n\nCorrectly solve the original question."
    )
    # Both slots name a success: one successful peer is not enough.
    lone = [R("a", True), R("b", True), R("c", False)]
    c = ctx("all-capped", "a", group=lone)
    assert c.peer_ids == ["b"] and not c.effective


def test_feedback_condition_uses_only_the_targets_feedback():
    c = ctx("feedback", "f0")
    assert c.reprompt == (
        "Q?\nThe following is feedback from your unsuccessful earlier attempt:\n\nwrong answer"
        "\n\nCorrectly solve the original question."
    )
    assert c.effective
    no_fb = ctx("feedback", "f2")
    assert not no_fb.effective and no_fb.reprompt == "Q?"


def test_lone_success_and_group_without_failures_or_successes():
    lone = [R("a", True), R("b", False), R("c", False)]
    # The lone success as target has no successful peer: primary is not effective, nothing filled.
    c = ctx("primary", "a", group=lone)
    assert not c.effective and c.reprompt == "Q?"
    # 2s1f with one success available: partially filled, rendered, not effective.
    c = ctx("2s1f", "b", group=lone)
    assert c.peer_ids == ["a", "c"] and not c.effective
    only_s = [R("a", True), R("b", True), R("c", True)]
    assert not ctx("failure", "a", group=only_s).effective
    assert not ctx("primary+failure", "a", group=only_s).effective
    assert not ctx("all", "a", group=only_s).effective  # all names the failure slot too
    only_f = [R("a", False), R("b", False)]
    assert not ctx("primary", "a", group=only_f).effective
    assert ctx("failure", "a", group=only_f).peer_ids == ["b"]


def test_single_rollout_group_has_no_peers():
    c = ctx("2s1f", "a", group=[R("a", True)])
    assert c.blocks == () and not c.effective and c.reprompt == "Q?"


def test_score_ordered_ties_keep_group_order():
    g = [
        R("a", False, 0.5),
        R("b", True, 1.0),
        R("c", False, 0.5),
        R("d", True, 1.0),
        R("t", False, 0.0),
    ]
    c = ctx("score_ordered", "t", group=g)
    assert c.peer_ids == ["b", "d", "a"]
    assert [b.role for b in c.blocks] == ["solution", "another", "failure"]


def test_score_ordered_shows_peers_under_their_true_labels():
    # Partial rewards: the top three by reward are one success and two failures.
    g = [
        R("t", False, 0.0),
        R("f1", False, 0.9),
        R("s1", True, 1.0),
        R("f2", False, 0.95),
        R("s2", True, 0.5),
    ]
    c = ctx("score_ordered", "t", group=g)
    assert c.peer_ids == ["s1", "f2", "f1"]
    roles = {b.rollout_id: b.role for b in c.blocks}
    assert roles == {"s1": "solution", "f2": "failure", "f1": "failure"}
    assert c.reprompt.index("resp-s1") < c.reprompt.index("A known failed")
    assert c.effective  # 2s1f fills every slot for t


def test_label_blind_controls_use_the_targets_own_2s1f_budget():
    lone = [R("a", True), R("b", False), R("c", False), R("d", False)]
    # Target b: 2s1f fills one solution slot and one failure slot (one successful peer).
    ref = ctx("2s1f", "b", group=lone)
    assert len(ref.peer_ids) == 2 and not ref.effective
    for cond in ("random_peer", "score_ordered"):
        for seed in range(10):
            c = ctx(cond, "b", group=lone, seed=seed)
            assert len(c.peer_ids) == 2 and c.effective == ref.effective, (cond, seed)
    # Target a (the lone success): no solution slot, one failure slot.
    for seed in range(10):
        c = ctx("random_peer", "a", group=lone, seed=seed)
        assert [b.role for b in c.blocks] == ["failure"] and not c.effective
    # A group of one success and nothing else: no slot, the original prompt.
    c = ctx("random_peer", "a", group=[R("a", True)])
    assert c.blocks == () and c.reprompt == "Q?"


def test_random_peer_is_seeded_per_target_and_ignores_labels():
    a = ctx("random_peer", "f0", seed=3)
    b = ctx("random_peer", "f0", seed=3)
    assert a == b and len(a.peer_ids) == 3 and a.effective
    picks = {tuple(ctx("random_peer", "f0", seed=s).peer_ids) for s in range(30)}
    assert len(picks) > 5  # really random across seeds
    # Some draw puts a failure in a solution slot: labels are ignored, slots keep their order.
    assert any(p[0].startswith("f") for p in picks)
    for s in range(30):
        c = ctx("random_peer", "f0", seed=s)
        assert [b.role for b in c.blocks] == ["solution", "another", "failure"]


def test_effective_flags_of_the_controls_follow_2s1f():
    groups = [GROUP, [R("a", True), R("b", False)], [R("a", True), R("b", True), R("c", True)]]
    for g in groups:
        for t in g:
            ref = ctx("2s1f", t.rollout_id, group=g).effective
            for cond in ("random_peer", "score_ordered"):
                assert ctx(cond, t.rollout_id, group=g).effective == ref


def test_random_order_is_deterministic_and_excludes_target():
    p1 = [r.rollout_id for r in order_peers(GROUP, 0, "random", seed=7)]
    p2 = [r.rollout_id for r in order_peers(GROUP, 0, "random", seed=7)]
    assert p1 == p2 and sorted(p1) == ["f2", "f5", "s1", "s3", "s4"]
    orders = {
        tuple(r.rollout_id for r in order_peers(GROUP, 0, "random", seed=s)) for s in range(20)
    }
    assert len(orders) > 1


def test_braces_in_texts_are_kept_literally():
    g = [R("a", True), R("b", False)]
    g[0].response = "def f():\n    return {'x': 1}  # {prompt} {solution}"
    g[1].prompt = "Use {braces} and {solution}"
    c = build_context(g, 1, BUILTIN_CONDITIONS["primary"])
    assert c.reprompt.startswith(
        "Use {braces} and {solution}\nCorrect solution:\n\ndef f():\n    return {'x': 1}  # {prompt} {solution}"
    )


def test_ties_in_reward_do_not_change_label_selection():
    g = [R("a", True, 1.0), R("b", True, 1.0), R("c", False, 1.0)]  # success given, reward tied
    assert ctx("primary+failure", "a", group=g).peer_ids == ["b", "c"]


def test_build_contexts_covers_every_target_and_condition():
    other = [R("x", True, pid="q"), R("y", False, pid="q")]
    rows = list(build_contexts(GROUP + other, resolve_conditions(["base", "2s1f"])))
    assert len(rows) == 2 * (len(GROUP) + len(other))
    assert [t.rollout_id for t, c in rows[:6]] == [r.rollout_id for r in GROUP]


def test_unknown_condition_is_an_input_error():
    with pytest.raises(InputError, match="unknown condition 'nope'"):
        resolve_conditions(["2s1f", "nope"])


def test_chat_message_prompt_replaces_last_user_turn(tiny_tokenizer):
    target = Rollout(
        "p",
        "t",
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Q?"}],
        "r",
        0.0,
        False,
    )
    peer = Rollout("p", "s", target.prompt, "sol", 1.0, True)
    c = build_context([target, peer], 0, BUILTIN_CONDITIONS["primary"])
    text = render_teacher_prompt(target, c, tiny_tokenizer, "chat")
    assert (
        "Be brief." in text
        and "Q?\nCorrect solution:\n\nsol\n\nCorrectly solve the original question." in text
    )
    assert text.endswith("<|im_start|>assistant\n")


def test_flat_placement_puts_blocks_after_the_assistant_marker(tiny_tokenizer):
    target, peer = R("t", False), R("s", True)
    c = build_context([target, peer], 0, BUILTIN_CONDITIONS["primary"])
    flat = render_teacher_prompt(target, c, tiny_tokenizer, "flat")
    assert "<|im_start|>" not in flat
    marker = flat.rindex("assistant\n")
    assert flat[marker:].endswith(
        "\nCorrect solution:\n\nresp-s\n\nCorrectly solve the original question."
    )
    assert "Q?" in flat[:marker]
    chat = render_teacher_prompt(target, c, tiny_tokenizer, "chat")
    assert chat.index("Correct solution") < chat.index("<|im_start|>assistant")


def test_user_conditions_and_templates_from_yaml(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "conditions:\n"
        "  - name: 3s\n    successes: 3\n"
        "  - name: sdpo\n    successes: 1\n    feedback: true\n    require: any\n"
        "templates:\n"
        '  - name: terse\n    reprompt: "{prompt}{solution}{another}{failure}{feedback}\\nGo."\n'
        '    solution: "\\nS: {text}"\n    another: "\\nS2: {text}"\n    failure: "\\nF: {text}"\n'
        '    feedback: "\\nFB: {text}"\n'
    )
    conds, temps = load_spec_file(spec)
    c = build_context(GROUP, 0, conds["3s"], temps["terse"])
    assert c.reprompt == "Q?\nS: resp-s1\nS2: resp-s3\nS2: resp-s4\nGo." and c.effective
    # require=any: f2 has no feedback but a successful sibling -> effective.
    assert build_context(GROUP, 2, conds["sdpo"]).effective


@pytest.mark.parametrize(
    "text, match",
    [
        ("conditions:\n  - name: x\n    successes: -1\n", "non-negative"),
        ("conditions:\n  - name: x\n    colour: red\n", "unknown keys"),
        ("conditions:\n  - successes: 1\n", "non-empty 'name'"),
        (
            "templates:\n  - name: t\n    reprompt: '{prompt}'\n    solution: a\n    another: b\n    failure: c\n    feedback: d\n",
            "lacks",
        ),
        ("conditions: [\n", "cannot parse"),
    ],
)
def test_bad_spec_files_name_the_problem(tmp_path, text, match):
    spec = tmp_path / "bad.yaml"
    spec.write_text(text)
    with pytest.raises(InputError, match=match) as e:
        load_spec_file(spec)
    assert str(spec) in str(e.value)


def test_condition_rejects_unknown_select():
    with pytest.raises(InputError):
        Condition("x", select="magic")  # type: ignore[arg-type]


def test_paper_analysis_templates_are_the_reference_strings():
    t = PAPER_ANALYSIS_TEMPLATES
    assert t.reprompt == "{prompt}{solution}{another}{failure}{feedback}\n\nCorrectly solve the original question.\n"
    assert t.solution == "\nCorrect solution:\n\n{text}\n\n"
    assert t.another == "\nAnother successful solution:\n\n{text}\n\n"
    assert t.failure == "\nA known failed solution (avoid repeating this mistake):\n\n{text}\n\n"
    assert t.feedback == "\nThe following is feedback from your unsuccessful earlier attempt:\n\n{text}\n\n"
    assert set(BUILTIN_TEMPLATES) == {"paper", "paper-analysis"}
    assert resolve_templates("paper-analysis") is t
    assert resolve_templates("paper") is PAPER_TEMPLATES


def test_flat_paper_analysis_equals_the_reference_assembly(tiny_tokenizer):
    # The reference script appends its blocks to the decoded student transcript; written out
    # here by hand so the test does not share code with the builder.
    transcript = "system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face\nuser\nQ?\nassistant\n"
    expected = (
        transcript
        + "\nCorrect solution:\n\nresp-s1\n\n"
        + "\nAnother successful solution:\n\nresp-s3\n\n"
        + "\nA known failed solution (avoid repeating this mistake):\n\nresp-f2\n\n"
        + "\n\nCorrectly solve the original question.\n"
    )
    c = ctx("2s1f", "f0")
    got = render_teacher_prompt(GROUP[0], c, tiny_tokenizer, "flat", PAPER_ANALYSIS_TEMPLATES)
    assert got == expected
    all_capped = render_teacher_prompt(
        GROUP[0], ctx("all-capped", "f0"), tiny_tokenizer, "flat", PAPER_ANALYSIS_TEMPLATES
    )
    assert all_capped == (
        transcript
        + "\nCorrect solution:\n\nresp-s1\n\n\nAnother successful solution:\n\nresp-s3\n\n"
        + "\n\nCorrectly solve the original question.\n"
    )
    # Question only: the transcript itself.
    base = render_teacher_prompt(GROUP[0], ctx("base", "f0"), tiny_tokenizer, "flat", PAPER_ANALYSIS_TEMPLATES)
    assert base == transcript


def test_unknown_template_set_is_an_input_error():
    with pytest.raises(InputError, match="unknown template set 'nope'") as e:
        resolve_templates("nope", {})
    assert e.value.field == "templates"


@pytest.mark.parametrize(
    "text, field",
    [
        ("conditions:\n  - name: 2s1f\n    successes: 3\n", "conditions[0].name"),
        ("conditions:\n  - name: mine\n  - name: base\n", "conditions[1].name"),
        (
            "templates:\n  - name: paper\n    reprompt: '{prompt}{solution}{another}{failure}{feedback}'\n"
            "    solution: '{text}'\n    another: '{text}'\n    failure: '{text}'\n    feedback: '{text}'\n",
            "templates[0].name",
        ),
        (
            "templates:\n  - name: paper-analysis\n    reprompt: '{prompt}{solution}{another}{failure}{feedback}'\n"
            "    solution: '{text}'\n    another: '{text}'\n    failure: '{text}'\n    feedback: '{text}'\n",
            "templates[0].name",
        ),
        ("conditions:\n  - name: x\n  - name: x\n", "conditions[1].name"),
    ],
)
def test_spec_may_not_redefine_a_builtin_or_repeat_a_name(tmp_path, text, field):
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    with pytest.raises(InputError) as e:
        load_spec_file(spec)
    assert e.value.path == str(spec) and e.value.field == field


def test_condition_label_defaults_to_its_name_and_spec_sets_label_and_control(tmp_path):
    assert Condition("mine", successes=1).label == "mine"
    spec = tmp_path / "spec.yaml"
    spec.write_text("conditions:\n  - name: 3s\n    successes: 3\n    label: Three wins\n    control: true\n")
    conds, _ = load_spec_file(spec)
    assert conds["3s"].label == "Three wins" and conds["3s"].control
    assert BUILTIN_CONDITIONS["random_peer"].control and not BUILTIN_CONDITIONS["all-capped"].control
    with pytest.raises(InputError, match="control must be true or false"):
        Condition("x", control="yes")  # type: ignore[arg-type]


def test_conditions_and_templates_hash_as_plain_data():
    # A resume key hashes dataclasses.asdict of these: they must stay frozen and JSON-ready.
    import dataclasses
    import json

    for obj in [*BUILTIN_CONDITIONS.values(), *BUILTIN_TEMPLATES.values()]:
        json.dumps(dataclasses.asdict(obj), sort_keys=True)
        with pytest.raises(dataclasses.FrozenInstanceError):
            obj.name = "x"  # type: ignore[misc]


def test_label_blind_select_rejects_skip_and_cap():
    with pytest.raises(InputError, match="need select=label"):
        Condition("x", successes=2, failures=1, select="random", skip_successes=1)
