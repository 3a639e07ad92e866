"""The metric registry: one ``MetricSpec`` per teacher-signal metric.

Everything that shows or aggregates metrics reads this list: the per-prompt table and the
bootstrap (``analysis/aggregate.py``), Table 7 (``analysis/tables.py``) and Figure 4
(``analysis/figures.py``). Adding a metric is one entry in ``METRIC_SPECS`` plus its scalar and
batch functions in ``analysis/metrics.py`` (``docs/metrics.md`` shows the steps).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from analysis import metrics as m
from analysis.metrics import COMPAT_MODES, MIN_ROWS, PromptBatch

LabelKind = Literal["markdown", "latex", "plot"]


@dataclass(frozen=True)
class Labels:
    """How a metric is named in a Markdown table, a LaTeX table and a figure panel."""

    markdown: str
    latex: str
    plot: str


@dataclass(frozen=True)
class MetricSpec:
    """One metric: names, reading aids and its two implementations.

    ``against``: the second input of the scalar function, the rewards or the success labels.
    ``scalar``: the readable reference, ``scalar(s, r_or_y, compat=...) -> float``.
    ``batch``: the fast path, ``batch(PromptBatch, compat) -> (G,) array``.
    ``chance``: the value of an uninformative teacher (a dotted line in Figure 4), or ``None``.
    ``paper_variant``: what ``--compat paper`` computes instead; ``paper_labels`` rename the
    metric there when it is a different statistic. ``needs_two_classes``: the metric has a value
    on a prompt whose rows are all successes or all failures, but it says little about ranking
    there (Brier is best when every score is pushed one way); a table cell or bar whose prompts
    are all one-class is greyed and never marked best.
    """

    name: str
    labels: Labels
    direction: Literal["higher", "lower"]
    chance: float | None
    against: Literal["reward", "success"]
    scalar: Callable[..., float]
    batch: Callable[[PromptBatch, str], np.ndarray]
    paper_variant: str
    paper_labels: Labels | None = None
    needs_two_classes: bool = False

    @property
    def lower_is_better(self) -> bool:
        return self.direction == "lower"

    def label(self, kind: LabelKind, compat: str = "default") -> str:
        labels = self.paper_labels if compat == "paper" and self.paper_labels else self.labels
        return getattr(labels, kind)


METRIC_SPECS: tuple[MetricSpec, ...] = (
    MetricSpec(
        "spearman",
        Labels("Spearman ρ", r"Spearman $\rho$", "Spearman ρ"),
        "higher",
        0.0,
        "reward",
        m.spearman,
        m.spearman_batch,
        paper_variant="0 when undefined",
    ),
    MetricSpec(
        "kendall",
        Labels("Kendall τ_b", r"Kendall $\tau_b$", "Kendall τ$_b$"),
        "higher",
        0.0,
        "reward",
        m.kendall,
        m.kendall_batch,
        paper_variant="Goodman-Kruskal gamma (pairs tied in s or r dropped), 0 when undefined",
        paper_labels=Labels("Kendall γ", r"Kendall $\gamma$", "Kendall γ (paper compat)"),
    ),
    MetricSpec(
        "pairwise_accuracy",
        Labels("Pair. acc.", r"Pair.\ acc.", "Pairwise accuracy"),
        "higher",
        0.5,
        "reward",
        m.pairwise_accuracy,
        m.pairwise_accuracy_batch,
        paper_variant="a score tie counts 0; 0 with no pair of different rewards",
    ),
    MetricSpec(
        "success_auc",
        Labels("AUC", "AUC", "Success AUC"),
        "higher",
        0.5,
        "success",
        m.success_auc,
        m.success_auc_batch,
        paper_variant="0 with one class",
    ),
    MetricSpec(
        "point_biserial",
        Labels("Pt-biserial", "Pt-biserial", "Point-biserial r"),
        "higher",
        0.0,
        "success",
        m.point_biserial,
        m.point_biserial_batch,
        paper_variant="0 when undefined",
    ),
    MetricSpec(
        "brier_sigmoid",
        Labels("Brier ↓", r"Brier $\downarrow$", "Brier (sigmoid)"),
        "lower",
        None,
        "success",
        m.brier_sigmoid,
        m.brier_sigmoid_batch,
        paper_variant="same",
        needs_two_classes=True,
    ),
)
SPECS: dict[str, MetricSpec] = {spec.name: spec for spec in METRIC_SPECS}
METRICS: tuple[str, ...] = tuple(SPECS)
LOWER_IS_BETTER: frozenset[str] = frozenset(s.name for s in METRIC_SPECS if s.lower_is_better)


def _check_compat(compat: str) -> None:
    if compat not in COMPAT_MODES:
        raise ValueError(f"compat must be one of {COMPAT_MODES}, got {compat!r}")


def prompt_metrics(s, r, y, *, compat: str = "default") -> dict[str, float]:
    """Every registered metric for one prompt's rows, by the scalar reference functions; every
    value is NaN with fewer than two rows."""
    _check_compat(compat)
    s, r, y = (np.asarray(s, dtype=float), np.asarray(r, dtype=float), np.asarray(y, dtype=bool))
    if s.ndim != 1 or s.shape != r.shape or s.shape != y.shape:
        raise ValueError(
            f"s, r, y must be 1-D and have the same length, got {s.shape}, {r.shape}, {y.shape}"
        )
    if s.size < MIN_ROWS:
        return dict.fromkeys(METRICS, float("nan"))
    return {
        spec.name: spec.scalar(s, r if spec.against == "reward" else y, compat=compat)
        for spec in METRIC_SPECS
    }


def batch_metrics(s, r, y, *, compat: str = "default") -> dict[str, np.ndarray]:
    """Every registered metric for ``G`` prompts of ``n`` rows each, given as ``(G, n)`` arrays.

    Row ``g`` of the result equals ``prompt_metrics(s[g], r[g], y[g], compat=compat)`` (up to
    floating-point rounding); with ``n < 2`` every value is NaN. Returns ``{metric: (G,) array}``.
    """
    _check_compat(compat)
    batch = PromptBatch(s, r, y)
    g, n = batch.s.shape
    if n < MIN_ROWS or g == 0:
        return {name: np.full(g, np.nan) for name in METRICS}
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            spec.name: np.asarray(spec.batch(batch, compat), dtype=float) for spec in METRIC_SPECS
        }
