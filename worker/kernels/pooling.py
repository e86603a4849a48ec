"""Masked mean pooling + L2 normalisation over packed sequences.

One program per sequence sums its own rows in fixed BLOCK_T steps from its first token, so
the reduction depends only on the sequence. Output is fp32.
"""

# Triton kernels take untyped (pointer / constexpr) parameters.
# mypy: disable-error-code="no-untyped-def,untyped-decorator"

from __future__ import annotations

import torch
import triton
import triton.language as tl

from worker.kernels.common import FP_FUSION, check_device

BLOCK_T = 16


@triton.jit
def _mean_pool_l2_kernel(
    h_ptr,
    cu_seqlens_ptr,
    out_ptr,
    stride_h,
    HIDDEN: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_T: tl.constexpr,
):
    seq = tl.program_id(0)
    start = tl.load(cu_seqlens_ptr + seq)
    end = tl.load(cu_seqlens_ptr + seq + 1)
    offs_h = tl.arange(0, BLOCK_H)
    offs_t = tl.arange(0, BLOCK_T)
    mask_h = offs_h < HIDDEN
    acc = tl.zeros((BLOCK_H,), dtype=tl.float32)
    for t0 in range(start, end, BLOCK_T):
        rows = t0 + offs_t
        mask = (rows < end)[:, None] & mask_h[None, :]
        x = tl.load(h_ptr + rows.to(tl.int64)[:, None] * stride_h + offs_h[None, :], mask=mask, other=0.0)
        acc += tl.sum(x.to(tl.float32), axis=0)
    mean = acc / (end - start).to(tl.float32)
    norm = tl.sqrt_rn(tl.sum(mean * mean, axis=0))
    y = mean / tl.maximum(norm, 1e-12)
    tl.store(out_ptr + seq.to(tl.int64) * HIDDEN + offs_h, y, mask=mask_h)


def mean_pool_l2(h: torch.Tensor, cu_seqlens: torch.Tensor) -> torch.Tensor:
    """Mean of each sequence's token rows, L2-normalised: `[T, H] -> [B, H]` float32."""
    check_device(h)
    b = cu_seqlens.shape[0] - 1
    hidden = h.shape[1]
    out = torch.empty((b, hidden), dtype=torch.float32, device=h.device)
    if b == 0:
        return out
    if h.stride(1) != 1:
        raise ValueError("h must have unit column stride")
    _mean_pool_l2_kernel[(b,)](
        h,
        cu_seqlens,
        out,
        h.stride(0),
        HIDDEN=hidden,
        BLOCK_H=triton.next_power_of_2(hidden),
        BLOCK_T=BLOCK_T,
        num_warps=4,
        enable_fp_fusion=FP_FUSION,
    )
    return out
