"""From score rows to the study's numbers: sample sets, difficulty buckets, the per-prompt table,
percentile-bootstrap CIs over prompts and paired comparisons between conditions.

Definitions (``docs/metrics.md`` has the full account):

* **Group**: all rows of one prompt under one condition (the rollout group as that condition
  scored it).
* **Sample sets** pick the rows a prompt's metrics use, per condition: ``all`` every row;
  ``effective`` the effective rows; ``both_present_effective`` (default) the effective rows of
  prompts whose group holds at least one success and one failure. A metric is computed on a
  prompt only when at least two rows remain.
* **Difficulty bucket** of a prompt, from its whole rollout group across every condition in the
  file: ``n`` = distinct ``rollout_id``s, ``k`` = distinct successful ones; easy when
  ``k >= n / 2``, medium when ``k >= 1``, hard when ``k = 0``. For the paper's n = 8 this is
  easy >= 4, medium 1-3, hard 0.
* **Aggregate** of a (condition, metric): mean over prompts of the defined values, and
  ``n_prompts``, the number of values averaged.
* **Bootstrap**: percentile bootstrap over prompts. A draw resamples the condition's prompts (those
  with at least two rows) with replacement and takes the mean of the defined values; the CI is the
  2.5 and 97.5 percentiles of the draws that define a mean. Every bootstrap starts a fresh
  ``numpy.random.default_rng(seed)``, so one condition's CI does not depend on which other
  conditions are in the file, and the same seed gives the same numbers.
* **Paired comparison** ``A-vs-B`` on the prompts both conditions have: per-prompt difference
  ``d = A - B`` where both values are defined; ``diff`` its mean, CI by the same bootstrap
  (prompts resampled jointly, so the pairing is kept), and a two-sided bootstrap p-value
  ``min(1, 2 min((#{d* <= 0} + 1) / (B + 1), (#{d* >= 0} + 1) / (B + 1)))`` over the ``B`` draw
  means ``d*`` (the +1 keeps a finite bootstrap from claiming p = 0). For ``brier_sigmoid`` a
  negative ``diff`` means A is better.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from analysis.metric_specs import LOWER_IS_BETTER, METRICS, batch_metrics
from analysis.metrics import COMPAT_MODES, MIN_ROWS
from analysis.scores import BASE_CONDITION, ScoreRow, as_scores_frame, order_conditions
from mopd_eval.contexts import Condition
from mopd_eval.errors import InputError

SAMPLE_SETS: tuple[str, ...] = ("all", "effective", "both_present_effective")
BUCKETS: tuple[str, ...] = ("easy", "medium", "hard")
DEFAULT_BOOTSTRAP = 2000
CI_LEVEL = 0.95
BUCKET_RULE = (
    "n = distinct rollouts of the prompt, k = distinct successful rollouts, over every condition "
    "in the file; easy: k >= n/2, medium: k >= 1, hard: k = 0 (n = 8: easy >= 4)"
)
P_VALUE_METHOD = (
    "two-sided percentile-bootstrap p-value of the mean paired difference: "
    "min(1, 2 min((#{d*<=0}+1)/(B+1), (#{d*>=0}+1)/(B+1)))"
)
# Cells of the (draws x prompts) count matrix built at once; bounds the bootstrap's memory.
_CHUNK_CELLS = 4_000_000


# --------------------------------------------------------------------------- buckets, sample sets


def difficulty_bucket(n_success: int, group_size: int) -> str:
    """Bucket of a prompt with ``n_success`` successful rollouts out of ``group_size``.

    ``easy`` when ``n_success >= group_size / 2``, ``medium`` when ``n_success >= 1``, else
    ``hard``. Raises ``ValueError`` unless ``0 <= n_success <= group_size`` and
    ``group_size >= 1``.
    """
    if group_size < 1 or not 0 <= n_success <= group_size:
        raise ValueError(
            f"need 0 <= n_success <= group_size, group_size >= 1; got {n_success}, {group_size}"
        )
    if n_success == 0:
        return "hard"
    return "easy" if 2 * n_success >= group_size else "medium"


def _buckets(n_success: np.ndarray, group_size: np.ndarray) -> np.ndarray:
    return np.where(n_success == 0, "hard", np.where(2 * n_success >= group_size, "easy", "medium"))


def select_sample_set(frame: pd.DataFrame, sample_set: str) -> pd.DataFrame:
    """The rows of ``frame`` (checked score rows) that ``sample_set`` keeps; see the module doc."""
    if sample_set not in SAMPLE_SETS:
        raise InputError(
            f"unknown sample set {sample_set!r}; choose one of {', '.join(SAMPLE_SETS)}",
            field="sample_set",
        )
    if sample_set == "all":
        return frame
    if sample_set == "effective":
        return frame[frame.effective.to_numpy()]
    groups = frame.groupby(["condition", "problem_id"], sort=False).success
    has_success = groups.transform("any").to_numpy(dtype=bool)
    has_failure = ~groups.transform("all").to_numpy(dtype=bool)
    return frame[frame.effective.to_numpy() & has_success & has_failure]


# --------------------------------------------------------------------------- per-prompt table


def _check_compat(compat: str) -> None:
    if compat not in COMPAT_MODES:
        raise InputError(
            f"unknown compat mode {compat!r}; choose one of {', '.join(COMPAT_MODES)}",
            field="compat",
        )


def _group_difficulty(
    frame: pd.DataFrame, pid_code: np.ndarray, n_prompts: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per prompt code: distinct rollouts and distinct successful ones, over every condition."""
    rollouts = pd.DataFrame(
        {"p": pid_code, "rid": frame.rollout_id.to_numpy(), "ok": frame.success.to_numpy()}
    ).drop_duplicates(["p", "rid"])
    group_size = np.bincount(rollouts.p.to_numpy(), minlength=n_prompts)
    group_succ = np.bincount(
        rollouts.p.to_numpy(), weights=rollouts.ok.to_numpy(), minlength=n_prompts
    ).astype(int)
    return group_size, group_succ


