"""The transformers engine: batched sampling, and scoring that encodes each shared prefix once.

Scoring (``HFEngine.score``)
----------------------------
The pairs (teacher prompt, target) of a signal study overlap heavily: every teacher prompt of a
problem starts with the same chat header and question, many continue with the same first peer
solution, and many pairs have the very same teacher prompt. The log-probability of a target
token depends only on the tokens before it, so the work that must be done is one forward
position per *distinct prefix* of the inputs: the number of nodes of a token trie over all
sequences ``prompt + target[:-1]`` (``ScoreStats.lower_bound``). The plain way
(``score_naive``, one pair per forward, what the reference code does) encodes
``sum(len(prompt) + len(target) - 1)`` positions instead.

``score`` reaches the lower bound exactly: no position is forwarded twice (rows of a pack are
padded to equal length; the padding is not counted as forwarded positions and is small).

1. Sort the input sequences; adjacent longest common prefixes (LCPs) describe the trie as
   contiguous ranges of the sorted order (a range with all LCPs >= d is the subtree below one
   node at depth d).
2. Walk the trie depth first with a single KV cache that holds the path to the current node:
   * if the subtree below the current node holds at most ``pack_tokens`` new positions, it is
     **packed** into one forward: every new position once, position ids = depth, and a 4-D
     attention mask in which each position sees the cached prefix and its own ancestors (tree
     attention). Small sibling subtrees are packed together, so short unrelated requests share
     a forward too; they are placed into rows of about ``row_tokens`` positions, longest first
     (batching by length), so a query attends to the prefix plus its row, not the whole pack;
   * otherwise the common prefix of the subtree is appended to the cache (chunked at
     ``pack_tokens``), its children are processed, and the cache is cropped back.
3. Only positions whose next token is a target token get logits (``logits_to_keep``), and the
   log-softmax is taken as ``logit - logsumexp`` per kept row, never materialising a second
   vocabulary-sized array.

Memory stays bounded: one cache for the current path (depth x layers x kv width), a batch view
of it per pack, and the logits of at most one pack (about ``pack_tokens`` positions).

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
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from mopd_eval.engines.base import Sample, check_score_inputs, row_seed, stop_token_ids


@dataclass
class ScoreStats:
    """Counters of the last ``score`` call (positions are input tokens forwarded)."""

    pairs: int = 0
    target_tokens: int = 0
    naive_positions: int = 0  # what one pair per forward encodes
    lower_bound: int = 0  # distinct prefixes: positions that must be encoded at least once
    forwarded: int = 0  # positions this engine actually forwarded
    forwards: int = 0  # model calls


class HFEngine:
    """Engine on a transformers causal LM (CPU or GPU).

    ``model`` is an alias or a local directory (loaded with ``models.load_model``) or an already
    loaded ``PreTrainedModel`` (then ``tokenizer`` is required). ``pack_tokens`` bounds the new
    positions of one scoring forward and ``row_tokens`` the positions of one row in it (the
    attention span beyond the cached prefix); ``gen_batch_rows`` bounds the sampled rows decoded
    together. Assumes full causal attention (Llama, Qwen2, ... families; not sliding windows).
    """

    name = "hf"

    def __init__(
        self,
        model,
        tokenizer=None,
        *,
        device: str = "cpu",
        dtype=None,
        pack_tokens: int = 1024,
        row_tokens: int = 256,
        gen_batch_rows: int = 32,
    ) -> None:
        if isinstance(model, (str, os.PathLike)):
            from mopd_eval.models import load_model

            model, loaded_tok = load_model(model, device=device, dtype=dtype)
            tokenizer = tokenizer or loaded_tok
        elif tokenizer is None:
            raise ValueError("a loaded model needs its tokenizer")
        if min(pack_tokens, row_tokens, gen_batch_rows) < 1:
            raise ValueError("pack_tokens, row_tokens and gen_batch_rows must be positive")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.device = next(model.parameters()).device
        self.pack_tokens = int(pack_tokens)
        self.row_tokens = int(row_tokens)
        self.gen_batch_rows = int(gen_batch_rows)
        self.stop_ids = stop_token_ids(tokenizer)
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else self.stop_ids[0] if self.stop_ids else 0)
        self.last_stats = ScoreStats()

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
        """
        check_score_inputs(teacher_prompt_ids, target_ids)
        out = [np.zeros(len(t), dtype=np.float32) for t in target_ids]
        live = [i for i, t in enumerate(target_ids) if len(t) > 0]
        stats = ScoreStats(pairs=len(target_ids), target_tokens=sum(len(t) for t in target_ids))
        self.last_stats = stats
        if not live:
            return out

        full = {
            i: np.asarray(list(teacher_prompt_ids[i]) + list(target_ids[i]), dtype=np.int64)
            for i in live
        }
        plen = {i: len(teacher_prompt_ids[i]) for i in live}
        # Sort the inputs (each full sequence minus its last token); tuples compare in C.
        order = sorted(live, key=lambda i: tuple(full[i][:-1].tolist()))
        seqs = [full[i][:-1] for i in order]
        lens = np.array([len(s) for s in seqs], dtype=np.int64)
        lcp = np.zeros(len(seqs), dtype=np.int64)  # lcp[k] = LCP(seqs[k-1], seqs[k]); lcp[0] = 0
        for k in range(1, len(seqs)):
            a, b = seqs[k - 1], seqs[k]
            m = min(len(a), len(b))
            diff = np.flatnonzero(a[:m] != b[:m])
            lcp[k] = diff[0] if diff.size else m
        new = lens - lcp  # positions sequence k adds to the trie after its predecessor
        cum = np.concatenate([[0], np.cumsum(new)])
        stats.naive_positions = int(lens.sum())
        stats.lower_bound = int(new.sum())

        def unique_below(lo: int, hi: int, d: int) -> int:
            # Positions of the subtree [lo, hi) below depth d: all of seqs[lo] past d, then
            # each later sequence past its LCP with its predecessor (>= d inside the range).
            return int(lens[lo] - d + cum[hi] - cum[lo + 1])

        job = _ScoreJob(
            self,
            order,
            seqs,
            lens,
            lcp,
            full,
            plen,
            out,
            stats,
            tqdm(
                total=stats.lower_bound,
                unit="tok",
                desc="scoring",
                disable=not progress,
                smoothing=0.1,
            ),
        )
        # Explicit stack instead of recursion: the trie can be deeper than Python's recursion limit.
        stack: list[tuple] = [("range", 0, len(seqs), 0)]
        while stack:
            task = stack.pop()
            if task[0] == "crop":
                job.crop_to(task[1])
                continue
            if task[0] == "pack":
                job.pack(task[1], task[2])
                continue
            _, lo, hi, d = task
            common = int(lens[lo]) if hi - lo == 1 else int(lcp[lo + 1 : hi].min())
            if unique_below(lo, hi, d) <= self.pack_tokens:
                job.pack([(lo, hi)], d)
                continue
            if common > d:
                job.extend(lo, hi, d, common)
                stack.append(("crop", d))
                stack.append(("range", lo, hi, common))
                continue
            # Children of the node at depth d: maximal runs with LCP > d. Consecutive small
            # children share a pack; a big child becomes its own range.
            starts = [lo] + [k for k in range(lo + 1, hi) if lcp[k] == d]
            bounds = list(zip(starts, starts[1:] + [hi], strict=True))
            todo: list[tuple] = []
            group: list[tuple[int, int]] = []
            size = 0
            for a, b in bounds:
                u = unique_below(a, b, d)
                if u > self.pack_tokens:
                    todo.append(("range", a, b, d))
                    continue
                if size + u > self.pack_tokens and group:
                    todo.append(("pack", group, d))
                    group, size = [], 0
                group.append((a, b))
                size += u
            if group:
                todo.append(("pack", group, d))
            # Run in order; each range crops the cache back to d when done, so packs see depth d.
            stack.extend(reversed(todo))
        job.bar.close()
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
        out = []
        for p, t in tqdm(
            list(zip(teacher_prompt_ids, target_ids, strict=True)),
            desc="scoring (naive)",
            disable=not progress,
        ):
            if len(t) == 0:
                out.append(np.zeros(0, dtype=np.float32))
                continue
            ids = torch.tensor([list(p) + list(t)], device=self.device)
            logits = self.model(input_ids=ids).logits[0, len(p) - 1 : -1].float()
            lp = torch.log_softmax(logits, dim=-1).gather(-1, ids[0, len(p) :, None])[:, 0]
            out.append(lp.cpu().numpy().astype(np.float32))
        return out

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
        if n < 1:
            raise ValueError("n must be at least 1")
        if temperature < 0 or not 0 < top_p <= 1:
            raise ValueError("need temperature >= 0 and 0 < top_p <= 1")
        if any(len(p) == 0 for p in prompt_ids):
            raise ValueError("empty prompt")
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
            input_ids=ids.to(dev),
            attention_mask=mask.to(dev),
            position_ids=pos.to(dev),
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        ).logits[:, -1]
        cache.batch_repeat_interleave(n)
        logits = logits.repeat_interleave(n, dim=0)
        mask = mask.repeat_interleave(n, dim=0).to(dev)
        next_pos = (pos[:, -1] + 1).repeat_interleave(n, dim=0).to(dev)
        rows = len(prompts) * n
        gens = [
            torch.Generator().manual_seed(row_seed(seed, prompts[r // n], r % n))
            for r in range(rows)
        ]
        tokens: list[list[int]] = [[] for _ in range(rows)]
        finish: list[str] = ["length"] * rows
        active = list(range(rows))
        stops = set(self.stop_ids)
        for _ in range(max_tokens):
            chosen = _sample_rows(logits.float(), [gens[r] for r in active], temperature, top_p)
            keep = []
            for b, r in enumerate(active):
                t = int(chosen[b])
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
                mask, next_pos, chosen = mask[sel], next_pos[sel], chosen[sel.cpu()]
                active = [active[b] for b in keep]
            mask = torch.cat([mask, mask.new_ones((len(active), 1))], dim=1)
            logits = self.model(
                input_ids=chosen[:, None].to(dev),
                attention_mask=mask,
                position_ids=next_pos[:, None],
                past_key_values=cache,
                use_cache=True,
            ).logits[:, -1]
            next_pos = next_pos + 1
        out = []
        for p in range(len(prompts)):
            out.append(
                [
                    Sample(
                        self.tokenizer.decode(tokens[r], skip_special_tokens=True),
                        tokens[r],
                        finish[r],
                    )
                    for r in range(p * n, (p + 1) * n)
                ]
            )
        return out


def _sample_rows(
    logits: torch.Tensor, gens: list[torch.Generator], temperature: float, top_p: float
) -> torch.Tensor:
    """One token per row: greedy at temperature 0, else top-p sampling by inverse CDF.

    Row ``b`` uses one uniform draw from ``gens[b]`` only, so its choice does not depend on the
    other rows. Returns a CPU long tensor.
    """
    logits = logits.cpu()
    if temperature == 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits / temperature, dim=-1)
    sorted_p, order = probs.sort(dim=-1, descending=True, stable=True)
    # Keep the smallest head of the sorted distribution whose mass reaches top_p.
    sorted_p = sorted_p * ((sorted_p.cumsum(dim=-1) - sorted_p) < top_p)
    cdf = sorted_p.cumsum(dim=-1)
    u = torch.stack([torch.rand((), generator=g, dtype=torch.float64) for g in gens]).float()
    pick = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True).clamp(
        max=cdf.shape[1] - 1
    )
    return order.gather(-1, pick)[:, 0]


class _ScoreJob:
    """State of one ``score`` call: the cache of the current trie path and the output arrays."""

    def __init__(
        self, engine: HFEngine, order, seqs, lens, lcp, full, plen, out, stats, bar
    ) -> None:
        from transformers import DynamicCache

        self.e = engine
        self.order, self.seqs, self.lens, self.lcp = order, seqs, lens, lcp
        self.full, self.plen, self.out, self.stats, self.bar = full, plen, out, stats, bar
        self.cache = DynamicCache(config=engine.model.config)
        self.depth = 0  # positions held by the cache (the current path)
        self.neg = torch.finfo(engine.model.dtype).min

    def crop_to(self, d: int) -> None:
        if self.depth > d:
            self.cache.crop(-(self.depth - d))
            self.depth = d

    def _window(self, k: int, a: int, b: int) -> tuple[int, int]:
        """Depths within [a, b) of sorted sequence k whose next token is a target token."""
        return max(a, self.plen[self.order[k]] - 1), b

    def _forward(
        self,
        tokens: np.ndarray,
        positions: np.ndarray,
        mask: torch.Tensor | None,
        cache,
        entries: list[tuple[int, int, int, int, np.ndarray]],
        real: int,
    ) -> None:
        """Run one forward of ``tokens`` (B x L) and write the log-probs ``entries`` ask for.

        Each entry is (sorted index k, depth lo, depth hi, row, columns of depths lo..hi-1).
        ``real`` counts the non-padding positions (for the statistics and the progress bar).
        """
        dev = self.e.device
        cols = (
            np.unique(np.concatenate([e[4] for e in entries])) if entries else np.zeros(1, np.int64)
        )
        kwargs = {} if mask is None else {"attention_mask": mask.to(dev)}
        logits = self.e.model(
            input_ids=torch.as_tensor(tokens, device=dev),
            position_ids=torch.as_tensor(positions, device=dev),
            past_key_values=cache,
            use_cache=cache is not None,
            logits_to_keep=torch.as_tensor(cols, device=dev),
            **kwargs,
        ).logits
        self.stats.forwarded += real
        self.stats.forwards += 1
        self.bar.update(real)
        if not entries:
            return
        col_of = np.full(int(cols.max()) + 1, -1, dtype=np.int64)
        col_of[cols] = np.arange(cols.size)
        # One gather for the whole forward: (row, kept column, next token) per target position.
        rows = np.concatenate([np.full(e[2] - e[1], e[3]) for e in entries])
        kcol = np.concatenate([col_of[e[4]] for e in entries])
        nxt = np.concatenate([self.full[self.order[e[0]]][e[1] + 1 : e[2] + 1] for e in entries])
        r, c = torch.as_tensor(rows, device=dev), torch.as_tensor(kcol, device=dev)
        picked = logits[r, c, torch.as_tensor(nxt, device=dev)].float()
        # log-softmax only where needed: logit - logsumexp over the vocabulary.
        vals = (picked - torch.logsumexp(logits[r, c].float(), dim=-1)).cpu().numpy()
        at = 0
        for k, lo, hi, _, _ in entries:
            i = self.order[k]
            first = self.plen[i] - 1
            self.out[i][lo - first : hi - first] = vals[at : at + hi - lo]
            at += hi - lo

    def extend(self, lo: int, hi: int, d: int, common: int) -> None:
        """Append the shared prefix [d, common) of sorted sequences lo..hi-1 to the path cache."""
        seq = self.seqs[lo]
        step = self.e.pack_tokens
        for a in range(d, common, step):
            b = min(common, a + step)
            entries = []
            for k in range(lo, hi):
                s, t = self._window(k, a, b)
                if s < t:
                    entries.append((k, s, t, 0, np.arange(s - a, t - a)))
            # A plain chain after the cache: the model's own causal mask is the right one.
            self._forward(seq[None, a:b], np.arange(a, b)[None], None, self.cache, entries, b - a)
            self.depth = b

    def _layout(self, lo: int, hi: int, d: int):
        """Tree layout of the subtree of sorted sequences lo..hi-1 below depth d.

        Returns (tokens, depths, anc, entries): every new position once, ``anc[q, r]`` true when
        position r is q itself or an ancestor of q, and entries with columns local to the subtree.
        """
        toks, deps, segs, entries = [], [], [], []
        path = np.zeros(int(self.lens[lo:hi].max()) + 1, dtype=np.int64)
        n = 0
        for k in range(lo, hi):
            # Sequence k shares its first lcp[k] positions with its predecessor (>= d in here).
            s = d if k == lo else int(self.lcp[k])
            length = int(self.lens[k])
            if length > s:
                path[s:length] = np.arange(n, n + length - s)
                toks.append(self.seqs[k][s:length])
                deps.append(np.arange(s, length))
                segs.append((n, length - s, int(path[s - 1]) if s > d else -1))
                n += length - s
            a, b = self._window(k, d, length)
            if a < b:
                entries.append((k, a, b, path[a:b].copy()))
        anc = np.zeros((n, n), dtype=bool)
        for start, length, parent in segs:
            if parent >= 0:
                anc[start : start + length] = anc[parent]
            anc[start : start + length, start : start + length] = np.tri(length, dtype=bool)
        tokens = np.concatenate(toks) if toks else np.zeros(0, np.int64)
        depths = np.concatenate(deps) if deps else np.zeros(0, np.int64)
        return tokens, depths, anc, entries

    def pack(self, groups: list[tuple[int, int]], d: int) -> None:
        """Forward all new positions of the sibling subtrees ``groups`` (below depth d) at once.

        Subtrees are laid out as trees (see ``_layout``) and placed into rows of about
        ``row_tokens`` positions by first-fit decreasing, so each query attends to the cached
        prefix plus one row rather than the whole pack; rows are right-padded to the longest.
        """
        assert self.depth == d
        parts = [p for p in (self._layout(lo, hi, d) for lo, hi in groups) if p[0].size]
        if not parts:
            return
        cap = max(self.e.row_tokens, max(p[0].size for p in parts))
        rows: list[list[int]] = []
        room: list[int] = []
        for g in sorted(range(len(parts)), key=lambda g: -parts[g][0].size):
            size = parts[g][0].size
            r = next((r for r in range(len(rows)) if room[r] >= size), None)
            if r is None:
                rows.append([])
                room.append(cap)
                r = len(rows) - 1
            rows[r].append(g)
            room[r] -= size
        width = max(cap - rm for rm in room)
        B = len(rows)
        tokens = np.full((B, width), self.e.pad_id, dtype=np.int64)
        positions = np.zeros((B, width), dtype=np.int64)
        # Padding queries see themselves (and the cache), so no softmax row is empty.
        allowed = np.broadcast_to(np.eye(width, dtype=bool), (B, width, width)).copy()
        entries = []
        real = 0
        for r, row in enumerate(rows):
            off = 0
            for g in row:
                toks, deps, anc, ents = parts[g]
                n = toks.size
                tokens[r, off : off + n] = toks
                positions[r, off : off + n] = deps
                allowed[r, off : off + n, off : off + n] = anc
                entries += [(k, a, b, r, cols + off) for k, a, b, cols in ents]
                off += n
                real += n
        mask = torch.zeros((B, 1, width, d + width), dtype=self.e.model.dtype)
        mask[:, 0, :, d:].masked_fill_(torch.from_numpy(~allowed), self.neg)
        cache = None
        if d > 0:
            from transformers import DynamicCache

            # A batch view of the path cache for this pack; the path cache itself is untouched.
            cache = DynamicCache(
                [
                    (layer.keys.expand(B, -1, -1, -1), layer.values.expand(B, -1, -1, -1))
                    for layer in self.cache.layers
                ],
                config=self.e.model.config,
            )
        self._forward(tokens, positions, mask, cache, entries, real)
