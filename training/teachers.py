"""Teachers: an EMA of the student, a frozen copy of it, or an external model.

All three are plain causal LMs used without gradients. The EMA and frozen teachers start as a
copy of the student's initial weights (made before sharding, then sharded the same way); the
external one is loaded from its own directory and must share the student's tokenizer, since the
teacher scores the student's own token ids.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from mopd_eval.errors import InputError


class Teacher:
    """A no-grad model plus its update rule (``kind``: ema, frozen or external)."""

    def __init__(self, model: torch.nn.Module, kind: str, ema_rate: float = 0.05) -> None:
        if kind not in ("ema", "frozen", "external"):
            raise ValueError(f"unknown teacher kind {kind!r}")
        self.model = model
        self.kind = kind
        self.ema_rate = float(ema_rate)
        model.eval()
        model.requires_grad_(False)

    @torch.no_grad()
    def update(self, student: torch.nn.Module) -> None:
        """After an optimizer step: ``theta_T <- (1 - rate) theta_T + rate theta_S`` (EMA only)."""
        if self.kind != "ema":
            return
        ema_update_(self.model, student, self.ema_rate)


@torch.no_grad()
def ema_update_(teacher: torch.nn.Module, student: torch.nn.Module, rate: float) -> None:
    """In place ``t <- t + rate (s - t)`` for every parameter pair, in module order.

    Both modules must have the same structure (and, under FSDP, the same sharding: the shards
    are updated locally, no communication needed). Buffers are copied from the student.
    """
    t_params = list(teacher.parameters())
    s_params = list(student.parameters())
    if len(t_params) != len(s_params):
        raise ValueError("teacher and student have different parameter lists")
    for t, s in zip(t_params, s_params, strict=True):
        t.lerp_(s.detach().to(t.dtype), rate)
    for tb, sb in zip(teacher.buffers(), student.buffers(), strict=True):
        tb.copy_(sb)


def copy_teacher(student: torch.nn.Module, kind: str, ema_rate: float = 0.05) -> Teacher:
    """An EMA or frozen teacher initialised from ``student`` (call before sharding the student)."""
    return Teacher(copy.deepcopy(student), kind, ema_rate)


def check_same_tokenizer(student_tok: Any, teacher_tok: Any, teacher_name: str) -> None:
    """Raise ``InputError`` unless both tokenizers map every token to the same id.

    The teacher scores the student's sampled token ids, so a different vocabulary (or a shifted
    one) would silently score other text.
    """
    a, b = student_tok.get_vocab(), teacher_tok.get_vocab()
    if a == b:
        return
    only_s = sorted(set(a) - set(b))[:3]
    only_t = sorted(set(b) - set(a))[:3]
    moved = [t for t in a if t in b and a[t] != b[t]][:3]
    detail = []
    if len(a) != len(b):
        detail.append(f"sizes {len(a)} vs {len(b)}")
    if only_s:
        detail.append(f"tokens only the student has: {only_s}")
    if only_t:
        detail.append(f"tokens only the teacher has: {only_t}")
    if moved:
        detail.append(f"tokens with other ids: {moved}")
    raise InputError(
        f"the external teacher {teacher_name!r} does not share the student's tokenizer "
        f"({'; '.join(detail)}); it must score the student's token ids",
        field="teacher_model_name_or_path",
    )


def load_external_teacher(name: str, student_tok: Any, *, device: str = "cpu") -> Teacher:
    """Load ``name`` (alias or HF directory) as a frozen external teacher, checking its tokenizer."""
    from mopd_eval.models import load_tokenizer

    check_same_tokenizer(student_tok, load_tokenizer(name), name)
    from mopd_eval.models import load_model

    model, _ = load_model(name, device=device)
    return Teacher(model, "external")
