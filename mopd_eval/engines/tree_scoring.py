"""Scoring (prompt, target) pairs on a causal LM, encoding every distinct prefix exactly once.

The pairs of a signal study overlap heavily: every teacher prompt of a problem starts with the
same chat header and question, many continue with the same first peer solution, many pairs share
the very same teacher prompt. The log-probability of a target token depends only on the tokens
before it, so the work that must be done is one forward position per *distinct prefix* of the
inputs: the nodes of a token trie over all sequences ``prompt + target[:-1]``
(``ScoreStats.lower_bound``). One pair per forward (``naive_logprobs``, what the reference code
does) encodes ``sum(len(prompt) + len(target) - 1)`` positions instead.

``tree_logprobs`` forwards each trie node once:

1. Sort the input sequences; adjacent longest common prefixes (LCPs) describe the trie as
   contiguous ranges of the sorted order (a range whose LCPs are all >= d is the subtree below a
   node at depth d).
2. Encode the trie in *waves*, breadth first. A subtree of at most ``row_tokens`` new positions
   becomes a tree-attention part: every position once, position id = depth, a mask in which each
   position sees its ancestors only. A bigger subtree contributes its trunk (the chain down to
   its first branching, at most ``pack_tokens`` long) with as many of its small children as fit
   beside it in ``row_tokens``; its other children wait for the next wave.
3. Every part has its own cached prefix: the keys and values of its ancestors' trunks, kept from
   earlier waves. The parts of a wave are spread over as many rows of about ``row_tokens``
   positions as they need (largest first, each into the row whose cache it grows least, which
   puts siblings together), a row's cache holds the union of its parts' prefixes (masked per
   part), and rows of similar width are batched up to ``pack_tokens`` padded positions per
   forward. So parts below different nodes share one forward, and a query attends to a cache
   and a short row instead of a wide pack of unrelated positions. A trunk's keys and values are
   dropped once no pending subtree descends from it.
4. Only target positions reach the output head, in chunks, each chunk as one log-softmax
   (the head is applied to the decoder's hidden states when it is a plain linear map, which is
   checked numerically once per model; otherwise the model's own head runs with
   ``logits_to_keep``).

Memory: the kept trunks of one wave plus one forward. A call whose trie exceeds ``kv_budget_mb``
of keys and values is split along the sorted order into independent chunks (each re-encodes
the prefix it shares with the previous chunk, so ``forwarded`` then exceeds ``lower_bound`` by
that much).

Assumes full causal attention with explicit position ids (Llama, Qwen2, ... families; not
sliding windows).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

HEAD_CHUNK = 512  # target positions per output-head chunk: bounds the vocabulary-sized logits


@dataclass
class ScoreStats:
    """Counters of one scoring call (positions are input tokens forwarded)."""

    pairs: int = 0
    target_tokens: int = 0
    naive_positions: int = 0  # what one pair per forward encodes
    lower_bound: int = 0  # distinct prefixes: positions that must be encoded at least once
    forwarded: int = 0  # positions actually forwarded (padding excluded)
    forwards: int = 0  # model calls
    waves: int = 0


@dataclass
class _Part:
    """Positions to encode below one cached prefix: tokens, depths, ancestor mask, and the
    target windows they produce as (sorted index k, depth lo, depth hi, columns)."""

    tokens: np.ndarray
    depths: np.ndarray
    anc: np.ndarray  # anc[q, r]: position r is q or an ancestor of q
    entries: list[tuple[int, int, int, np.ndarray]]


@dataclass
class _Item:
    """A part to encode in this wave below the prefix made of trunk segments ``prefix``."""

    prefix: tuple[int, ...]
    part: _Part
    segment: int | None = None  # set for a trunk whose keys/values later waves need


@dataclass
class _Bin:
    """One batch row: items side by side, after a cache holding the union of their prefixes."""

    items: list[tuple[int, _Item]] = field(default_factory=list)  # (column offset, item)
    segs: dict[int, int] = field(default_factory=dict)  # segment -> offset in the row's cache
    size: int = 0
    cached: int = 0

    def add(self, item: _Item, seg_len: dict[int, int]) -> None:
        self.items.append((self.size, item))
        self.size += item.part.tokens.size
        for s in item.prefix:
            if s not in self.segs:
                self.segs[s] = self.cached
                self.cached += seg_len[s]


@dataclass
class _Trie:
    """Sorted input sequences and their adjacent LCPs."""

    order: list[int]  # sorted position -> input index
    seqs: list[np.ndarray]  # prompt + target[:-1], sorted
    full: dict[int, np.ndarray]  # input index -> prompt + target
    plen: dict[int, int]
    lens: np.ndarray = field(init=False)
    lcp: np.ndarray = field(init=False)  # lcp[k] = LCP(seqs[k-1], seqs[k]); lcp[0] = 0
    cum: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.lens = np.array([len(s) for s in self.seqs], dtype=np.int64)
        self.lcp = np.zeros(len(self.seqs), dtype=np.int64)
        for k in range(1, len(self.seqs)):
            a, b = self.seqs[k - 1], self.seqs[k]
            m = min(len(a), len(b))
            diff = np.flatnonzero(a[:m] != b[:m])
            self.lcp[k] = diff[0] if diff.size else m
        # positions sequence k adds to the trie after its predecessor
        self.cum = np.concatenate([[0], np.cumsum(self.lens - self.lcp)])

    def unique_below(self, lo: int, hi: int, d: int) -> int:
        """Trie positions of the subtree [lo, hi) below depth d: all of seqs[lo] past d, then
        each later sequence past its LCP with its predecessor (>= d inside the range)."""
        return int(self.lens[lo] - d + self.cum[hi] - self.cum[lo + 1])

    def common(self, lo: int, hi: int) -> int:
        return int(self.lens[lo]) if hi - lo == 1 else int(self.lcp[lo + 1 : hi].min())

    def children(self, lo: int, hi: int, d: int) -> list[tuple[int, int]]:
        """Maximal runs of [lo, hi) that share more than d tokens: the subtrees below depth d."""
        starts = [lo] + [k for k in range(lo + 1, hi) if self.lcp[k] == d]
        return list(zip(starts, starts[1:] + [hi], strict=True))

    def window(self, k: int, a: int, b: int) -> tuple[int, int]:
        """Depths within [a, b) of sorted sequence k whose next token is a target token."""
        return max(a, self.plen[self.order[k]] - 1), min(b, int(self.lens[k]))

    def chain(self, lo: int, hi: int, d: int, e: int) -> _Part:
        """The trunk [d, e) that all of sorted sequences lo..hi-1 share, as a causal chain."""
        return _Part(
            self.seqs[lo][d:e],
            np.arange(d, e),
            np.tri(e - d, dtype=bool),
            self.trunk_entries(range(lo, hi), d, e),
        )

    def trunk_entries(self, ks, d: int, e: int) -> list[tuple[int, int, int, np.ndarray]]:
        """Target windows of sequences ``ks`` inside a shared trunk [d, e) laid out from column 0."""
        entries = []
        for k in ks:
            a, b = self.window(k, d, e)
            if a < b:
                entries.append((k, a, b, np.arange(a - d, b - d)))
        return entries

    def layout(self, ks: list[int], d: int) -> _Part:
        """Sorted sequences ``ks`` (increasing, all sharing depths [0, d)) below depth d as a tree:
        every distinct position once, the first sequence's positions first."""
        toks, deps, segs, entries = [], [], [], []
        path = np.zeros(int(self.lens[ks].max()) + 1, dtype=np.int64)
        n = 0
        prev = -1
        for k in ks:
            # Sequence k shares LCP(seqs[prev], seqs[k]) = min(lcp[prev+1..k]) positions with the
            # previous one, and at least d with all of them.
            s = d if prev < 0 else max(d, int(self.lcp[prev + 1 : k + 1].min()))
            prev = k
            length = int(self.lens[k])
            if length > s:
                path[s:length] = np.arange(n, n + length - s)
                toks.append(self.seqs[k][s:length])
                deps.append(np.arange(s, length))
                segs.append((n, length - s, int(path[s - 1]) if s > d else -1))
                n += length - s
            a, b = self.window(k, d, length)
            if a < b:
                entries.append((k, a, b, path[a:b].copy()))
        anc = np.zeros((n, n), dtype=bool)
        for start, length, parent in segs:
            if parent >= 0:
                anc[start : start + length] = anc[parent]
            anc[start : start + length, start : start + length] = np.tri(length, dtype=bool)
        tokens = np.concatenate(toks) if toks else np.zeros(0, np.int64)
        depths = np.concatenate(deps) if deps else np.zeros(0, np.int64)
        return _Part(tokens, depths, anc, entries)