def _metric_columns(
    s: np.ndarray, r: np.ndarray, y: np.ndarray, starts: np.ndarray, sizes: np.ndarray, compat: str
) -> dict[str, np.ndarray]:
    """The metrics of each run of rows ``[start, start + size)``, one batch per run length."""
    values = {m: np.full(len(starts), np.nan) for m in METRICS}
    for n in np.unique(sizes):
        if n < MIN_ROWS:
            continue
        which = np.flatnonzero(sizes == n)
        idx = starts[which, None] + np.arange(n)
        for m, v in batch_metrics(s[idx], r[idx], y[idx], compat=compat).items():
            values[m][which] = v
    return values


def per_prompt_table(
    frame: pd.DataFrame, *, sample_set: str = "both_present_effective", compat: str = "default"
) -> pd.DataFrame:
    """One row per (condition, prompt) left by ``sample_set``, with the metrics.

    Columns: ``condition, problem_id, bucket, group_size, group_successes, n_rows, n_successes``
    and one per metric (NaN where undefined, always NaN with fewer than two rows). ``group_*``
    describe the prompt's whole rollout group (the bucket's inputs); ``n_*`` the rows used.
    Rows come in condition order (paper order first), then prompts in file order.
    """
    _check_compat(compat)
    pid_code, pid_values = pd.factorize(frame.problem_id, sort=False)
    group_size, group_succ = _group_difficulty(frame, pid_code, len(pid_values))

    kept = select_sample_set(frame.assign(_p=pid_code), sample_set)
    conditions = [c.name for c in order_conditions(frame.condition)]
    c_code = kept.condition.map({c: i for i, c in enumerate(conditions)}).to_numpy(dtype=np.int64)
    p_code = kept._p.to_numpy()
    order = np.lexsort((p_code, c_code))  # stable: file order within a group
    c_code, p_code = c_code[order], p_code[order]
    s = kept.teacher_score.to_numpy(dtype=float)[order]
    r = kept.reward.to_numpy(dtype=float)[order]
    y = kept.success.to_numpy(dtype=bool)[order]

    new = (
        np.r_[True, (c_code[1:] != c_code[:-1]) | (p_code[1:] != p_code[:-1])] if len(order) else []
    )
    starts = np.flatnonzero(new).astype(int)
    sizes = np.diff(np.r_[starts, len(order)]).astype(int)
    gp = p_code[starts]
    return pd.DataFrame(
        {
            "condition": pd.Series(
                np.asarray(conditions, dtype=object)[c_code[starts]], dtype=object
            ),
            "problem_id": pd.Series(np.asarray(pid_values, dtype=object)[gp], dtype=object),
            "bucket": _buckets(group_succ[gp], group_size[gp]),
            "group_size": group_size[gp],
            "group_successes": group_succ[gp],
            "n_rows": sizes,
            "n_successes": np.add.reduceat(y.astype(int), starts)
            if len(starts)
            else np.zeros(0, dtype=int),
            **_metric_columns(s, r, y, starts, sizes, compat),
        }
    )


