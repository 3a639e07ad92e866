"""From score rows to the study's numbers: sample sets, difficulty buckets, the per-prompt table,
percentile-bootstrap CIs over prompts and paired comparisons between conditions.

Definitions (DESIGN.md, "Teacher score and metrics"):

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

from analysis.metrics import COMPAT_MODES, LOWER_IS_BETTER, METRICS, MIN_ROWS, batch_metrics
from analysis.scores import (
    BASE_CONDITION,
    ScoreRow,
    as_scores_frame,
    condition_label,
    order_conditions,
)
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


def per_prompt_table(
    frame: pd.DataFrame, *, sample_set: str = "both_present_effective", compat: str = "default"
) -> pd.DataFrame:
    """One row per (condition, prompt) left by ``sample_set``, with the six metrics.

    Columns: ``condition, problem_id, bucket, group_size, group_successes, n_rows, n_successes``
    and one per metric (NaN where undefined, always NaN with fewer than two rows). ``group_*``
    describe the prompt's whole rollout group (the bucket's inputs); ``n_*`` the rows used.
    Rows come in condition order (paper order first), then prompts in file order.
    """
    if compat not in COMPAT_MODES:
        raise InputError(
            f"unknown compat mode {compat!r}; choose one of {', '.join(COMPAT_MODES)}",
            field="compat",
        )
    pid_code, pid_values = pd.factorize(frame.problem_id, sort=False)

    # Difficulty from the whole group: distinct rollouts, and distinct successful ones.
    rollouts = pd.DataFrame(
        {"p": pid_code, "rid": frame.rollout_id.to_numpy(), "ok": frame.success.to_numpy()}
    )
    rollouts = rollouts.drop_duplicates(["p", "rid"])
    group_size = np.bincount(rollouts.p.to_numpy(), minlength=len(pid_values))
    group_succ = np.bincount(
        rollouts.p.to_numpy(), weights=rollouts.ok.to_numpy(), minlength=len(pid_values)
    ).astype(int)

    kept = select_sample_set(frame.assign(_p=pid_code), sample_set)
    conditions = order_conditions(frame.condition)
    cond_rank = {c: i for i, c in enumerate(conditions)}
    c_code = kept.condition.map(cond_rank).to_numpy()
    p_code = kept._p.to_numpy()
    order = np.lexsort((p_code, c_code))  # stable: file order within a group
    c_code, p_code = c_code[order], p_code[order]
    s = kept.teacher_score.to_numpy(dtype=float)[order]
    r = kept.reward.to_numpy(dtype=float)[order]
    y = kept.success.to_numpy(dtype=bool)[order]

    if len(order):
        new = np.r_[True, (c_code[1:] != c_code[:-1]) | (p_code[1:] != p_code[:-1])]
        starts = np.flatnonzero(new)
    else:
        starts = np.zeros(0, dtype=int)
    sizes = np.diff(np.r_[starts, len(order)])
    values = {m: np.full(len(starts), np.nan) for m in METRICS}
    for n in np.unique(sizes):
        if n < MIN_ROWS:
            continue
        which = np.flatnonzero(sizes == n)
        idx = starts[which, None] + np.arange(n)
        for m, v in batch_metrics(s[idx], r[idx], y[idx], compat=compat).items():
            values[m][which] = v

    gp = p_code[starts]
    table = pd.DataFrame(
        {
            "condition": pd.Series(
                np.asarray(conditions, dtype=object)[c_code[starts]] if len(starts) else [],
                dtype=object,
            ),
            "problem_id": pd.Series(np.asarray(pid_values, dtype=object)[gp], dtype=object),
            "bucket": _buckets(group_succ[gp], group_size[gp]),
            "group_size": group_size[gp],
            "group_successes": group_succ[gp],
            "n_rows": sizes,
            "n_successes": np.add.reduceat(y.astype(int), starts)
            if len(starts)
            else np.zeros(0, dtype=int),
            **values,
        }
    )
    return table


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


@dataclass(frozen=True)
class _Job:
    kind: str  # "condition", "bucket" or "paired"
    key: tuple


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
    conditions: Iterable[str] | None = None,
    progress: bool | None = None,
) -> dict:
    """The ``metrics.json`` object for score rows (``ScoreRow``s, dicts or a DataFrame).

    ``pairs``: extra comparisons, as ``(A, B)`` tuples or ``"A:B"`` strings, on top of every
    condition against ``base`` (when ``base`` is present). ``conditions``: keep only these
    (``InputError`` for a name absent from the rows). ``progress``: tqdm bar (``None`` = only on
    a terminal). The result also holds ``per_prompt`` (a list of per-prompt records), which
    ``write_signal_reports`` writes to ``per_prompt.csv`` instead of ``metrics.json``.
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