def head_is_linear(model) -> bool:
    """True when ``model``'s logits are its output embedding applied to its decoder's hidden
    states (no soft-capping or scaling), checked on a short input."""
    try:
        decoder, head = model.get_decoder(), model.get_output_embeddings()
    except (AttributeError, NotImplementedError, ValueError):
        return False
    if decoder is None or head is None or decoder is model:
        return False
    vocab = int(model.config.get_text_config().vocab_size)
    ids = torch.arange(1, 9, device=next(model.parameters()).device)[None] % vocab
    with torch.inference_mode():
        want = model(input_ids=ids).logits.float()
        got = head(decoder(input_ids=ids).last_hidden_state).float()
    return got.shape == want.shape and bool(torch.allclose(got, want, rtol=1e-4, atol=1e-4))


def naive_logprobs(model, teacher_prompt_ids, target_ids, progress: bool = False):
    """The reference computation: one forward of ``prompt + target`` per pair, full logits."""
    device = next(model.parameters()).device
    out = []
    for p, t in tqdm(
        list(zip(teacher_prompt_ids, target_ids, strict=True)),
        desc="scoring (naive)",
        disable=not progress,
    ):
        if len(t) == 0:
            out.append(np.zeros(0, dtype=np.float32))
            continue
        ids = torch.tensor([list(p) + list(t)], device=device)
        logits = model(input_ids=ids).logits[0, len(p) - 1 : -1].float()
        lp = torch.log_softmax(logits, dim=-1).gather(-1, ids[0, len(p) :, None])[:, 0]
        out.append(lp.cpu().numpy().astype(np.float32))
    return out


