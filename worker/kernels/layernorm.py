"""Row-wise kernels: embedding gather + LayerNorm, and residual add + LayerNorm.

One program per token row; statistics in fp32 over the whole row in one block, so a row's
result depends on that row alone.
"""

# Triton kernels take untyped (pointer / constexpr) parameters.
# mypy: disable-error-code="no-untyped-def,untyped-decorator"

from __future__ import annotations

import torch
import triton
import triton.language as tl

from worker.kernels.common import FP_FUSION, check_device


@triton.jit
def _layer_norm_row(x, w_ptr, b_ptr, offs, mask, HIDDEN: tl.constexpr, eps):
    mean = tl.sum(x, axis=0) / HIDDEN
    d = tl.where(mask, x - mean, 0.0)
    var = tl.sum(d * d, axis=0) / HIDDEN
    rstd = 1.0 / tl.sqrt_rn(var + eps)
    w = tl.load(w_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    return d * rstd * w + b


@triton.jit
def _embed_ln_kernel(
    ids_ptr,
    pos_ptr,
    word_ptr,
    posemb_ptr,
    type_ptr,
    ln_w_ptr,
    ln_b_ptr,
    out_ptr,
    eps,
    HIDDEN: tl.constexpr,
    BLOCK_H: tl.constexpr,
):
    row = tl.program_id(0)
    offs = tl.arange(0, BLOCK_H)
    mask = offs < HIDDEN
    tok = tl.load(ids_ptr + row).to(tl.int64)
    pos = tl.load(pos_ptr + row).to(tl.int64)
    x = tl.load(word_ptr + tok * HIDDEN + offs, mask=mask, other=0.0).to(tl.float32)
    x = x + tl.load(type_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    x = x + tl.load(posemb_ptr + pos * HIDDEN + offs, mask=mask, other=0.0).to(tl.float32)
    y = _layer_norm_row(x, ln_w_ptr, ln_b_ptr, offs, mask, HIDDEN, eps)
    out = out_ptr + row.to(tl.int64) * HIDDEN + offs
    tl.store(out, y.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _add_ln_kernel(
    x_ptr,
    res_ptr,
    ln_w_ptr,
    ln_b_ptr,
    out_ptr,
    eps,
    HIDDEN: tl.constexpr,
    BLOCK_H: tl.constexpr,
):
    row = tl.program_id(0)
    offs = tl.arange(0, BLOCK_H)
    mask = offs < HIDDEN
    base = row.to(tl.int64) * HIDDEN
    x = tl.load(x_ptr + base + offs, mask=mask, other=0.0).to(tl.float32)
    x = x + tl.load(res_ptr + base + offs, mask=mask, other=0.0).to(tl.float32)
    y = _layer_norm_row(x, ln_w_ptr, ln_b_ptr, offs, mask, HIDDEN, eps)
    tl.store(out_ptr + base + offs, y.to(out_ptr.dtype.element_ty), mask=mask)


def embedding_layernorm(
    input_ids: torch.Tensor,
    positions: torch.Tensor,
    word_emb: torch.Tensor,
    pos_emb: torch.Tensor,
    type_emb: torch.Tensor,
    ln_w: torch.Tensor,
    ln_b: torch.Tensor,
    eps: float,
) -> torch.Tensor:
    """`LayerNorm((word[ids] + type[0]) + pos[positions])` for packed tokens: `[T] -> [T, H]`."""
    check_device(word_emb)
    t = input_ids.shape[0]
    hidden = word_emb.shape[1]
    out = torch.empty((t, hidden), dtype=word_emb.dtype, device=word_emb.device)
    if t == 0:
        return out
    for x in (word_emb, pos_emb, type_emb):
        if not x.is_contiguous():
            raise ValueError("embedding tables must be contiguous")
    _embed_ln_kernel[(t,)](
        input_ids,
        positions,
        word_emb,
        pos_emb,
        type_emb,
        ln_w,
        ln_b,
        out,
        eps,
        HIDDEN=hidden,
        BLOCK_H=triton.next_power_of_2(hidden),
        num_warps=4,
        enable_fp_fusion=FP_FUSION,
    )
    return out


def add_layernorm(
    x: torch.Tensor, residual: torch.Tensor, ln_w: torch.Tensor, ln_b: torch.Tensor, eps: float
) -> torch.Tensor:
    """`LayerNorm(x + residual)` row by row, output in `x.dtype`."""
    check_device(x)
    if x.shape != residual.shape or not (x.is_contiguous() and residual.is_contiguous()):
        raise ValueError("x and residual must be contiguous and of the same shape")
    t, hidden = x.shape
    out = torch.empty_like(x)
    if t == 0:
        return out
    _add_ln_kernel[(t,)](
        x,
        residual,
        ln_w,
        ln_b,
        out,
        eps,
        HIDDEN=hidden,
        BLOCK_H=triton.next_power_of_2(hidden),
        num_warps=4,
        enable_fp_fusion=FP_FUSION,
    )
    return out
