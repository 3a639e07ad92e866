"""Token-level teacher signal: where a peer context changes the teacher's verdict.

Reads the store of ``mopd-eval signal --save-token-logprobs`` (``analysis/token_logprobs.py``)
beside the run's ``teacher_scores.jsonl``. Definitions (``docs/tokens.md`` has the full account):

* **Advantage** of condition c at response token t:
  ``A_t(c) = log p(y_t | context_c, y_<t) - log p(y_t | question, y_<t)``; the second term is
  the ``base`` row (or, with a student store, the student's own ``base`` row: the
  teacher-minus-student signal). ``A_t(base) = 0``.
* **Divergence point** of a pair (a failed target, a successful rollout of the same problem; and
  the other way round for successes): the first token index where their token ids differ. A pair
  whose texts are equal (only the token boundaries differ) or where the target is a prefix of
  the other has no divergence token in the target and is left out.
* **Window**: the divergence token and the ``window - 1`` next ones; "elsewhere" is every other
  token of the target. Per pair the mean A_t in each, then per target the mean over its pairs,
  then per prompt the mean over its targets of each class.
* **Answer span**: math, the tokens of the last ``\\boxed{}`` content, else of the last number;
  code (``humaneval``, ``lcb``), the program ``extract_code`` returns; other tasks have none.
* **Separation**: per prompt, the ROC AUC of success against failure (``analysis.metrics.success_auc``)
  for five target scores: the mean log-prob under c (Table 7's), the log-prob sum over the
  answer span, the sum of A_t over the answer span, over the divergent suffix (from the
  divergence token to the end; mean over the pairs), and the mean A_t of the whole response.

Rows are those of the sample set Table 7 used (``analysis.aggregate.select_sample_set``). Every
per-prompt value is summarised by ``analysis.aggregate.summarize`` (mean and percentile
bootstrap CI over prompts) and compared with ``base`` by ``analysis.aggregate.paired_difference``
on the prompts both define, as Table 7 does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.aggregate import paired_difference, select_sample_set, summarize
from analysis.metrics import success_auc
from analysis.scores import BASE_CONDITION, order_conditions
from analysis.token_logprobs import TokenLogprobs
from mopd_eval.code_extract import extract_code
from mopd_eval.errors import InputError
from mopd_eval.records import Rollout, group_rollouts
from mopd_eval.verifiers.math_answer import last_boxed_span, last_number_span

DEFAULT_WINDOW = 3
PROFILE = tuple(range(-4, 13))  # positions relative to the divergence token in the figure
CODE_TASKS = frozenset({"humaneval", "lcb"})
NO_SPAN_TASKS = frozenset({"toolalpaca", "sciknoweval"})  # answers that are not a number or a program

DIVERGENCE = ("div_at_fail", "div_else_fail", "div_at_succ", "div_else_succ", "div_gap", "div_fail_at_minus_else",
              "div_succ_at_minus_else")
ANSWER = ("ans_in_fail", "ans_out_fail", "ans_in_succ", "ans_out_succ", "ans_gap", "ans_fail_in_minus_out",
          "ans_succ_in_minus_out")
SEPARATION = ("auc_seq_mean", "auc_answer_logprob", "auc_adv_answer", "auc_adv_suffix", "auc_adv_mean")
METRICS = DIVERGENCE + ANSWER + SEPARATION
LABELS = {
    "div_at_fail": "failures: A_t at divergence", "div_else_fail": "failures: A_t elsewhere",
    "div_at_succ": "successes: A_t at divergence", "div_else_succ": "successes: A_t elsewhere",
    "div_gap": "at divergence: successes - failures", "div_fail_at_minus_else": "failures: at - elsewhere",
    "div_succ_at_minus_else": "successes: at - elsewhere", "ans_succ_in_minus_out": "successes: in - outside",
    "ans_in_fail": "failures: A_t in answer", "ans_out_fail": "failures: A_t outside",
    "ans_in_succ": "successes: A_t in answer", "ans_out_succ": "successes: A_t outside",
    "ans_gap": "in answer: successes - failures", "ans_fail_in_minus_out": "failures: in - outside",
    "auc_seq_mean": "AUC, mean log-prob (Table 7)", "auc_answer_logprob": "AUC, answer-span log-prob",
    "auc_adv_answer": "AUC, sum A_t over answer", "auc_adv_suffix": "AUC, sum A_t over divergent suffix",
    "auc_adv_mean": "AUC, mean A_t",
}


def advantage(store: TokenLogprobs, condition: str, problem_id: str, rollout_id: str,
              reference: TokenLogprobs | None = None) -> np.ndarray | None:
    """A_t(c) per response token (float64); ``None`` when either row is missing.

    The second term is the store's own ``base`` row, or ``reference``'s (a student's store).
    """
    lp = store.logprobs(condition, problem_id, rollout_id)
    ref = (reference or store).logprobs(BASE_CONDITION, problem_id, rollout_id)
    if lp is None or ref is None:
        return None
    if len(lp) != len(ref):
        raise ValueError(f"{problem_id}/{rollout_id}: {len(lp)} tokens under {condition}, {len(ref)} under the reference")
    return lp.astype(np.float64) - ref.astype(np.float64)


# --------------------------------------------------------------------------- divergence, spans


@dataclass(frozen=True)
class Divergence:
    """Where two responses part: ``index`` is the first token index whose ids differ (the length
    of the shorter one when it is a prefix of the other; ``None`` when the ids are identical).
    ``same_text``: the decoded texts are equal, so the ids only split the same text differently."""

    index: int | None
    same_text: bool


def find_divergence(a: Sequence[int], b: Sequence[int], a_text: str | None = None,
                    b_text: str | None = None) -> Divergence:
    """The divergence of token-id sequences ``a`` and ``b`` (texts, when given, set ``same_text``)."""
    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    n = min(len(a), len(b))
    differ = np.flatnonzero(a[:n] != b[:n])
    if differ.size:
        index: int | None = int(differ[0])
    else:
        index = None if len(a) == len(b) else n
    same = index is None or (a_text is not None and a_text == b_text)
    return Divergence(index, same)


def answer_char_span(text: str, task: str) -> tuple[int, int] | None:
    """Character span of the final answer: the last ``\\boxed{}`` content, else the last number
    (math); the extracted program (``CODE_TASKS``); ``None`` for other tasks or no answer."""
    if task in NO_SPAN_TASKS:
        return None
    if task in CODE_TASKS:
        code = extract_code(text).strip()
        start = text.rfind(code) if code else -1
        return None if start < 0 else (start, start + len(code))
    boxed = last_boxed_span(text)
    if boxed is not None and boxed[1] > boxed[0]:
        return boxed
    return last_number_span(text)


def token_span(pieces: Sequence[str], span: tuple[int, int] | None) -> tuple[int, int] | None:
    """Token indices ``[i, j)`` whose text overlaps the character span (``pieces`` joined)."""
    if span is None:
        return None
    ends = np.cumsum([len(p) for p in pieces])
    starts = ends - np.array([len(p) for p in pieces], dtype=int)
    hit = np.flatnonzero((starts < span[1]) & (ends > span[0]))
    return (int(hit[0]), int(hit[-1]) + 1) if hit.size else None


@dataclass
class Target:
    """A scored response with what the token analyses need."""

    problem_id: str
    rollout_id: str
    success: bool
    ids: np.ndarray
    pieces: list[str]
    span: tuple[int, int] | None
    # (opposite-class rollout id, divergence index inside this target), one per usable pair
    pairs: list[tuple[str, int]] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(self.pieces)


def build_targets(store: TokenLogprobs, rollouts: Sequence[Rollout]) -> dict[str, list[Target]]:
    """Per problem (file order) its targets with answer spans and divergence pairs."""
    out: dict[str, list[Target]] = {}
    for pid, group in group_rollouts(rollouts).items():
        targets = []
        for r in group:
            ids, pieces = store.tokens.get((r.problem_id, r.rollout_id), (np.zeros(0, np.int32), []))
            text = "".join(pieces)
            targets.append(Target(r.problem_id, r.rollout_id, r.success, ids, pieces,
                                  token_span(pieces, answer_char_span(text, r.task))))
        for t in targets:
            for o in targets:
                if o.success == t.success:
                    continue
                d = find_divergence(t.ids, o.ids, t.text, o.text)
                if not d.same_text and d.index is not None and d.index < len(t.ids):
                    t.pairs.append((o.rollout_id, d.index))
        out[pid] = targets
    return out



# --------------------------------------------------------------------------- per target, per prompt


def _mean(x: np.ndarray) -> float:
    return float(x.mean()) if x.size else float("nan")


def _nanmean(values: Sequence[float]) -> float:
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    return float(v.mean()) if v.size else float("nan")


def _column_means(rows: Sequence[np.ndarray]) -> np.ndarray:
    """NaN-aware mean of equal-length rows over ``PROFILE`` positions (NaN where none is defined)."""
    if not rows:
        return np.full(len(PROFILE), np.nan)
    stack = np.vstack(rows)
    counts = (~np.isnan(stack)).sum(axis=0)
    return np.where(counts > 0, np.nansum(stack, axis=0) / np.maximum(counts, 1), np.nan)


def target_values(a: np.ndarray, lp: np.ndarray, t: Target, window: int) -> dict[str, float | np.ndarray]:
    """One target's numbers under one condition from its A_t ``a`` and log-probs ``lp``."""
    n = len(a)
    at, rest, suffix, prof = [], [], [], []
    for _, d in t.pairs:
        inside = np.zeros(n, dtype=bool)
        inside[d : d + window] = True
        at.append(_mean(a[inside]))
        rest.append(_mean(a[~inside]))
        suffix.append(float(a[d:].sum()))
        pos = d + np.asarray(PROFILE)
        prof.append(np.where((pos >= 0) & (pos < n), a[np.clip(pos, 0, max(n - 1, 0))], np.nan) if n else
                    np.full(len(PROFILE), np.nan))
    out: dict[str, float | np.ndarray] = {
        "at": _nanmean(at), "else": _nanmean(rest), "suffix": _nanmean(suffix), "mean": _mean(a),
        "profile": _column_means(prof),
        "in": float("nan"), "out": float("nan"), "adv_answer": float("nan"), "lp_answer": float("nan"),
    }
    if t.span is not None:
        i, j = t.span
        outside = np.r_[a[:i], a[j:]]
        out.update({"in": _mean(a[i:j]), "out": _mean(outside), "adv_answer": float(a[i:j].sum()),
                    "lp_answer": float(lp[i:j].sum())})
    return out


def _auc(values: Sequence[float], y: Sequence[bool]) -> float:
    v, y = np.asarray(values, dtype=float), np.asarray(y, dtype=bool)
    keep = ~np.isnan(v)
    return success_auc(v[keep], y[keep]) if keep.sum() >= 2 else float("nan")


def prompt_values(vals: Sequence[tuple[bool, float, dict]]) -> dict[str, float]:
    """The metrics of one (condition, prompt) from its targets' ``(success, mean log-prob, values)``."""
    def cls(key: str, success: bool) -> float:
        return _nanmean([v[key] for ok, _, v in vals if ok == success])

    y = [ok for ok, _, _ in vals]
    m = {
        "div_at_fail": cls("at", False), "div_else_fail": cls("else", False),
        "div_at_succ": cls("at", True), "div_else_succ": cls("else", True),
        "ans_in_fail": cls("in", False), "ans_out_fail": cls("out", False),
        "ans_in_succ": cls("in", True), "ans_out_succ": cls("out", True),
        "auc_seq_mean": _auc([s for _, s, _ in vals], y),
        "auc_answer_logprob": _auc([v["lp_answer"] for _, _, v in vals], y),
        "auc_adv_answer": _auc([v["adv_answer"] for _, _, v in vals], y),
        "auc_adv_suffix": _auc([v["suffix"] for _, _, v in vals], y),
        "auc_adv_mean": _auc([v["mean"] for _, _, v in vals], y),
    }
    m["div_gap"] = m["div_at_succ"] - m["div_at_fail"]
    m["div_fail_at_minus_else"] = m["div_at_fail"] - m["div_else_fail"]
    m["ans_gap"] = m["ans_in_succ"] - m["ans_in_fail"]
    m["ans_fail_in_minus_out"] = m["ans_in_fail"] - m["ans_out_fail"]
    m["div_succ_at_minus_else"] = m["div_at_succ"] - m["div_else_succ"]
    m["ans_succ_in_minus_out"] = m["ans_in_succ"] - m["ans_out_succ"]
    return m


def _profile(vals: Sequence[tuple[bool, float, dict]], success: bool) -> np.ndarray:
    return _column_means([v["profile"] for ok, _, v in vals if ok == success])


def prompt_table(store: TokenLogprobs, frame: pd.DataFrame, targets: dict[str, list[Target]], *,
                 reference: TokenLogprobs | None = None, window: int = DEFAULT_WINDOW,
                 sample_set: str = "both_present_effective") -> tuple[pd.DataFrame, dict]:
    """One row per (condition, prompt) of ``sample_set`` with ``METRICS``; and per (condition,
    prompt) the A_t profile around the divergence, ``{"fail": array, "succ": array}``."""
    kept = select_sample_set(frame, sample_set)
    recs, profiles = [], {}
    for (cond, pid), rows in kept.groupby(["condition", "problem_id"], sort=False):
        by_id = {t.rollout_id: t for t in targets.get(str(pid), [])}
        vals = []
        for rid, ok, score in rows[["rollout_id", "success", "teacher_score"]].itertuples(index=False):
            t = by_id.get(str(rid))
            a = advantage(store, cond, str(pid), str(rid), reference)
            if t is None or a is None:
                continue
            vals.append((bool(ok), float(score), target_values(a, store.logprobs(cond, str(pid), str(rid)), t, window)))
        recs.append({"condition": cond, "problem_id": str(pid), "n_rows": len(vals),
                     "n_successes": sum(ok for ok, _, _ in vals), **prompt_values(vals)})
        profiles[(cond, str(pid))] = {"fail": _profile(vals, False), "succ": _profile(vals, True)}
    table = pd.DataFrame(recs, columns=["condition", "problem_id", "n_rows", "n_successes", *METRICS])
    return table, profiles


# --------------------------------------------------------------------------- over prompts


def _aligned_with_base(table: pd.DataFrame, cond: str) -> tuple[np.ndarray, np.ndarray]:
    """``(values of cond, values of base)`` on the prompts both have, rows paired by prompt."""
    a = table[table.condition == cond].set_index("problem_id")[list(METRICS)]
    b = table[table.condition == BASE_CONDITION].set_index("problem_id")[list(METRICS)]
    common = a.index.intersection(b.index, sort=False)
    return a.loc[common].to_numpy(dtype=float), b.loc[common].to_numpy(dtype=float)


def summarize_table(table: pd.DataFrame, profiles: dict, order: Sequence[str], *,
                    n_boot: int, seed: int) -> dict:
    """Per condition: each metric's mean and bootstrap CI over prompts, its paired difference
    with ``base``, and the divergence profile (mean and CI per relative position and class)."""
    summary, vs_base, profile = {}, {}, {}
    for c in order:
        sub = table[table.condition == c]
        summary[c] = dict(zip(METRICS, summarize(sub[list(METRICS)].to_numpy(dtype=float), n_boot=n_boot,
                                                 seed=seed), strict=True))
        if c != BASE_CONDITION and (table.condition == BASE_CONDITION).any():
            a, b = _aligned_with_base(table, c)
            vs_base[c] = dict(zip(METRICS, paired_difference(a, b, n_boot=n_boot, seed=seed), strict=True))
        profile[c] = {}
        for cls in ("fail", "succ"):
            m = np.array([profiles[(c, p)][cls] for p in sub.problem_id]).reshape(-1, len(PROFILE))
            profile[c][cls] = summarize(m, n_boot=n_boot, seed=seed)
    return {"summary": summary, "vs_base": vs_base, "profile": profile}


def divergence_counts(targets: dict[str, list[Target]]) -> dict:
    """How many pairs have a divergence token, and where it falls."""
    idx = [d for ts in targets.values() for t in ts if not t.success for _, d in t.pairs]
    return {
        "failed_targets": sum(not t.success for ts in targets.values() for t in ts),
        "failed_with_divergence": sum(bool(t.pairs) for ts in targets.values() for t in ts if not t.success),
        "pairs": len(idx),
        "median_index": float(np.median(idx)) if idx else None,
        "quartiles": [float(q) for q in np.percentile(idx, [25, 75])] if idx else None,
        "targets_with_answer_span": sum(t.span is not None for ts in targets.values() for t in ts),
        "targets": sum(len(ts) for ts in targets.values()),
    }


def token_study(store: TokenLogprobs, frame: pd.DataFrame, rollouts: Sequence[Rollout], *,
                reference: TokenLogprobs | None = None, window: int = DEFAULT_WINDOW,
                sample_set: str = "both_present_effective", n_boot: int = 2000, seed: int = 0) -> dict:
    """The whole analysis: ``{"table": per-prompt DataFrame, "targets", "profiles", and the
    JSON-ready numbers under "result"}``."""
    if window < 1:
        raise InputError(f"must be >= 1, got {window}", field="--window")
    targets = build_targets(store, rollouts)
    frame = frame.assign(problem_id=frame.problem_id.astype(str), rollout_id=frame.rollout_id.astype(str))
    table, profiles = prompt_table(store, frame, targets, reference=reference, window=window, sample_set=sample_set)
    order = [c.name for c in order_conditions(frame.condition) if c.name in set(table.condition)]
    if not order:
        raise InputError(f"no prompt of sample set {sample_set} has scored rows (a success and a failure are "
                         "needed for most measures; try --sample-set all)", field="--sample-set")
    result = {
        "window": window, "sample_set": sample_set, "n_bootstrap": n_boot, "seed": seed,
        "profile_positions": list(PROFILE), "conditions": order,
        "labels": {c.name: c.label for c in order_conditions(order)},
        "reference": "student store" if reference is not None else "base (question-only teacher)",
        "metrics": list(METRICS), "metric_labels": LABELS, "counts": divergence_counts(targets),
        # rows of the sample set left out for want of log-probs (a student store without them)
        "rows_without_logprobs": int(len(select_sample_set(frame, sample_set)) - table.n_rows.sum()),
        **summarize_table(table, profiles, order, n_boot=n_boot, seed=seed),
    }
    return {"table": table, "targets": targets, "profiles": profiles, "result": result}


# --------------------------------------------------------------------------- tables


def _f(x: float | None, *, signed: bool = True) -> str:
    return "—" if x is None else f"{x:+.3f}" if signed else f"{x:.3f}"


def _cell(s: dict, *, signed: bool = True) -> str:
    if s["mean"] is None:
        return "—"
    ci = "" if s["ci_low"] is None else f" [{_f(s['ci_low'], signed=signed)}, {_f(s['ci_high'], signed=signed)}]"
    return _f(s["mean"], signed=signed) + ci


def _diff(d: dict | None) -> str:
    if d is None or d["diff"] is None:
        return "—"
    ci = "" if d["ci_low"] is None else f" [{_f(d['ci_low'])}, {_f(d['ci_high'])}]"
    p = "" if d["p_value"] is None else f", p={d['p_value']:.3f}"
    return f"{_f(d['diff'])}{ci}{p}"


def _rows(result: dict, cols: Sequence[tuple[str, str]], signed: bool) -> list[str]:
    out = ["| Context | prompts | " + " | ".join(h for _, h in cols) + " |",
           "|:---|---:|" + "---:|" * len(cols)]
    for c in result["conditions"]:
        s, d = result["summary"][c], result["vs_base"].get(c, {})
        n = max(s[m]["n_prompts"] for m, _ in cols if not m.startswith("Δ"))
        cells = [_diff(d.get(m[1:])) if m.startswith("Δ") else _cell(s[m], signed=signed) for m, _ in cols]
        out.append(f"| {result['labels'][c]} | {n} | " + " | ".join(cells) + " |")
    return out


def markdown_tables(result: dict) -> str:
    """The three tables of ``tokens.md``: divergence points, answer spans, separation."""
    div = [("div_at_fail", "failures: at divergence"), ("div_else_fail", "failures: elsewhere"),
           ("div_at_succ", "successes: at divergence"), ("div_else_succ", "successes: elsewhere"),
           ("Δdiv_gap", "at divergence, succ − fail (vs base)"),
           ("Δdiv_fail_at_minus_else", "failures, at − elsewhere (vs base)"),
           ("Δdiv_succ_at_minus_else", "successes, at − elsewhere (vs base)")]
    ans = [("ans_in_fail", "failures: in answer"), ("ans_out_fail", "failures: outside"),
           ("ans_in_succ", "successes: in answer"), ("ans_out_succ", "successes: outside"),
           ("Δans_gap", "in answer, succ − fail (vs base)"),
           ("Δans_fail_in_minus_out", "failures, in − outside (vs base)"),
           ("Δans_succ_in_minus_out", "successes, in − outside (vs base)")]
    sep = [("auc_seq_mean", "mean log-prob (Table 7)"), ("Δauc_seq_mean", "Δ vs base"),
           ("auc_answer_logprob", "answer-span log-prob"), ("Δauc_answer_logprob", "Δ vs base"),
           ("auc_adv_answer", "Σ A_t, answer"), ("auc_adv_suffix", "Σ A_t, divergent suffix"),
           ("auc_adv_mean", "mean A_t")]
    w = result["window"]
    return "\n".join([
        f"### Mean A_t at divergence points (the divergence token and the next {w - 1}) and elsewhere",
        "", *_rows(result, div, True), "",
        "### Mean A_t inside and outside the final answer", "", *_rows(result, ans, True), "",
        "### Separation: success-vs-failure AUC per prompt (0.5 = chance; A_t columns are 0.5 under base)",
        "", *_rows(result, sep, False), "",
        "Cells: mean over prompts [95% percentile-bootstrap CI over prompts]; \"vs base\": paired "
        "difference with base on the prompts both define [CI], two-sided bootstrap p. Under base "
        "A_t = 0, so \"vs base\" of an A_t column tests it against 0.",
    ]) + "\n"


def long_table(result: dict) -> pd.DataFrame:
    """``token_metrics.csv``: one row per (condition, metric)."""
    recs = []
    for c in result["conditions"]:
        for m in METRICS:
            s, d = result["summary"][c][m], result["vs_base"].get(c, {}).get(m) or {}
            recs.append({"condition": c, "label": result["labels"][c], "metric": m, "metric_label": LABELS[m],
                         **s, "diff_vs_base": d.get("diff"), "diff_ci_low": d.get("ci_low"),
                         "diff_ci_high": d.get("ci_high"), "p_vs_base": d.get("p_value"),
                         "n_prompts_paired": d.get("n_prompts")})
    return pd.DataFrame(recs)


def profile_table(result: dict) -> pd.DataFrame:
    """``profile.csv``: mean A_t by position relative to the divergence token, per class."""
    recs = []
    for c in result["conditions"]:
        for cls, stats in result["profile"][c].items():
            for pos, s in zip(result["profile_positions"], stats, strict=True):
                recs.append({"condition": c, "class": "success" if cls == "succ" else "failure",
                             "position": pos, **s})
    return pd.DataFrame(recs)