# --------------------------------------------------------------------------- bootstrap


def bootstrap_indices(n: int, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """The bootstrap draws over ``n`` prompts: blocks of rows of prompt indices, ``n_boot`` rows
    in all, each row ``n`` indices drawn uniformly with replacement.

    Drawn from ``numpy.random.default_rng(seed)`` in blocks of ``max(1, 4_000_000 // n)`` rows
    (``rng.integers(0, n, size=(rows, n))``), which bounds memory at any ``n``; the block size is
    part of what a seed means, so it is fixed here and shared by every bootstrap of the module.
    """
    rng = np.random.default_rng(seed)
    step = max(1, _CHUNK_CELLS // max(n, 1))
    for lo in range(0, n_boot, step):
        yield rng.integers(0, n, size=(min(step, n_boot - lo), n))


def bootstrap_means(values: np.ndarray, *, n_boot: int, seed: int) -> np.ndarray:
    """Bootstrap draws of the NaN-aware column means of ``values`` (``(n_prompts, k)``).

    Each draw (``bootstrap_indices``) resamples the rows with replacement and takes, per column,
    the mean of the defined values among the resampled rows. Returns ``(n_boot, k)``; NaN where a
    draw holds no defined value. Vectorised: a block of draws becomes a row-count matrix ``C``
    and the means are ``(C @ values0) / (C @ defined)``.
    """
    values = np.asarray(values, dtype=float)
    if values.ndim != 2:
        raise ValueError(f"values must be 2-D (n_prompts, k), got shape {values.shape}")
    n, k = values.shape
    if n_boot < 0:
        raise ValueError(f"n_boot must be >= 0, got {n_boot}")
    out = np.full((n_boot, k), np.nan)
    if n == 0 or n_boot == 0:
        return out
    defined = ~np.isnan(values)
    v0 = np.where(defined, values, 0.0)
    d0 = defined.astype(float)
    lo = 0
    for block in bootstrap_indices(n, n_boot, seed):
        rows = block.shape[0]
        flat = (block + (np.arange(rows) * n)[:, None]).ravel()
        counts = np.bincount(flat, minlength=rows * n).reshape(rows, n).astype(float)
        sums, cnts = counts @ v0, counts @ d0
        with np.errstate(invalid="ignore", divide="ignore"):
            out[lo : lo + rows] = np.where(cnts > 0, sums / np.where(cnts > 0, cnts, 1), np.nan)
        lo += rows
    return out


def bootstrap_means_naive(values: np.ndarray, *, n_boot: int, seed: int) -> np.ndarray:
    """Reference loop version of ``bootstrap_means`` (same draws, same result): one draw and
    one column at a time. For the tests and the benchmark."""
    values = np.asarray(values, dtype=float)
    n, k = values.shape
    out = np.full((n_boot, k), np.nan)
    if n == 0 or n_boot == 0:
        return out
    b = 0
    for block in bootstrap_indices(n, n_boot, seed):
        for draw in block:
            sample = values[draw]
            for j in range(k):
                col = sample[:, j]
                col = col[~np.isnan(col)]
                if col.size:
                    out[b, j] = col.mean()
            b += 1
    return out


def _percentiles(draws: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    k = draws.shape[1]
    lo = np.full(k, np.nan)
    hi = np.full(k, np.nan)
    for j in range(k):
        d = draws[:, j]
        d = d[~np.isnan(d)]
        if d.size:
            lo[j], hi[j] = np.percentile(d, [50 * (1 - level), 50 * (1 + level)])
    return lo, hi


def _num(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def summarize(values: np.ndarray, *, n_boot: int, seed: int, level: float = CI_LEVEL) -> list[dict]:
    """Per column of ``values`` (``(n_prompts, k)``, NaN = undefined): ``{mean, ci_low, ci_high,
    n_prompts}`` with ``None`` for what is undefined (no defined value; CI with ``n_boot = 0``)."""
    values = np.asarray(values, dtype=float)
    draws = bootstrap_means(values, n_boot=n_boot, seed=seed)
    lo, hi = _percentiles(draws, level)
    n_def = (~np.isnan(values)).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(n_def > 0, np.nansum(values, axis=0) / np.maximum(n_def, 1), np.nan)
    return [
        {
            "mean": _num(means[j]),
            "ci_low": _num(lo[j]),
            "ci_high": _num(hi[j]),
            "n_prompts": int(n_def[j]),
        }
        for j in range(values.shape[1])
    ]


def paired_difference(
    a: np.ndarray, b: np.ndarray, *, n_boot: int, seed: int, level: float = CI_LEVEL
) -> list[dict]:
    """Paired comparison of two conditions on the same prompts, per column.

    ``a`` and ``b`` are ``(n_prompts, k)`` with row ``i`` the same prompt in both; NaN =
    undefined. Returns per column ``{diff, ci_low, ci_high, p_value, n_prompts}``: the mean of
    ``a - b`` over prompts where both are defined, its bootstrap CI and p-value (module doc).
    """
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    draws = bootstrap_means(d, n_boot=n_boot, seed=seed)
    lo, hi = _percentiles(draws, level)
    n_def = (~np.isnan(d)).sum(axis=0)
    out = []
    for j in range(d.shape[1]):
        col = draws[:, j]
        col = col[~np.isnan(col)]
        p = None
        if col.size and n_def[j]:
            nb = col.size
            p = min(
                1.0, 2 * min(((col <= 0).sum() + 1) / (nb + 1), ((col >= 0).sum() + 1) / (nb + 1))
            )
        mean = float(np.nanmean(d[:, j])) if n_def[j] else None
        out.append(
            {
                "diff": _num(mean),
                "ci_low": _num(lo[j]),
                "ci_high": _num(hi[j]),
                "p_value": p,
                "n_prompts": int(n_def[j]),
            }
        )
    return out


# --------------------------------------------------------------------------- the whole study


def _matrix(table: pd.DataFrame) -> np.ndarray:
    return table[list(METRICS)].to_numpy(dtype=float)


def parse_pair(text: str, known: Sequence[str]) -> tuple[str, str]:
    """``"A:B"`` -> ``(A, B)``; condition names may contain ``:``, so any split into two known
    names is accepted. Raises ``InputError`` when no split names two known conditions."""
    parts = text.split(":")
    for i in range(1, len(parts)):
        a, b = ":".join(parts[:i]), ":".join(parts[i:])
        if a in known and b in known:
            return a, b
    raise InputError(
        f"pair {text!r} must be A:B with two conditions of the file ({', '.join(known)})",
        field="pairs",
    )


def compute_signal_metrics(
    rows: Iterable[ScoreRow | dict] | pd.DataFrame,
    compat: str = "default",
    sample_set: str = "both_present_effective",
    n_bootstrap: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    pairs: Iterable[tuple[str, str] | str] | None = None,
    conditions: Iterable[str | Condition] | None = None,
    progress: bool | None = None,
) -> dict:
    """The ``metrics.json`` object for score rows (``ScoreRow``s, dicts or a DataFrame).

    ``pairs``: extra comparisons, as ``(A, B)`` tuples or ``"A:B"`` strings, on top of every
    condition against ``base`` (when ``base`` is present). ``conditions``: keep only these, given
    as ``Condition`` objects (their ``label`` and ``control`` show in Table 7 and Figure 4) or as
    names (looked up among the built-in conditions); ``InputError`` for one absent from the rows.
    ``progress``: tqdm bar (``None`` = only on a terminal). The result also holds ``per_prompt``
    (a list of per-prompt records), which ``write_signal_reports`` writes to ``per_prompt.csv``
    instead of ``metrics.json``.
    """
    return metrics_from_frame(
        as_scores_frame(rows),
        compat=compat,
        sample_set=sample_set,
        n_bootstrap=n_bootstrap,
        seed=seed,
        pairs=pairs,
        conditions=conditions,
        progress=progress,
    )


def _check_options(compat: str, sample_set: str, n_bootstrap: int, seed: int) -> None:
    _check_compat(compat)
    if sample_set not in SAMPLE_SETS:
        raise InputError(
            f"unknown sample set {sample_set!r}; choose one of {', '.join(SAMPLE_SETS)}",
            field="sample_set",
        )
    for name, v, field in (("bootstrap draws", n_bootstrap, "bootstrap"), ("seed", seed, "seed")):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise InputError(f"{name} must be an integer >= 0, got {v!r}", field=field)


def _select_conditions(
    frame: pd.DataFrame, conditions: Iterable[str | Condition] | None
) -> list[Condition]:
    """The conditions to report, in paper order; each must have rows in ``frame``."""
    present = {c.name for c in order_conditions(frame.condition)}
    if conditions is None:
        return order_conditions(frame.condition)
    wanted = order_conditions(conditions)
    absent = [c.name for c in wanted if c.name not in present]
    if absent:
        raise InputError(
            f"condition(s) {', '.join(map(repr, absent))} not in the scores "
            f"(present: {', '.join(c.name for c in order_conditions(frame.condition))})",
            field="conditions",
        )
    if not wanted:
        raise InputError("no condition selected", field="conditions")
    return wanted


def _pair_list(
    order: list[str], pairs: Iterable[tuple[str, str] | str] | None
) -> list[tuple[str, str]]:
    """Every condition against ``base`` (when present), then the extra pairs, each once."""
    out = (
        [(c, BASE_CONDITION) for c in order if c != BASE_CONDITION]
        if BASE_CONDITION in order
        else []
    )
    for p in pairs or ():
        a, b = parse_pair(p, order) if isinstance(p, str) else tuple(p)
        for c in (a, b):
            if c not in order:
                raise InputError(
                    f"pair {a}:{b} names {c!r}, not among the conditions ({', '.join(order)})",
                    field="pairs",
                )
        if a == b:
            raise InputError(f"pair {a}:{b} compares a condition with itself", field="pairs")
        if (a, b) not in out:
            out.append((a, b))
    return out


def _prompt_counts(table: pd.DataFrame) -> dict:
    """Prompts a cell averages: ``usable`` (at least two rows) and ``two_class`` (rows of both
    labels among them; a Brier mean over none of those rewards pushing every score one way)."""
    n, k = table.n_rows.to_numpy(), table.n_successes.to_numpy()
    usable = n >= MIN_ROWS
    return {"usable": int(usable.sum()), "two_class": int((usable & (k > 0) & (k < n)).sum())}


@dataclass(frozen=True)
class _Study:
    """The per-prompt table of the reported conditions and what the bootstrap jobs index into."""

    table: pd.DataFrame
    values: np.ndarray
    by_cond: dict[str, pd.Index]
    prompt_codes: pd.Series


def _study(table: pd.DataFrame, order: list[str]) -> _Study:
    table = table[table.condition.isin(order).to_numpy()].reset_index(drop=True)
    usable = table.n_rows.to_numpy() >= MIN_ROWS
    by_cond = {c: table.index[(table.condition == c).to_numpy() & usable] for c in order}
    codes = pd.Series(pd.factorize(table.problem_id, sort=False)[0])
    return _Study(table, _matrix(table), by_cond, codes)


def _summaries(st: _Study, order: list[str], n_boot: int, seed: int, bar) -> tuple[dict, dict]:
    """Per condition, and per (bucket, condition): metric -> {mean, ci_low, ci_high, n_prompts}."""
    conditions, by_bucket = {}, {bk: {} for bk in BUCKETS}
    buckets = st.table.bucket.to_numpy()
    for c in order:
        conditions[c] = dict(
            zip(METRICS, summarize(st.values[st.by_cond[c]], n_boot=n_boot, seed=seed), strict=True)
        )
        bar.update()
    for bk in BUCKETS:
        for c in order:
            rows = st.by_cond[c][buckets[st.by_cond[c]] == bk]
            by_bucket[bk][c] = dict(
                zip(METRICS, summarize(st.values[rows], n_boot=n_boot, seed=seed), strict=True)
            )
            bar.update()
    return conditions, by_bucket


def _paired(st: _Study, pairs: list[tuple[str, str]], n_boot: int, seed: int, bar) -> dict:
    """``"A-vs-B"`` -> metric -> paired difference on the prompts both conditions have."""
    out = {}
    for a, b in pairs:
        ia = pd.Series(st.by_cond[a], index=st.prompt_codes[st.by_cond[a]].to_numpy())
        ib = pd.Series(st.by_cond[b], index=st.prompt_codes[st.by_cond[b]].to_numpy())
        common = ia.index.intersection(ib.index, sort=False)
        stats = paired_difference(
            st.values[ia[common].to_numpy()],
            st.values[ib[common].to_numpy()],
            n_boot=n_boot,
            seed=seed,
        )
        out[f"{a}-vs-{b}"] = dict(zip(METRICS, stats, strict=True))
        bar.update()
    return out


def _per_prompt_records(table: pd.DataFrame) -> list[dict]:
    return [
        {
            k: (_num(v) if k in METRICS else (v.item() if hasattr(v, "item") else v))
            for k, v in rec.items()
        }
        for rec in table.to_dict("records")
    ]


def _counts(st: _Study, order: list[str]) -> tuple[dict, dict]:
    usable = st.table.n_rows.to_numpy() >= MIN_ROWS
    per_cond = {c: _prompt_counts(st.table[(st.table.condition == c).to_numpy()]) for c in order}
    per_bucket = {
        bk: {
            c: _prompt_counts(
                st.table[
                    (st.table.condition == c).to_numpy()
                    & (st.table.bucket == bk).to_numpy()
                    & usable
                ]
            )
            for c in order
        }
        for bk in BUCKETS
    }
    return per_cond, per_bucket


def metrics_from_frame(
    frame: pd.DataFrame,
    *,
    compat: str = "default",
    sample_set: str = "both_present_effective",
    n_bootstrap: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    pairs: Iterable[tuple[str, str] | str] | None = None,
    conditions: Iterable[str | Condition] | None = None,
    progress: bool | None = None,
) -> dict:
    """``compute_signal_metrics`` for a frame already checked by ``load_scores`` /
    ``as_scores_frame``."""
    _check_options(compat, sample_set, n_bootstrap, seed)
    conds = _select_conditions(frame, conditions)
    order = [c.name for c in conds]
    pair_list = _pair_list(order, pairs)
    # The table is built on the whole file so that buckets (a property of the prompt) do not
    # depend on which conditions are reported.
    st = _study(per_prompt_table(frame, sample_set=sample_set, compat=compat), order)
    n_jobs = len(order) * (1 + len(BUCKETS)) + len(pair_list)
    with tqdm(
        total=n_jobs,
        desc="bootstrap",
        unit="set",
        disable=None if progress is None else not progress,
        leave=False,
    ) as bar:
        by_condition, by_bucket = _summaries(st, order, n_bootstrap, seed, bar)
        paired = _paired(st, pair_list, n_bootstrap, seed, bar)
    prompts, prompts_by_bucket = _counts(st, order)
    return {
        "compat": compat,
        "sample_set": sample_set,
        "seed": int(seed),
        "n_bootstrap": int(n_bootstrap),
        "ci_level": CI_LEVEL,
        "ci_method": "percentile bootstrap over prompts (mean of defined values per draw)",
        "p_value_method": P_VALUE_METHOD,
        "bucket_rule": BUCKET_RULE,
        "kendall_variant": "goodman_kruskal_gamma" if compat == "paper" else "tau_b",
        "n_rows": int(frame.condition.isin(order).sum()),
        "metrics": list(METRICS),
        "lower_is_better": sorted(LOWER_IS_BETTER),
        "condition_order": order,
        "labels": {c.name: c.label for c in conds},
        "controls": [c.name for c in conds if c.control],
        "conditions": by_condition,
        "by_bucket": by_bucket,
        "paired": paired,
        "prompts": prompts,
        "prompts_by_bucket": prompts_by_bucket,
        "per_prompt": _per_prompt_records(st.table),
    }


# --------------------------------------------------------------------------- reading the object


def row_prompts(metrics: dict, cond: str, bucket: str | None = None) -> int:
    """Prompts a condition's row (or bucket cell) covers: those with at least two rows."""
    counts = (
        metrics["prompts"][cond] if bucket is None else metrics["prompts_by_bucket"][bucket][cond]
    )
    return counts["usable"]


def one_class_only(metrics: dict, cond: str, bucket: str | None = None) -> bool:
    """True when the prompts of a row (or bucket cell) all hold one class only."""
    counts = (
        metrics["prompts"][cond] if bucket is None else metrics["prompts_by_bucket"][bucket][cond]
    )
    return counts["usable"] > 0 and counts["two_class"] == 0
