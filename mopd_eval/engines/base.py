"""The engine interface: sampling responses and scoring targets under teacher prompts.

Both engines (``hf``, ``vllm``) take prompts as token ids (callers apply the chat template), so
the teacher sees exactly the tokens the study or trainer built.

Reproducible sampling: every sampled row draws its randomness from its own stream, seeded by
``row_seed(seed, prompt_ids, j)``, a hash of the run seed, the prompt's token ids and the sample
index ``j``. The same (prompt, j, seed) therefore gets the same stream whatever else is in the
batch, in whatever order, and across resumed runs that skip finished prompts. (Identical prompts
given twice get identical samples; ask for a larger ``n`` for more.)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

# Attention implementations (transformers' names) that take the arbitrary 4-D masks of
# shared-prefix scoring; flash attention and paged kernels take padding masks only.
MASK_ATTENTION = ("sdpa", "eager")


@dataclass
class Sample:
    """One sampled response.

    ``token_ids`` are the generated ids without the stop token; ``text`` is their decoding with
    special tokens skipped. ``finish_reason`` is ``"stop"`` (a stop token was produced) or
    ``"length"`` (``max_tokens`` reached first).
    """

    text: str
    token_ids: list[int]
    finish_reason: str


@runtime_checkable
class Engine(Protocol):
    tokenizer: object  # a transformers PreTrainedTokenizerBase

    def generate(
        self,
        prompt_ids: list[list[int]],
        n: int,
        temperature: float,
        top_p: float,
        max_tokens: int,
        seed: int,
    ) -> list[list[Sample]]:
        """``n`` samples for each prompt, in prompt order; ``temperature == 0`` is greedy."""
        ...

    def score(
        self,
        teacher_prompt_ids: list[list[int]],
        target_ids: list[list[int]],
        progress: bool = False,
    ) -> list[np.ndarray]:
        """Per-token log-probabilities (float32) of each target after its teacher prompt.

        ``result[i][k] = log p(target_i[k] | teacher_prompt_i + target_i[:k])``, in input order.
        """
        ...


def row_seed(seed: int, prompt_ids: list[int], sample_index: int) -> int:
    """A 63-bit seed for sample ``sample_index`` of a prompt: blake2b of (seed, ids, index)."""
    h = hashlib.blake2b(digest_size=8)
    h.update(np.asarray([seed, sample_index], dtype=np.int64).tobytes())
    h.update(np.asarray(prompt_ids, dtype=np.int64).tobytes())
    return int.from_bytes(h.digest(), "little") >> 1


def stop_token_ids(tokenizer) -> list[int]:
    """Token ids that end a response: the tokenizer's eos and ChatML's ``<|im_end|>`` if known."""
    ids: set[int] = set()
    eos = tokenizer.eos_token_id
    if isinstance(eos, int):
        ids.add(eos)
    elif eos is not None:
        ids.update(int(e) for e in eos)
    # convert_tokens_to_ids maps an unknown token to unk (or None): only a real vocabulary entry counts.
    tid = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if isinstance(tid, int) and tid >= 0 and tid != getattr(tokenizer, "unk_token_id", None):
        ids.add(tid)
    return sorted(ids)


def check_generate_inputs(prompt_ids: list[list[int]], n: int, temperature: float, top_p: float) -> None:
    """Raise ``ValueError`` unless ``n >= 1``, ``temperature >= 0``, ``0 < top_p <= 1`` and every
    prompt is non-empty."""
    if n < 1:
        raise ValueError("n must be at least 1")
    if temperature < 0 or not 0 < top_p <= 1:
        raise ValueError("need temperature >= 0 and 0 < top_p <= 1")
    if any(len(p) == 0 for p in prompt_ids):
        raise ValueError("empty prompt")


def check_score_inputs(teacher_prompt_ids: list[list[int]], target_ids: list[list[int]]) -> None:
    """Raise ``ValueError`` unless the two lists pair up and every prompt is non-empty."""
    if len(teacher_prompt_ids) != len(target_ids):
        raise ValueError(
            f"{len(teacher_prompt_ids)} teacher prompts but {len(target_ids)} targets; they pair up one to one"
        )
    for i, p in enumerate(teacher_prompt_ids):
        if len(p) == 0 and len(target_ids[i]) > 0:
            raise ValueError(
                f"pair {i}: empty teacher prompt (the first target token has no context)"
            )