def tree_logprobs(
    model,
    teacher_prompt_ids,
    target_ids,
    *,
    pad_id: int,
    linear_head: bool,
    pack_tokens: int = 1024,
    row_tokens: int = 256,
    kv_budget_mb: float = 2048,
    progress: bool = False,
) -> tuple[list[np.ndarray], ScoreStats]:
    """Per-token log-probs (float32) of each target after its prompt, in input order, with the
    statistics of the call. Equal to ``naive_logprobs`` up to float32 rounding; an empty target
    gives an empty array. Inputs are assumed checked (``base.check_score_inputs``)."""
    out = [np.zeros(len(t), dtype=np.float32) for t in target_ids]
    live = [i for i, t in enumerate(target_ids) if len(t) > 0]
    stats = ScoreStats(pairs=len(target_ids), target_tokens=sum(len(t) for t in target_ids))
    if not live:
        return out, stats
    full = {
        i: np.asarray(list(teacher_prompt_ids[i]) + list(target_ids[i]), dtype=np.int64)
        for i in live
    }
    # Sort the inputs (each full sequence minus its last token); tuples compare in C.
    order = sorted(live, key=lambda i: tuple(full[i][:-1].tolist()))
    trie = _Trie(
        order, [full[i][:-1] for i in order], full, {i: len(teacher_prompt_ids[i]) for i in live}
    )
    stats.naive_positions = int(trie.lens.sum())
    stats.lower_bound = int(trie.cum[-1])
    bar = tqdm(
        total=stats.lower_bound, unit="tok", desc="scoring", disable=not progress, smoothing=0.1
    )
    enc = _Encoder(model, trie, out, stats, bar, pad_id, linear_head, pack_tokens, row_tokens)
    budget = max(1, int(kv_budget_mb * 2**20 // enc.kv_bytes_per_position()))
    start = 0
    for k in range(1, len(order) + 1):
        # Cut the sorted order into chunks whose tries fit the key/value budget.
        if k == len(order) or trie.unique_below(start, k + 1, 0) > budget:
            enc.encode(start, k)
            start = k
    bar.close()
    return out, stats


class _Encoder:
    """The waves of one call: rows, the kept trunk keys/values, forwards, output writes."""

    def __init__(self, model, trie, out, stats, bar, pad_id, linear_head, pack_tokens, row_tokens):
        self.model, self.trie, self.out, self.stats, self.bar = model, trie, out, stats, bar
        self.pad_id, self.linear_head = pad_id, linear_head
        self.pack_tokens, self.row_tokens = pack_tokens, row_tokens
        self.device = next(model.parameters()).device
        self.dtype = model.dtype
        self.config = model.config
        self.store: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self.seg_len: dict[int, int] = {}
        self.next_segment = 0

    def kv_bytes_per_position(self) -> int:
        c = self.config.get_text_config()
        heads = c.num_attention_heads
        kv = getattr(c, "num_key_value_heads", None) or heads
        head_dim = getattr(c, "head_dim", None) or c.hidden_size // heads
        return 2 * c.num_hidden_layers * kv * head_dim * torch.finfo(self.dtype).bits // 8

    def encode(self, lo: int, hi: int) -> None:
        pending = [(lo, hi, 0, ())]
        while pending:
            items, pending = self._plan_wave(pending)
            self.stats.waves += bool(items)
            bins = self._pack(items)
            bins.sort(key=lambda b: (-b.size, -b.cached))
            i = 0
            while i < len(bins):
                # Widest rows first; as many as fit pack_tokens padded positions (at least one).
                per = max(1, self.pack_tokens // bins[i].size)
                self._forward(bins[i : i + per])
                i += per
            needed = {s for _, _, _, prefix in pending for s in prefix}
            for s in [s for s in self.store if s not in needed]:
                del self.store[s], self.seg_len[s]

    def _plan_wave(self, pending):
        """Items of this wave and the subtrees left for the next one."""
        trie = self.trie
        items: list[_Item] = []
        later = []
        stack = list(reversed(pending))
        while stack:
            lo, hi, d, prefix = stack.pop()
            u = trie.unique_below(lo, hi, d)
            if u == 0:
                continue  # every position is encoded; targets ending here were written earlier
            if u <= self.row_tokens:
                items.append(_Item(prefix, trie.layout(list(range(lo, hi)), d)))
                continue
            common = trie.common(lo, hi)
            if common == d:
                stack.extend(reversed([(a, b, d, prefix) for a, b in trie.children(lo, hi, d)]))
                continue
            seg = self.next_segment
            self.next_segment += 1
            e = min(common, d + self.pack_tokens)
            self.seg_len[seg] = e - d
            kids = trie.children(lo, hi, common) if e == common else []
            # Small children ride along with the trunk in its row (largest that fit first), so
            # a short trunk does not cost a forward of its own; the rest wait for the next wave.
            room = self.row_tokens - (e - d)
            ride = []
            sizes = {ab: trie.unique_below(*ab, common) for ab in kids}
            for a, b in sorted(kids, key=lambda ab: -sizes[ab]):
                if sizes[a, b] <= room:
                    ride.append((a, b))
                    room -= sizes[a, b]
                else:
                    later.append((a, b, common, (*prefix, seg)))
            if not ride:
                items.append(_Item(prefix, trie.chain(lo, hi, d, e), seg))
                if not kids:
                    later.append((lo, hi, e, (*prefix, seg)))
                continue
            ks = sorted(k for a, b in ride for k in range(a, b))
            part = trie.layout(ks, d)
            rest = sorted(set(range(lo, hi)) - set(ks))
            part.entries += trie.trunk_entries(rest, d, e)
            items.append(_Item(prefix, part, seg))
        return items, later

    def _pack(self, items: list[_Item]) -> list[_Bin]:
        """Items into rows of about ``row_tokens`` positions with little padding: as many rows
        as the wave needs, then largest item first into the row whose cache it grows least among
        those it fits, else into the least-loaded row (siblings share their prefix)."""
        if not items:
            return []
        total = sum(it.part.tokens.size for it in items)
        cap = max([self.row_tokens] + [it.part.tokens.size for it in items])
        bins = [_Bin() for _ in range(-(-total // cap))]
        target = max(cap if len(bins) == 1 else 0, -(-total // len(bins)))
        for it in sorted(items, key=lambda it: -it.part.tokens.size):
            n = it.part.tokens.size
            fits = [b for b in bins if b.size + n <= target] or [min(bins, key=lambda b: b.size)]
            best = min(
                fits,
                key=lambda b: (sum(self.seg_len[s] for s in it.prefix if s not in b.segs), b.size),
            )
            best.add(it, self.seg_len)
        return [b for b in bins if b.size]

    def _forward(self, bins: list[_Bin]) -> None:
        from transformers import DynamicCache

        B = len(bins)
        width = max(b.size for b in bins)
        P = max(b.cached for b in bins)
        tokens = np.full((B, width), self.pad_id, dtype=np.int64)
        positions = np.zeros((B, width), dtype=np.int64)
        # Padding queries see themselves only, so no softmax row is empty.
        allowed = np.zeros((B, width, P + width), dtype=bool)
        allowed[:, :, P:] = np.eye(width, dtype=bool)
        ents = []
        for r, bin_ in enumerate(bins):
            for off, it in bin_.items:
                n = it.part.tokens.size
                tokens[r, off : off + n] = it.part.tokens
                positions[r, off : off + n] = it.part.depths
                for s in it.prefix:
                    at = bin_.segs[s]
                    allowed[r, off : off + n, at : at + self.seg_len[s]] = True
                allowed[r, off : off + n, P + off : P + off + n] = it.part.anc
                ents += [(r, k, a, e, cols + off) for k, a, e, cols in it.part.entries]
        # Built on the model's device from the boolean pattern (1 byte a cell crosses the bus),
        # additive and in the model's dtype: what eager and SDPA (CPU and CUDA kernels) all take.
        blocked = torch.from_numpy(~allowed).to(self.device, non_blocking=True)[:, None]
        mask = torch.zeros(blocked.shape, dtype=self.dtype, device=self.device)
        mask.masked_fill_(blocked, torch.finfo(self.dtype).min)
        cache = DynamicCache(config=self.config) if P == 0 else self._gather_cache(bins, P)
        kwargs = dict(
            input_ids=torch.as_tensor(tokens, device=self.device),
            position_ids=torch.as_tensor(positions, device=self.device),
            attention_mask=mask,
            past_key_values=cache,
            use_cache=True,
        )
        if self.linear_head:
            hidden = self.model.get_decoder()(**kwargs).last_hidden_state
            head = self.model.get_output_embeddings()
            cols_of = None
        else:
            cols = (
                np.unique(np.concatenate([e[4] for e in ents])) if ents else np.zeros(1, np.int64)
            )
            hidden = self.model(
                **kwargs, logits_to_keep=torch.as_tensor(cols, device=self.device)
            ).logits
            head = None
            cols_of = np.full(width, -1, dtype=np.int64)
            cols_of[cols] = np.arange(cols.size)
        real = sum(b.size for b in bins)
        self.stats.forwarded += real
        self.stats.forwards += 1
        self.bar.update(real)
        for r, bin_ in enumerate(bins):
            for off, it in bin_.items:
                if it.segment is not None:  # the trunk is the first seg_len columns
                    a, e = P + off, P + off + self.seg_len[it.segment]
                    self.store[it.segment] = [
                        (layer.keys[r, :, a:e].clone(), layer.values[r, :, a:e].clone())
                        for layer in cache.layers
                    ]
        if ents:
            self._write(hidden, head, cols_of, ents)

    def _gather_cache(self, bins: list[_Bin], P: int):
        """A batch cache: row r holds the trunk keys/values of its segments, then zeros."""
        from transformers import DynamicCache

        ref = next(iter(self.store.values()))
        layers = []
        for li, (k0, _) in enumerate(ref):
            K = k0.new_zeros((len(bins), k0.shape[0], P, k0.shape[2]))
            V = torch.zeros_like(K)
            for r, bin_ in enumerate(bins):
                for s, at in bin_.segs.items():
                    k, v = self.store[s][li]
                    K[r, :, at : at + k.shape[1]] = k
                    V[r, :, at : at + k.shape[1]] = v
            layers.append((K, V))
        return DynamicCache(layers, config=self.config)

    def _write(self, hidden, head, cols_of, ents) -> None:
        """Log-probs of the next tokens at the entries' positions into the output arrays."""
        trie = self.trie
        rows = np.concatenate([np.full(e - a, b) for b, _, a, e, _ in ents])
        cols = np.concatenate([c for *_, c in ents])
        if cols_of is not None:
            cols = cols_of[cols]
        nxt = np.concatenate([trie.full[trie.order[k]][a + 1 : e + 1] for _, k, a, e, _ in ents])
        r = torch.as_tensor(rows, device=self.device)
        c = torch.as_tensor(cols, device=self.device)
        picked = hidden[r, c]
        target = torch.as_tensor(nxt, device=self.device)
        vals = torch.empty(len(nxt), dtype=torch.float32)
        for s in range(0, len(nxt), HEAD_CHUNK):
            x = picked[s : s + HEAD_CHUNK]
            logits = (head(x) if head is not None else x).float()
            lp = torch.log_softmax(logits, dim=-1).gather(-1, target[s : s + HEAD_CHUNK, None])
            vals[s : s + HEAD_CHUNK] = lp[:, 0].cpu()
        vals = vals.numpy()
        at = 0
        for _, k, a, e, _ in ents:
            i = trie.order[k]
            first = trie.plen[i] - 1
            self.out[i][a - first : e - first] = vals[at : at + e - a]
            at += e - a
