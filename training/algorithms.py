"""The algorithm registry: what GRPO, OPD, SDPO and MOPD each mean, in one place.

An algorithm is a (teacher, teacher context, loss) triple plus the config defaults it brings.
The trainer and the config read ``AlgorithmSpec`` fields (``uses_teacher``, ``loss``) instead
of comparing ``algo`` strings, so a new algorithm is one entry here (docs/extending.md).

* ``loss="policy_gradient"``: GRPO's clipped group-normalised policy gradient; no teacher.
* ``loss="distill"``: the distillation divergence against a teacher that reads each rollout under
  ``condition`` (built by ``mopd_eval.contexts``, the same builder the signal study uses).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from mopd_eval.contexts import Condition
from mopd_eval.errors import InputError

LossKind = Literal["policy_gradient", "distill"]

# Conditions the algorithms use that are not among the study's built-ins.
TRAINING_CONDITIONS: dict[str, Condition] = {
    c.name: c
    for c in [
        # MOPD, success-only variant: two successful siblings, no failure.
        Condition("mopd-s", successes=2, label="MOPD (2 successes)"),
        # SDPO: the first successful sibling and/or the target's own verifier feedback.
        Condition("sdpo", successes=1, feedback=True, require="any", label="SDPO"),
    ]
}


@dataclass(frozen=True)
class AlgorithmSpec:
    """One algorithm: its default teacher kind and context condition, its loss, its defaults."""

    name: str
    teacher: Literal["none", "ema", "frozen", "external"]
    condition: str
    loss: LossKind
    help: str
    defaults: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def uses_teacher(self) -> bool:
        return self.loss == "distill"

    def config_defaults(self) -> dict[str, Any]:
        """Config keys this algorithm sets before the YAML file and the overrides."""
        return {"teacher": self.teacher, "condition": self.condition, **self.defaults}


ALGORITHMS: dict[str, AlgorithmSpec] = {a.name: a for a in [
    AlgorithmSpec("grpo", "none", "base", "policy_gradient",
                  "group-relative policy gradient on the verifier's reward; no teacher"),
    AlgorithmSpec("opd", "external", "base", "distill",
                  "on-policy distillation from a frozen external teacher reading the original prompt"),
    AlgorithmSpec("sdpo", "ema", "sdpo", "distill",
                  "self-distillation: the EMA teacher sees the first successful sibling and/or the feedback"),
    AlgorithmSpec("mopd", "ema", "2s1f", "distill",
                  "multi-rollout OPD: the teacher sees two successful siblings and one failure"),
    AlgorithmSpec("mopd-s", "ema", "mopd-s", "distill",
                  "multi-rollout OPD, success-only: the teacher sees two successful siblings, no failure"),
]}


def get_algorithm(name: str) -> AlgorithmSpec:
    if name not in ALGORITHMS:
        raise InputError(f"unknown algorithm {name!r}; choose from {', '.join(ALGORITHMS)}", field="algo")
    return ALGORITHMS[name]
