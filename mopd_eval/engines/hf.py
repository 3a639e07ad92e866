"""The transformers engine: batched sampling, and scoring that encodes each shared prefix once.

Scoring (``HFEngine.score``)
----------------------------
Shared-prefix scoring (``tree_scoring.tree_logprobs``): every distinct prefix of the inputs is
encoded once, in waves of short rows that each gather their own cached prefix; see that module.
``score_naive`` is the reference one-pair-per-forward computation it is tested against.

Generation (``HFEngine.generate``)
----------------------------------
Prompts are left-padded and prefilled once each, the cache is repeated for the ``n`` samples,
and the decode loop is our own (rather than ``model.generate``) because each sampled row needs
its own random stream (``base.row_seed``) to make samples independent of batch composition:
row ``j`` of a prompt draws one uniform per step from its stream and inverts the top-p
truncated CDF. Rows that stop are dropped from the batch. Results are bit-identical for a given
set of logits; batched float32 kernels can differ in the last bits between batch shapes, which
changes a sample only if a draw lands within that distance of a CDF boundary.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import torch

from mopd_eval.engines.base import (
    MASK_ATTENTION,
    Sample,
    check_generate_inputs,
    check_score_inputs,
    row_seed,
    stop_token_ids,
)
from mopd_eval.engines.tree_scoring import (
    ScoreStats,
    head_is_linear,
    naive_logprobs,
    tree_logprobs,
)

__all__ = ["HFEngine", "ScoreStats", "load_hf_model", "torch_dtype"]


class HFEngine:
    """Engine on a transformers causal LM (CPU or GPU).

    ``model`` is an alias, a local directory or a hub id ``org/name[@revision]`` (resolved with
    ``models.resolve_model`` and loaded with ``from_pretrained``), or an already loaded
    ``PreTrainedModel`` (then ``tokenizer`` is required and ``device``, ``dtype``,
    ``attn_implementation`` and ``model_kwargs`` are not used). Loading: ``device`` (``cpu``,
    ``cuda``, ``cuda:N``), ``dtype`` (a name or a ``torch.dtype``; default float32),
    ``attn_implementation`` (default sdpa; one that cannot take the scoring's tree masks, such as
    flash attention, falls back to sdpa with a warning), ``model_kwargs`` (passed to
    ``from_pretrained`` unchanged). ``max_model_len`` refuses longer prompt + response.

    Scoring (see ``tree_scoring``): ``pack_tokens`` bounds the padded positions of one forward,
    ``row_tokens`` the positions of a subtree encoded as one tree-attention part (its attention
    span beyond its cached prefix), ``kv_budget_mb`` the keys/values one call may keep.
    ``gen_batch_rows`` bounds the sampled rows decoded together. Assumes full causal attention
    (Llama, Qwen2, ... families; not sliding windows).
    """

    name = "hf"

    def __init__(
        self,
        model,
        tokenizer=None,
        *,
        device: str = "cpu",
        dtype: str | torch.dtype | None = None,
        attn_implementation: str | None = None,
        max_model_len: int | None = None,
        model_kwargs: dict | None = None,
        pack_tokens: int = 1024,
        row_tokens: int = 256,
        kv_budget_mb: float = 2048,
        gen_batch_rows: int = 32,
    ) -> None:
        if min(pack_tokens, row_tokens, gen_batch_rows) < 1:
            raise ValueError("pack_tokens, row_tokens and gen_batch_rows must be positive")
        if isinstance(model, (str, os.PathLike)):
            model, loaded_tok = load_hf_model(
                model, device=device, dtype=dtype, attn_implementation=attn_implementation,
                model_kwargs=model_kwargs,
            )
            tokenizer = tokenizer or loaded_tok
        elif tokenizer is None:
            raise ValueError("a loaded model needs its tokenizer")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.device = next(model.parameters()).device
        self.attn_implementation = getattr(model.config, "_attn_implementation", None)
        self.max_model_len = max_model_len
        self.pack_tokens = int(pack_tokens)
        self.row_tokens = int(row_tokens)
        self.kv_budget_mb = float(kv_budget_mb)
        self._linear_head: bool | None = None  # checked on the first score call
        self.gen_batch_rows = int(gen_batch_rows)
        self.stop_ids = stop_token_ids(tokenizer)
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else self.stop_ids[0] if self.stop_ids else 0)
        self.last_stats = ScoreStats()

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    def _check_length(self, lengths) -> None:
        if self.max_model_len is not None:
            longest = max(lengths, default=0)
            if longest > self.max_model_len:
                raise ValueError(f"an input of {longest} tokens exceeds max_model_len={self.max_model_len}")

    # ------------------------------------------------------------------ scoring

    @torch.inference_mode()
    def score(
        self,
        teacher_prompt_ids: list[list[int]],
        target_ids: list[list[int]],
        progress: bool = False,
    ) -> list[np.ndarray]:
        """Per-token log-probs (float32) of each target after its teacher prompt, in input order.

        Equal to ``score_naive`` up to float32 rounding (the tests hold it to 1e-4). An empty
        target gives an empty array; an empty prompt with a non-empty target is a ``ValueError``.
        The call's counters are in ``last_stats``.
        """
        check_score_inputs(teacher_prompt_ids, target_ids)
        self._check_length(len(p) + len(t) for p, t in zip(teacher_prompt_ids, target_ids, strict=True))
        if self._linear_head is None:
            self._linear_head = head_is_linear(self.model)
        out, self.last_stats = tree_logprobs(
            self.model,
            teacher_prompt_ids,
            target_ids,
            pad_id=self.pad_id,
            linear_head=self._linear_head,
            pack_tokens=self.pack_tokens,
            row_tokens=self.row_tokens,
            kv_budget_mb=self.kv_budget_mb,
            progress=progress,
        )
        return out

    @torch.inference_mode()
    def score_naive(
        self,
        teacher_prompt_ids: list[list[int]],
        target_ids: list[list[int]],
        progress: bool = False,
    ) -> list[np.ndarray]:
        """The reference computation: one forward of ``prompt + target`` per pair, full logits."""
        check_score_inputs(teacher_prompt_ids, target_ids)
        return naive_logprobs(self.model, teacher_prompt_ids, target_ids, progress)

    # ------------------------------------------------------------------ generation

    @torch.inference_mode()
    def generate(
        self,
        prompt_ids: list[list[int]],
        n: int,
        temperature: float,
        top_p: float,
        max_tokens: int,
        seed: int,
    ) -> list[list[Sample]]:
        """``n`` samples per prompt (see the module docstring for reproducibility)."""
        check_generate_inputs(prompt_ids, n, temperature, top_p)
        self._check_length(len(p) + max(0, max_tokens) for p in prompt_ids)
        results: list[list[Sample]] = [[] for _ in prompt_ids]
        if max_tokens < 1:
            return [[Sample("", [], "length") for _ in range(n)] for _ in prompt_ids]
        per_batch = max(1, self.gen_batch_rows // n)
        # Batch prompts of similar length together: less padding, and results do not depend on it.
        by_len = sorted(range(len(prompt_ids)), key=lambda i: len(prompt_ids[i]))
        for s in range(0, len(by_len), per_batch):
            idx = by_len[s : s + per_batch]
            batch = self._generate_batch(
                [list(prompt_ids[i]) for i in idx], n, temperature, top_p, max_tokens, seed
            )
            for i, samples in zip(idx, batch, strict=True):
                results[i] = samples
        return results

    def _generate_batch(
        self,
        prompts: list[list[int]],
        n: int,
        temperature: float,
        top_p: float,
        max_tokens: int,
        seed: int,
    ) -> list[list[Sample]]:
        """``n`` samples of each prompt: one prefill of the prompts, then decoding all rows."""
        logits, cache, mask, next_pos = self._prefill(prompts, n)
        gens = [torch.Generator().manual_seed(row_seed(seed, prompts[r // n], r % n))
                for r in range(len(prompts) * n)]
        tokens, finish = self._decode(logits, cache, mask, next_pos, gens, temperature, top_p, max_tokens)
        return [[Sample(self.tokenizer.decode(tokens[r], skip_special_tokens=True), tokens[r], finish[r])
                 for r in range(p * n, (p + 1) * n)] for p in range(len(prompts))]

    def _prefill(self, prompts: list[list[int]], n: int):
        """Left-padded forward of the prompts; cache and last logits repeated ``n`` times per prompt."""
        from transformers import DynamicCache

        dev = self.device
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for r, p in enumerate(prompts):
            ids[r, width - len(p) :] = torch.tensor(p)
            mask[r, width - len(p) :] = 1
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache(config=self.model.config)
        logits = self.model(
            input_ids=ids.to(dev), attention_mask=mask.to(dev), position_ids=pos.to(dev),
            past_key_values=cache, use_cache=True, logits_to_keep=1,
        ).logits[:, -1]
        cache.batch_repeat_interleave(n)
        return (logits.repeat_interleave(n, dim=0), cache, mask.repeat_interleave(n, dim=0).to(dev),
                (pos[:, -1] + 1).repeat_interleave(n, dim=0).to(dev))

    def _decode(self, logits, cache, mask, next_pos, gens, temperature, top_p, max_tokens):
        """Sample until every row stopped or reached ``max_tokens``; finished rows leave the batch.

        Everything vocabulary-sized stays on the model's device: per step only the rows' uniform
        draws go to it and the chosen token ids come back."""
        dev = self.device
        rows = len(gens)
        tokens: list[list[int]] = [[] for _ in range(rows)]
        finish: list[str] = ["length"] * rows
        active = list(range(rows))
        stops = set(self.stop_ids)
        for _ in range(max_tokens):
            chosen = _sample_rows(logits, [gens[r] for r in active], temperature, top_p)
            keep = []
            for b, t in enumerate(chosen.tolist()):
                r = active[b]
                if t in stops:
                    finish[r] = "stop"
                    continue
                tokens[r].append(t)
                if len(tokens[r]) < max_tokens:
                    keep.append(b)
            if not keep:
                break
            if len(keep) < len(active):
                sel = torch.tensor(keep, device=dev)
                cache.batch_select_indices(sel)
                mask, next_pos, chosen = mask[sel], next_pos[sel], chosen[sel]
                active = [active[b] for b in keep]
            mask = torch.cat([mask, mask.new_ones((len(active), 1))], dim=1)
            logits = self.model(
                input_ids=chosen[:, None], attention_mask=mask, position_ids=next_pos[:, None],
                past_key_values=cache, use_cache=True,
            ).logits[:, -1]
            next_pos = next_pos + 1
        return tokens, finish


def _sample_rows(
    logits: torch.Tensor, gens: list[torch.Generator], temperature: float, top_p: float
) -> torch.Tensor:
    """One token per row: greedy at temperature 0, else top-p sampling by inverse CDF.

    Row ``b`` uses one uniform draw from ``gens[b]`` only (a CPU generator, so a seed gives the
    same draws on every device), so its choice does not depend on the other rows. The softmax,
    sort and search run in float32 on ``logits``' device; returns a long tensor there.
    """
    if temperature == 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    sorted_p, order = probs.sort(dim=-1, descending=True, stable=True)
    # Keep the smallest head of the sorted distribution whose mass reaches top_p.
    sorted_p = sorted_p * ((sorted_p.cumsum(dim=-1) - sorted_p) < top_p)
    cdf = sorted_p.cumsum(dim=-1)
    u = torch.stack([torch.rand((), generator=g, dtype=torch.float64) for g in gens]).float()
    u = u.to(logits.device, non_blocking=True)
    pick = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True).clamp(
        max=cdf.shape[1] - 1
    )
    return order.gather(-1, pick)[:, 0]


def torch_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    """A dtype name (``float32``, ``bfloat16``, ``float16``; ``auto`` and None: float32, the
    suite's CPU precision) or a ``torch.dtype`` as a ``torch.dtype``."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        return torch.float32
    value = getattr(torch, str(dtype), None)
    if not isinstance(value, torch.dtype) or not value.is_floating_point:
        raise ValueError(f"unknown floating-point dtype {dtype!r}")
    return value


def scoring_attention(name: str | None) -> str:
    """The attention implementation to load: ``name`` when it takes the tree masks of
    shared-prefix scoring (sdpa, eager), sdpa (the default) otherwise, with a warning."""
    if name is None or name in MASK_ATTENTION:
        return name or "sdpa"
    warnings.warn(
        f"attention implementation {name!r} cannot take the tree-attention masks of shared-prefix "
        "scoring; the hf engine uses sdpa instead",
        stacklevel=3,
    )
    return "sdpa"


def load_hf_model(
    model: str | os.PathLike[str],
    *,
    device: str = "cpu",
    dtype: str | torch.dtype | None = None,
    attn_implementation: str | None = None,
    model_kwargs: dict | None = None,
):
    """``(model, tokenizer)`` for an alias, directory or hub id, on ``device``, in eval mode.

    ``from_pretrained`` gets ``dtype``, the attention implementation (``scoring_attention``) and
    ``model_kwargs`` unchanged; a GPU model is placed by ``device_map`` so its weights never sit
    in host memory whole. ``RuntimeError`` if transformers loaded another attention
    implementation than asked for.
    """
    from transformers import AutoModelForCausalLM

    from mopd_eval.models import load_tokenizer, resolve_model

    path = resolve_model(model)
    attn = scoring_attention(attn_implementation)
    place = {"device_map": device} if str(device).startswith("cuda") else {}
    net = AutoModelForCausalLM.from_pretrained(
        path, dtype=torch_dtype(dtype), attn_implementation=attn, **place, **(model_kwargs or {})
    )
    if not place:
        net.to(device)
    got = getattr(net.config, "_attn_implementation", attn)
    if got != attn:
        raise RuntimeError(f"asked transformers for {attn} attention, the model loaded {got}")
    return net.eval(), load_tokenizer(path)