def metrics_from_frame(
    frame: pd.DataFrame,
    *,
    compat: str = "default",
    sample_set: str = "both_present_effective",
    n_bootstrap: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    pairs: Iterable[tuple[str, str] | str] | None = None,
    conditions: Iterable[str] | None = None,
    progress: bool | None = None,
) -> dict:
    """``compute_signal_metrics`` for a frame already checked by ``load_scores`` /
    ``as_scores_frame``."""
    if compat not in COMPAT_MODES:
        raise InputError(
            f"unknown compat mode {compat!r}; choose one of {', '.join(COMPAT_MODES)}",
            field="compat",
        )
    if sample_set not in SAMPLE_SETS:
        raise InputError(
            f"unknown sample set {sample_set!r}; choose one of {', '.join(SAMPLE_SETS)}",
            field="sample_set",
        )
    if (
        isinstance(n_bootstrap, bool)
        or not isinstance(n_bootstrap, (int, np.integer))
        or n_bootstrap < 0
    ):
        raise InputError(
            f"bootstrap draws must be an integer >= 0, got {n_bootstrap!r}", field="bootstrap"
        )
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed must be an integer >= 0, got {seed!r}", field="seed")

    present = order_conditions(frame.condition)
    if conditions is not None:
        wanted = list(dict.fromkeys(conditions))
        absent = [c for c in wanted if c not in present]
        if absent:
            raise InputError(
                f"condition(s) {', '.join(map(repr, absent))} not in the scores (present: {', '.join(present)})",
                field="conditions",
            )
        if not wanted:
            raise InputError("no condition selected", field="conditions")
        # Buckets still come from the whole file: difficulty is a property of the prompt.
        keep_mask = frame.condition.isin(wanted).to_numpy()
    else:
        wanted = present
        keep_mask = np.ones(len(frame), dtype=bool)
    order = order_conditions(wanted)

    table = per_prompt_table(frame, sample_set=sample_set, compat=compat)
    table = table[table.condition.isin(order).to_numpy()].reset_index(drop=True)
    pid_code = pd.factorize(table.problem_id, sort=False)[0]
    table_codes = pd.Series(pid_code)

    pair_list: list[tuple[str, str]] = []
    if BASE_CONDITION in order:
        pair_list += [(c, BASE_CONDITION) for c in order if c != BASE_CONDITION]
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
        if (a, b) not in pair_list:
            pair_list.append((a, b))

    usable = table.n_rows.to_numpy() >= MIN_ROWS
    by_cond = {c: table.index[(table.condition == c).to_numpy() & usable] for c in order}
    jobs = [_Job("condition", (c,)) for c in order]
    jobs += [_Job("bucket", (bk, c)) for bk in BUCKETS for c in order]
    jobs += [_Job("paired", ab) for ab in pair_list]

    result_conditions: dict = {}
    result_buckets: dict = {bk: {} for bk in BUCKETS}
    result_paired: dict = {}
    values = _matrix(table)
    buckets = table.bucket.to_numpy()
    for job in tqdm(
        jobs,
        desc="bootstrap",
        unit="set",
        disable=None if progress is None else not progress,
        leave=False,
    ):
        if job.kind == "condition":
            (c,) = job.key
            stats = summarize(values[by_cond[c]], n_boot=n_bootstrap, seed=seed)
            result_conditions[c] = dict(zip(METRICS, stats, strict=True))
        elif job.kind == "bucket":
            bk, c = job.key
            rows = by_cond[c][buckets[by_cond[c]] == bk]
            stats = summarize(values[rows], n_boot=n_bootstrap, seed=seed)
            result_buckets[bk][c] = dict(zip(METRICS, stats, strict=True))
        else:
            a, b = job.key
            ia = pd.Series(by_cond[a], index=table_codes[by_cond[a]].to_numpy())
            ib = pd.Series(by_cond[b], index=table_codes[by_cond[b]].to_numpy())
            common = ia.index.intersection(ib.index, sort=False)
            stats = paired_difference(
                values[ia[common].to_numpy()],
                values[ib[common].to_numpy()],
                n_boot=n_bootstrap,
                seed=seed,
            )
            result_paired[f"{a}-vs-{b}"] = dict(zip(METRICS, stats, strict=True))

    per_prompt = [
        {
            k: (_num(v) if k in METRICS else (v.item() if hasattr(v, "item") else v))
            for k, v in rec.items()
        }
        for rec in table.to_dict("records")
    ]
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
        "n_rows": int(keep_mask.sum()),
        "metrics": list(METRICS),
        "lower_is_better": sorted(LOWER_IS_BETTER),
        "condition_order": order,
        "labels": {c: condition_label(c) for c in order},
        "conditions": result_conditions,
        "by_bucket": result_buckets,
        "paired": result_paired,
        "per_prompt": per_prompt,
    }
