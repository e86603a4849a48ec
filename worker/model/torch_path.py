"""Pure PyTorch forward of all-MiniLM-L6-v2 that is batch-invariant by construction.

A sentence's output bytes must not depend on the other sentences of its batch, their order,
or padding. Two rules give that without relying on how the BLAS blocks a GEMM of a given M:

* Row-wise work (every linear layer, GELU, residual add, LayerNorm) runs on the packed token
  axis in blocks of exactly `ROW_BLOCK` rows; the last block is zero-padded to full size. Each
  GEMM call therefore has the same shape (and, since every row is a multiple of 64 bytes wide,
  the same buffer alignment) whatever the batch, so the library takes the same code path and
  reduction order for every row; a row's result depends only on that row.
* Attention and pooling run per sequence over exactly that sequence's own tokens: their shapes
  and reduction lengths are a function of the sequence alone. There are no padded keys, so
  no mask value can leak into a softmax sum.

The cost is one padded row block per layer call and a Python loop over sequences for
attention; both are small next to the GEMMs at serving batch sizes. Independence from the
thread count comes from MKL's strict CNR mode (`worker.model._mkl`), checked by a test.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
import torch.nn.functional as F

from worker.model.packing import PackedBatch
from worker.model.weights import (
    HEAD_DIM,
    HIDDEN,
    LAYER_NORM_EPS,
    NUM_HEADS,
    LayerWeights,
    MiniLMWeights,
)

logger = logging.getLogger(__name__)

ROW_BLOCK = 64
"""Rows per GEMM call. Part of the numerics: changing it requires a new KERNEL_VERSION."""

_SM_SCALE = HEAD_DIM**-0.5  # head dim 32

BlockFn = Callable[..., torch.Tensor]


def _linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.addmm(b.to(x.dtype), x, w.t())


def _layer_norm(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    y = F.layer_norm(x.float(), (HIDDEN,), w, b, LAYER_NORM_EPS)
    return y.to(x.dtype)


def qkv_block(h: torch.Tensor, qkv_w: torch.Tensor, qkv_b: torch.Tensor) -> torch.Tensor:
    """Fused query/key/value projection of one row block: `[R, HIDDEN] -> [R, 3*HIDDEN]`."""
    return _linear(h, qkv_w, qkv_b)


def post_attention_block(
    ctx: torch.Tensor,
    h: torch.Tensor,
    attn_out_w: torch.Tensor,
    attn_out_b: torch.Tensor,
    attn_ln_w: torch.Tensor,
    attn_ln_b: torch.Tensor,
    ffn_up_w: torch.Tensor,
    ffn_up_b: torch.Tensor,
    ffn_down_w: torch.Tensor,
    ffn_down_b: torch.Tensor,
    ffn_ln_w: torch.Tensor,
    ffn_ln_b: torch.Tensor,
) -> torch.Tensor:
    """Attention output projection + residual LayerNorm + FFN (erf-GELU) + residual LayerNorm."""
    x = _layer_norm(_linear(ctx, attn_out_w, attn_out_b) + h, attn_ln_w, attn_ln_b)
    u = F.gelu(_linear(x, ffn_up_w, ffn_up_b))
    return _layer_norm(_linear(u, ffn_down_w, ffn_down_b) + x, ffn_ln_w, ffn_ln_b)


def attention_one(qkv: torch.Tensor) -> torch.Tensor:
    """Self-attention of one sequence over its own L tokens: `[L, 3*HIDDEN] -> [L, HIDDEN]`.

    One `scaled_dot_product_attention` call with no mask: its blocking and reduction order are
    a function of L (and its result does not depend on the thread count, tested).
    """
    length = qkv.shape[0]
    heads = qkv.view(length, 3, NUM_HEADS, HEAD_DIM).permute(1, 2, 0, 3).unsqueeze(1)
    ctx = F.scaled_dot_product_attention(heads[0], heads[1], heads[2], scale=_SM_SCALE)
    return ctx[0].transpose(0, 1).reshape(length, HIDDEN)


def _embed(weights: MiniLMWeights, batch: PackedBatch, rows: int) -> torch.Tensor:
    dev = weights.device
    t = batch.num_tokens
    ids = batch.input_ids.to(dev)
    pos = batch.positions.to(dev)
    e = torch.zeros((rows, HIDDEN), dtype=weights.dtype, device=dev)
    e[:t] = (weights.word_emb[ids] + weights.type_emb[0]) + weights.pos_emb[pos]
    h = torch.empty_like(e)
    for r in range(0, rows, ROW_BLOCK):
        h[r : r + ROW_BLOCK] = _layer_norm(e[r : r + ROW_BLOCK], weights.emb_ln_w, weights.emb_ln_b)
    return h


def _layer_args(lw: LayerWeights) -> tuple[torch.Tensor, ...]:
    return (
        lw.attn_out_w,
        lw.attn_out_b,
        lw.attn_ln_w,
        lw.attn_ln_b,
        lw.ffn_up_w,
        lw.ffn_up_b,
        lw.ffn_down_w,
        lw.ffn_down_b,
        lw.ffn_ln_w,
        lw.ffn_ln_b,
    )


class TorchForward:
    """Callable `PackedBatch -> [B, HIDDEN] float32` sentence embeddings (L2-normalised).

    `compile=True` runs the two fixed-shape row-block functions through `torch.compile`;
    that changes the numerics (a different runtime) and exists for benchmarking.
    """

    def __init__(self, weights: MiniLMWeights, *, compile: bool = False) -> None:
        self.weights = weights
        self._qkv: BlockFn = qkv_block
        self._post: BlockFn = post_attention_block
        if compile:
            self._qkv = torch.compile(qkv_block, dynamic=False)
            self._post = torch.compile(post_attention_block, dynamic=False)

    @torch.inference_mode()
    def __call__(self, batch: PackedBatch) -> torch.Tensor:
        """Embed every sequence of `batch`."""
        w = self.weights
        dev = w.device
        if batch.num_seqs == 0:
            return torch.zeros((0, HIDDEN), dtype=torch.float32, device=dev)
        t = batch.num_tokens
        rows = -(-t // ROW_BLOCK) * ROW_BLOCK
        cu = batch.cu_seqlens
        h = _embed(w, batch, rows)
        for lw in w.layers:
            qkv = torch.empty((rows, 3 * HIDDEN), dtype=w.dtype, device=dev)
            for r in range(0, rows, ROW_BLOCK):
                qkv[r : r + ROW_BLOCK] = self._qkv(h[r : r + ROW_BLOCK], lw.qkv_w, lw.qkv_b)
            ctx = torch.zeros((rows, HIDDEN), dtype=w.dtype, device=dev)
            for s in range(batch.num_seqs):
                a, b = cu[s], cu[s + 1]
                ctx[a:b] = attention_one(qkv[a:b])
            nxt = torch.empty_like(h)
            args = _layer_args(lw)
            for r in range(0, rows, ROW_BLOCK):
                nxt[r : r + ROW_BLOCK] = self._post(ctx[r : r + ROW_BLOCK], h[r : r + ROW_BLOCK], *args)
            h = nxt
        out = torch.empty((batch.num_seqs, HIDDEN), dtype=torch.float32, device=dev)
        for s in range(batch.num_seqs):
            a, b = cu[s], cu[s + 1]
            mean = h[a:b].float().sum(dim=0) / float(b - a)
            out[s] = F.normalize(mean, p=2.0, dim=0, eps=1e-12)
        return out


def torch_forward(weights: MiniLMWeights, batch: PackedBatch) -> torch.Tensor:
    """One-shot eager forward; see `TorchForward`."""
    return TorchForward(weights)(batch)
