"""Non-causal multi-head attention over packed variable-length sequences (flash style).

Grid: (query block, sequence, head). A program reads its sequence's bounds from
`cu_seqlens` and walks that sequence's keys in fixed BLOCK_N steps from the first key, with an
online softmax. Keys past the sequence's end (only in its last block) get a score of -inf, so
their probability is exactly 0 and they add exact zeros. The loop bounds, the blocks and the
reduction order are all functions of the sequence's own length: a sequence's output does not
depend on its batch, its position in the batch or padding.
"""

# Triton kernels take untyped (pointer / constexpr) parameters.
# mypy: disable-error-code="no-untyped-def,untyped-decorator"

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from worker.kernels.common import FP_FUSION, check_device

BLOCK_M = 64
BLOCK_N = 64
_LOG2E = 1.4426950408889634


@triton.jit
def _attention_kernel(
    qkv_ptr,
    out_ptr,
    cu_seqlens_ptr,
    qk_scale,
    stride_qkv,
    stride_out,
    HIDDEN: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    pid_m = tl.program_id(0)
    seq = tl.program_id(1)
    head = tl.program_id(2)
    start = tl.load(cu_seqlens_ptr + seq)
    end = tl.load(cu_seqlens_ptr + seq + 1)
    length = end - start
    if pid_m * BLOCK_M >= length:
        return
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    mask_m = offs_m < length
    rows_q = (start + offs_m).to(tl.int64)
    q = tl.load(
        qkv_ptr + rows_q[:, None] * stride_qkv + head * HEAD_DIM + offs_d[None, :],
        mask=mask_m[:, None],
        other=0.0,
    )
    m_i = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_M, HEAD_DIM), dtype=tl.float32)
    k_base = qkv_ptr + HIDDEN + head * HEAD_DIM
    v_base = qkv_ptr + 2 * HIDDEN + head * HEAD_DIM
    for n0 in range(0, length, BLOCK_N):
        cols = n0 + offs_n
        mask_n = cols < length
        rows_k = (start + cols).to(tl.int64)
        k = tl.load(
            k_base + rows_k[None, :] * stride_qkv + offs_d[:, None],
            mask=mask_n[None, :],
            other=0.0,
        )
        s = tl.dot(q, k, input_precision=INPUT_PRECISION) * qk_scale
        s = tl.where(mask_n[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        v = tl.load(
            v_base + rows_k[:, None] * stride_qkv + offs_d[None, :],
            mask=mask_n[:, None],
            other=0.0,
        )
        acc = acc * alpha[:, None]
        acc = tl.dot(p.to(v.dtype), v, acc, input_precision=INPUT_PRECISION)
        m_i = m_new
    acc = acc / l_i[:, None]
    o_ptrs = out_ptr + rows_q[:, None] * stride_out + head * HEAD_DIM + offs_d[None, :]
    tl.store(o_ptrs, acc.to(out_ptr.dtype.element_ty), mask=mask_m[:, None])


def attention_varlen(qkv: torch.Tensor, cu_seqlens: torch.Tensor, max_len: int, num_heads: int) -> torch.Tensor:
    """Softmax(q k^T / sqrt(d)) v per sequence and head: `[T, 3*H] -> [T, H]`.

    `qkv` rows hold [query | key | value] of each packed token; `cu_seqlens` is int32 `[B+1]`.
    """
    check_device(qkv)
    t, three_h = qkv.shape
    hidden = three_h // 3
    head_dim = hidden // num_heads
    if qkv.stride(1) != 1 or three_h != 3 * hidden or head_dim * num_heads != hidden:
        raise ValueError(f"bad qkv shape {tuple(qkv.shape)} for {num_heads} heads")
    out = torch.empty((t, hidden), dtype=qkv.dtype, device=qkv.device)
    b = cu_seqlens.shape[0] - 1
    if t == 0 or b == 0:
        return out
    grid = (triton.cdiv(max_len, BLOCK_M), b, num_heads)
    _attention_kernel[grid](
        qkv,
        out,
        cu_seqlens,
        _LOG2E / math.sqrt(head_dim),
        qkv.stride(0),
        out.stride(0),
        HIDDEN=hidden,
        HEAD_DIM=head_dim,
        INPUT_PRECISION="ieee" if qkv.dtype == torch.float32 else "tf32",
        BLOCK_M=BLOCK_M,
        BLOCK_N=BLOCK_N,
        num_warps=4,
        num_stages=2,
        enable_fp_fusion=FP_FUSION,
    )
    return out
