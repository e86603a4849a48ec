"""Llama forward in PyTorch over a paged KV cache, batch-invariant by construction.

A token's numbers must not depend on which other tokens share its step (other requests, how a
prompt is chunked, decode or prefill). Three rules give that:

* Row-wise work (RMSNorm, every linear layer, RoPE, SwiGLU, residual adds, the logits) runs on
  the packed token axis in blocks of `row_block` rows, the last block zero-padded to at least
  `MIN_ROWS` rows. The matrices are multiplied as `x @ W` with `W` laid out `[in, out]`,
  contiguous (`LlamaWeights.input_major`): in that layout MKL's sgemm gives a row the same bits
  for every row count from 1 up (with `[out, in]` weights, as `x @ W.T`, one to three rows take
  its matrix-vector and small-M kernels, which sum in another order, and the layout streams the
  weights some 40% slower at one row), and the row reductions and elementwise ops never mix
  rows, so a row's result depends on that row alone: the same in a block of 1 row as of 32.
  That property of the library is checked when a forward is built (`rows_independent`, for
  every weight shape of the model); where it fails, every block is padded to `row_block` rows,
  so that every call has the same shape. Either way the bytes are those of a full block, so the
  choice is not part of the numerics: it only spares a lone decoding sequence 31 padding rows of
  every GEMM. Decoding one sequence reads every weight once per token, so its speed is the
  memory bandwidth over the 540 MB of fp32 weights. (The logits use their own block,
  `logit_block`.)
* Attention runs on blocks of at most `ATTN_BLOCK` query tokens (the last block is not padded:
  each token is its own instance of the batched GEMMs below, so the number of tokens in a
  block only changes the batch count, never a token's numbers), each token over the keys at
  positions `0 .. p` of its own sequence, read from the paged cache after this step's keys and
  values were written. Keys are cut into splits of `SPLIT`
  positions at fixed boundaries (0, 64, 128, ...). Within a split, scores, max, exp, sum and
  the weighted sum of values are GEMM instances and reductions of one fixed shape
  (`[G, D] x [D, SPLIT]`, `[G, SPLIT] x [SPLIT, D]`, rows of `SPLIT`); keys past `p` score
  `-inf` and add exact zeros. Splits are then merged in increasing order with elementwise
  operations only; a split past a token's position has weight exactly 0 and changes no bit.
  So a token's attention is a function of its own position and keys: the same decoded alone,
  beside 63 others, or prefilled in a chunk of 32.
* Rotary tables are computed once for every position; a token looks its row up.

Independence from the thread count comes from MKL's strict CNR mode (`worker.model._mkl`).
`invariant=False` drops the padding (one GEMM over the real rows) and runs attention with one
`scaled_dot_product_attention` per sequence chunk; it exists to measure what invariance costs.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F

from worker.model.errors import InvalidInputError
from worker.model.llm.kv_cache import PagedKVCache
from worker.model.llm.weights import LayerMatrices, LlamaConfig, LlamaLayer, LlamaWeights

logger = logging.getLogger(__name__)

ROW_BLOCK = 32
"""Rows per GEMM/row-wise call in the decoder layers. Part of the numerics (KERNEL_VERSION)."""
LOGIT_BLOCK = 32
"""Rows per call of the final norm and the (tied) output projection. Part of the numerics."""
ATTN_BLOCK = 16
"""Query tokens per attention call. Part of the numerics."""
MIN_ROWS = 1
"""Rows the last, partial row block is padded to at least (see the module docstring): not part of
the numerics, as long as `rows_independent` holds."""
SPLIT = 64
"""Key positions per attention split (a multiple of the page size). Part of the numerics."""

LogitsWanted = Literal["none", "last", "all"]


@dataclass(frozen=True)
class SeqChunk:
    """Consecutive tokens of one sequence to run in a step.

    `start` is the position of the first token; `table` is the sequence's page table and must
    cover positions up to `start + len(token_ids) - 1`; `logits` says which of the chunk's
    tokens need next-token logits.
    """

    token_ids: Sequence[int]
    start: int
    table: Sequence[int]
    logits: LogitsWanted = "last"
    positions: list[int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.token_ids or self.start < 0:
            raise InvalidInputError("a chunk needs at least one token and a non-negative start")
        object.__setattr__(self, "positions", list(range(self.start, self.start + len(self.token_ids))))

    @property
    def end(self) -> int:
        """Position one past the chunk's last token (the sequence's cached length after the step)."""
        return self.start + len(self.token_ids)

    def logit_rows(self) -> range:
        """Indices, within the chunk, of the tokens that need logits."""
        n = len(self.token_ids)
        return {"none": range(0), "last": range(n - 1, n), "all": range(n)}[self.logits]


def rope_tables(config: LlamaConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin `[max_positions, head_dim/2]` fp32, computed like transformers' Llama rotary."""
    d = config.head_dim
    inv_freq = 1.0 / (config.rope_base ** (torch.arange(0, d, 2, dtype=torch.int64).float() / d))
    pos = torch.arange(config.max_positions, dtype=torch.int64).float()
    freqs = pos[:, None] * inv_freq[None, :]
    return freqs.cos(), freqs.sin()


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """`weight * (x * rsqrt(mean(x^2) + eps))`, row by row (transformers' op order)."""
    variance = x.pow(2).mean(-1, keepdim=True)
    return weight * (x * torch.rsqrt(variance + eps))


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent pairs of each head: `x` `[R, heads, D]`, `cos`/`sin` `[R, 1, D/2]`."""
    r, heads, d = x.shape
    pairs = x.view(r, heads, d // 2, 2)
    x0, x1 = pairs[..., 0], pairs[..., 1]
    return torch.stack((x0 * cos - x1 * sin, x1 * cos + x0 * sin), dim=-1).view(r, heads, d)


def _gemm_shapes(weights: LlamaWeights, row_block: int, logit_block: int) -> list[tuple[tuple[int, int], int]]:
    """The ``(in, out)`` shape of every matrix a row block is multiplied by, with its block."""
    mats = weights.input_major
    layer = mats.layers[0]
    shapes = {tuple(m.shape): row_block for m in (layer.qkv, layer.out, layer.gate_up, layer.down)}
    shapes[tuple(mats.lm_head.shape)] = logit_block
    return [((int(k), int(n)), b) for (k, n), b in shapes.items()]


@functools.cache
def rows_independent(shape: tuple[int, int], device: torch.device, min_rows: int, block: int) -> bool:
    """Whether ``x @ W`` (``W`` of ``shape`` ``(in, out)``, contiguous, as `LlamaWeights.input_major`
    lays the matrices out) gives each row of ``x`` the same bits for every row count from
    ``min_rows`` to ``block``, and so does RMSNorm's row mean. A property of the library's kernels
    for these shapes (not of the values): checked once per shape with random matrices."""
    if min_rows >= block:
        return True
    g = torch.Generator(device="cpu").manual_seed(1234)
    k, n = shape
    w = torch.randn((k, n), generator=g).to(device)
    x = torch.randn((block, k), generator=g).to(device)
    full = torch.mm(x, w)
    mean = x.pow(2).mean(-1, keepdim=True)
    return all(torch.equal(torch.mm(x[:m], w), full[:m])
               and torch.equal(x[:m].pow(2).mean(-1, keepdim=True), mean[:m]) for m in range(min_rows, block))


def attention_in(
    h: torch.Tensor, layer: LlamaLayer, mats: LayerMatrices, cos: torch.Tensor, sin: torch.Tensor, config: LlamaConfig
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """RMSNorm + fused QKV projection + RoPE of a row block: queries `[R, H, D]`, keys, values `[R, Hkv, D]`."""
    c = config
    x = rms_norm(h, layer.attn_norm, c.rms_eps)
    qkv = torch.mm(x, mats.qkv)
    r = h.shape[0]
    # query and key heads rotated in one call: elementwise, so each head's bytes are its own
    qk = rope(qkv[:, : c.q_size + c.kv_size].reshape(r, c.num_heads + c.num_kv_heads, c.head_dim), cos, sin)
    v = qkv[:, c.q_size + c.kv_size :].reshape(r, c.num_kv_heads, c.head_dim)
    return qk[:, : c.num_heads], qk[:, c.num_heads :], v


def attention_out_ffn(
    ctx: torch.Tensor, h: torch.Tensor, layer: LlamaLayer, mats: LayerMatrices, config: LlamaConfig
) -> torch.Tensor:
    """Output projection + residual, RMSNorm, SwiGLU FFN + residual of a row block."""
    h = h + torch.mm(ctx, mats.out)
    x = rms_norm(h, layer.ffn_norm, config.rms_eps)
    gu = torch.mm(x, mats.gate_up)
    a = F.silu(gu[:, : config.ffn]) * gu[:, config.ffn :]
    return h + torch.mm(a, mats.down)


def attention_split_block(
    q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, masked: torch.Tensor, config: LlamaConfig
) -> torch.Tensor:
    """Attention of a block of query tokens over split keys.

    `q` `[A, H*D]`; `keys`/`values` `[Hkv, A, n_splits, SPLIT, D]` (token `a`'s own sequence,
    key position `j*SPLIT + i` at `[:, a, j, i]`; contiguous, as gathered from the cache, so
    the batched GEMMs read them in place); `masked` `[1, A, n_splits, 1, SPLIT]` is True for
    the keys past each token's position. Returns `[A, H*D]`.
    """
    c = config
    _, a, n_splits, split, _ = keys.shape
    qg = q.view(a, c.num_kv_heads, c.group, c.head_dim).transpose(0, 1).unsqueeze(2)  # [Hkv, A, 1, G, D]
    scores = torch.matmul(qg, keys.transpose(-1, -2)) * (c.head_dim**-0.5)  # [Hkv, A, S, G, SPLIT]
    scores = scores.masked_fill(masked, float("-inf"))
    m = scores.amax(dim=-1, keepdim=True)  # [Hkv, A, S, G, 1]; -inf for a split past p
    p = torch.exp(scores - torch.where(m == float("-inf"), 0.0, m))
    lsum = p.sum(dim=-1, keepdim=True)
    acc = torch.matmul(p, values)  # [Hkv, A, S, G, D]
    m_all = m.amax(dim=2, keepdim=True)  # max is exact in any order; split 0 is never empty
    w = torch.exp(m - m_all)  # 0 exactly for empty splits
    wl = lsum * w
    wacc = acc * w
    l_run = wl[:, :, 0]
    acc_run = wacc[:, :, 0]
    for j in range(1, n_splits):
        l_run = l_run + wl[:, :, j]
        acc_run = acc_run + wacc[:, :, j]
    return (acc_run / l_run).transpose(0, 1).reshape(a, c.q_size)


def attention_one(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, config: LlamaConfig) -> torch.Tensor:
    """Softmax attention of one query token `[H*D]` over keys/values `[Hkv, n, D]`: `[H*D]`.

    Grouped-query: the `group` query heads of a key/value head share it. Shapes depend on
    `n` (the position + 1) only.
    """
    c = config
    qg = q.view(c.num_kv_heads, c.group, c.head_dim)
    scores = torch.matmul(qg, k.transpose(1, 2)) * (c.head_dim**-0.5)
    probs = torch.softmax(scores, dim=-1)
    return torch.matmul(probs, v).view(-1)


@dataclass(frozen=True)
class _AttnBlock:
    """Up to `ATTN_BLOCK` consecutive query tokens `start .. start+size-1` of a step, the cache
    pages their keys are gathered from (`n_splits * SPLIT / page_size` per token, page 0 past a
    sequence's table), the gathered shape and the mask of keys past each token's position."""

    start: int
    size: int
    pages: torch.Tensor
    shape: tuple[int, int, int, int, int]
    masked: torch.Tensor


class LlamaForward:
    """Runs chunks of sequences through the model, writing their keys and values into a cache.

    `__call__(chunks, cache)` returns fp32 logits `[n, vocab]` for the tokens that asked for
    them, in chunk order.
    """

    def __init__(
        self,
        weights: LlamaWeights,
        *,
        row_block: int = ROW_BLOCK,
        logit_block: int = LOGIT_BLOCK,
        invariant: bool = True,
    ) -> None:
        if row_block < 1 or logit_block < 1:
            raise InvalidInputError("row blocks must be positive")
        self.weights = weights
        self.config = weights.config
        self.row_block = row_block
        self.logit_block = logit_block
        self.invariant = invariant
        cos, sin = rope_tables(self.config)
        self._cos = cos.to(weights.device)
        self._sin = sin.to(weights.device)
        #: rows the last block is padded to at least: `MIN_ROWS` where the library keeps rows
        #: independent of the row count, else the whole block (every call the same shape)
        self.min_rows = max(row_block, logit_block)
        if invariant and all(rows_independent(shape, weights.device, MIN_ROWS, block)
                             for shape, block in _gemm_shapes(weights, row_block, logit_block)):
            self.min_rows = MIN_ROWS
        elif invariant:
            logger.warning("this BLAS gives rows different bits at different row counts: every row block is "
                           "padded to %d rows (slower for small batches, same bytes)", self.min_rows)

    def _blocks(self, rows: int, block: int) -> list[slice]:
        if not self.invariant:
            return [slice(0, rows)]
        return [slice(r, min(r + block, rows)) for r in range(0, rows, block)]

    def _padded(self, n: int, block: int) -> int:
        """Rows to allocate for ``n`` tokens: whole blocks, the last one cut to ``min_rows``."""
        if not self.invariant:
            return n
        full, rest = divmod(n, block)
        return full * block + (min(block, max(self.min_rows, rest)) if rest else 0)

    @torch.inference_mode()
    def __call__(self, chunks: Sequence[SeqChunk], cache: PagedKVCache) -> torch.Tensor:
        c = self.config
        w = self.weights
        dev = w.device
        for ch in chunks:
            if ch.end > c.max_positions:
                raise InvalidInputError(f"position {ch.end - 1} beyond the context of {c.max_positions}")
            if cache.pages_for(ch.end) > len(ch.table):
                raise InvalidInputError("page table too short for the chunk")
        ids = [t for ch in chunks for t in ch.token_ids]
        positions = [p for ch in chunks for p in ch.positions]
        t = len(ids)
        rows = self._padded(t, self.row_block)
        h = torch.zeros((rows, c.hidden), dtype=torch.float32, device=dev)
        pos = torch.tensor(positions, dtype=torch.int64, device=dev)
        h[:t] = w.embed[torch.tensor(ids, dtype=torch.int64, device=dev)]
        cos = torch.zeros((rows, 1, c.head_dim // 2), dtype=torch.float32, device=dev)
        sin = torch.zeros_like(cos)
        cos[:t, 0] = self._cos[pos]
        sin[:t, 0] = self._sin[pos]
        slots = torch.tensor(
            [s for ch in chunks for s in cache.slots(ch.table, ch.start, len(ch.token_ids))],
            dtype=torch.int64,
            device=dev,
        )
        blocks = self._blocks(rows, self.row_block)
        plan = self._attention_plan(chunks, cache) if self.invariant else None
        for li, (layer, mats) in enumerate(zip(w.layers, w.input_major.layers, strict=True)):
            if len(blocks) == 1:  # one row block (every step of up to `row_block` tokens): no copies
                q, k, v = attention_in(h, layer, mats, cos, sin, c)
            else:
                q = torch.empty((rows, c.num_heads, c.head_dim), dtype=torch.float32, device=dev)
                k = torch.empty((rows, c.num_kv_heads, c.head_dim), dtype=torch.float32, device=dev)
                v = torch.empty_like(k)
                for b in blocks:
                    q[b], k[b], v[b] = attention_in(h[b], layer, mats, cos[b], sin[b], c)
            cache.write(li, slots, k[:t], v[:t])  # new keys and values first, then attention
            ctx = torch.zeros((rows, c.q_size), dtype=torch.float32, device=dev)
            if plan is None:
                self._attention_sdpa(chunks, cache, li, q, ctx)
            else:
                self._attention_blocks(plan, cache, li, q, ctx)
            if len(blocks) == 1:
                h = attention_out_ffn(ctx, h, layer, mats, c)
                continue
            nxt = torch.empty_like(h)
            for b in blocks:
                nxt[b] = attention_out_ffn(ctx[b], h[b], layer, mats, c)
            h = nxt
        return self._logits(chunks, h)

    def _attention_sdpa(
        self, chunks: Sequence[SeqChunk], cache: PagedKVCache, layer: int, q: torch.Tensor, ctx: torch.Tensor
    ) -> None:
        c = self.config
        row = 0
        for ch in chunks:
            keys, values = cache.gather(layer, ch.table, ch.end)
            n = len(ch.token_ids)
            qh = q[row : row + n].permute(1, 0, 2).unsqueeze(0)  # [1, H, n, D]
            mask = None
            if n > 1:
                kpos = torch.arange(ch.end, device=q.device)
                mask = kpos[None, :] <= torch.tensor(ch.positions, device=q.device)[:, None]
            out = F.scaled_dot_product_attention(
                qh, keys.unsqueeze(0), values.unsqueeze(0), attn_mask=mask, enable_gqa=True
            )
            ctx[row : row + n] = out[0].permute(1, 0, 2).reshape(n, c.q_size)
            row += n

    def _attention_plan(self, chunks: Sequence[SeqChunk], cache: PagedKVCache) -> list[_AttnBlock]:
        """The attention blocks of a step: the same for every layer, so built once per forward."""
        c = self.config
        page = cache.page_size
        if SPLIT % page:
            raise InvalidInputError(f"the page size {page} must divide the attention split {SPLIT}")
        tokens = [(ch.table, p) for ch in chunks for p in ch.positions]
        dev = self.weights.device
        plan = []
        for b0 in range(0, len(tokens), ATTN_BLOCK):
            blk = tokens[b0 : b0 + ATTN_BLOCK]
            a = len(blk)
            n_splits = max(p for _, p in blk) // SPLIT + 1
            n_pages = n_splits * SPLIT // page
            idx: list[int] = []
            for table, _ in blk:
                row = list(table[:n_pages])
                idx.extend(row + [0] * (n_pages - len(row)))
            positions = torch.tensor([p for _, p in blk], dtype=torch.int64, device=dev)
            kpos = torch.arange(n_splits * SPLIT, device=dev).view(1, 1, n_splits, 1, SPLIT)
            plan.append(
                _AttnBlock(
                    start=b0,
                    size=a,
                    pages=torch.tensor(idx, dtype=torch.int64, device=dev),
                    shape=(c.num_kv_heads, a, n_splits, SPLIT, c.head_dim),
                    masked=kpos > positions.view(1, a, 1, 1, 1),
                )
            )
        return plan

    def _attention_blocks(
        self, plan: Sequence[_AttnBlock], cache: PagedKVCache, layer: int, q: torch.Tensor, ctx: torch.Tensor
    ) -> None:
        c = self.config
        for blk in plan:
            keys = torch.index_select(cache.k[layer], 1, blk.pages).view(blk.shape)
            values = torch.index_select(cache.v[layer], 1, blk.pages).view(blk.shape)
            qb = q[blk.start : blk.start + blk.size].reshape(blk.size, c.q_size)
            ctx[blk.start : blk.start + blk.size] = attention_split_block(qb, keys, values, blk.masked, c)

    def _logits(self, chunks: Sequence[SeqChunk], h: torch.Tensor) -> torch.Tensor:
        c = self.config
        w = self.weights
        idx: list[int] = []
        row = 0
        for ch in chunks:
            idx.extend(row + i for i in ch.logit_rows())
            row += len(ch.token_ids)
        n = len(idx)
        rows = self._padded(n, self.logit_block)
        sel = torch.zeros((rows, c.hidden), dtype=torch.float32, device=h.device)
        sel[:n] = h[torch.tensor(idx, dtype=torch.int64, device=h.device)]
        out = torch.empty((rows, c.vocab_size), dtype=torch.float32, device=h.device)
        for b in self._blocks(rows, self.logit_block):
            out[b] = torch.mm(rms_norm(sel[b], w.final_norm, c.rms_eps), w.input_major.lm_head)
        return out[:n]
