"""GEMM + bias (+ erf-GELU): `C = A @ W^T + b` with `W` in PyTorch's `[out, in]` layout.

Batch invariance: each output tile is computed by one program, looping over K in fixed
BLOCK_K steps from 0 upwards (no split-K, no atomics). Tile sizes and launch options depend
only on the weight shape and dtype (`gemm_config`), never on M (the number of token rows),
and M is excluded from Triton's value specialisation, so every row of A follows the same
instructions whatever the batch. `gemm_bias_autotuned` is the same kernel under
`triton.autotune` keyed on (M, N, K): faster tiles per batch, but a row's bytes then depend
on the batch. It exists to measure what invariance costs and must not serve receipts.
"""

# Triton kernels take untyped (pointer / constexpr) parameters.
# mypy: disable-error-code="no-untyped-def,untyped-decorator"

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from worker.kernels.common import FP_FUSION, check_device, gelu_f32


@dataclass(frozen=True)
class GemmConfig:
    """Fixed launch configuration of the GEMM for one (weight shape, dtype)."""

    block_m: int
    block_n: int
    block_k: int
    num_warps: int
    num_stages: int


_HALF = GemmConfig(block_m=64, block_n=128, block_k=64, num_warps=4, num_stages=3)
_FP32 = GemmConfig(block_m=64, block_n=64, block_k=32, num_warps=4, num_stages=2)

# (N, K) of every weight of MiniLM: QKV, attention output, FFN up, FFN down.
_CONFIGS: dict[tuple[int, int, torch.dtype], GemmConfig] = {
    (n, k, dt): (_FP32 if dt == torch.float32 else _HALF)
    for (n, k) in ((1152, 384), (384, 384), (1536, 384), (384, 1536))
    for dt in (torch.float32, torch.float16, torch.bfloat16)
}


def gemm_config(n: int, k: int, dtype: torch.dtype) -> GemmConfig:
    """Tile sizes for a weight of shape `[n, k]`; a function of the weight alone."""
    cfg = _CONFIGS.get((n, k, dtype))
    if cfg is not None:
        return cfg
    return _FP32 if dtype == torch.float32 else _HALF


def _gemm_bias_body(
    a_ptr,
    w_ptr,
    bias_ptr,
    c_ptr,
    M,
    N,
    K,
    stride_am,
    stride_wn,
    stride_cm,
    APPLY_GELU: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    mask_m = offs_m < M
    mask_n = offs_n < N
    a_ptrs = a_ptr + offs_m[:, None].to(tl.int64) * stride_am + offs_k[None, :]
    w_ptrs = w_ptr + offs_n[None, :] * stride_wn + offs_k[:, None]
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        mask_k = (k0 + offs_k) < K
        a = tl.load(a_ptrs, mask=mask_m[:, None] & mask_k[None, :], other=0.0)
        w = tl.load(w_ptrs, mask=mask_k[:, None] & mask_n[None, :], other=0.0)
        acc = tl.dot(a, w, acc, input_precision=INPUT_PRECISION)
        a_ptrs += BLOCK_K
        w_ptrs += BLOCK_K
    bias = tl.load(bias_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)
    acc = acc + bias[None, :]
    if APPLY_GELU:
        acc = gelu_f32(acc)
    c_ptrs = c_ptr + offs_m[:, None].to(tl.int64) * stride_cm + offs_n[None, :]
    tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])


_gemm_bias_kernel = triton.jit(_gemm_bias_body, do_not_specialize=["M"])

_TUNE_CONFIGS = [
    triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk}, num_warps=w, num_stages=s)
    for (bm, bn, bk, w, s) in (
        (16, 64, 64, 2, 3),
        (32, 64, 64, 4, 3),
        (64, 64, 64, 4, 3),
        (64, 128, 64, 4, 3),
        (128, 64, 64, 4, 3),
        (128, 128, 64, 8, 3),
        (128, 128, 32, 8, 4),
        (128, 256, 64, 8, 3),
    )
]
_gemm_bias_tuned_kernel = triton.autotune(configs=_TUNE_CONFIGS, key=["M", "N", "K"])(triton.jit(_gemm_bias_body))


def _input_precision(dtype: torch.dtype) -> str:
    # fp32 means fp32: IEEE products, not TF32, so the fp32 runtime matches its name.
    return "ieee" if dtype == torch.float32 else "tf32"


def _check(a: torch.Tensor, w: torch.Tensor, bias: torch.Tensor) -> tuple[int, int, int]:
    check_device(a)
    if a.dim() != 2 or w.dim() != 2 or a.shape[1] != w.shape[1] or bias.shape != (w.shape[0],):
        raise ValueError(f"bad shapes a={tuple(a.shape)} w={tuple(w.shape)} b={tuple(bias.shape)}")
    if a.stride(1) != 1 or w.stride(1) != 1:
        raise ValueError("a and w must be row-major with unit column stride")
    if a.dtype != w.dtype:
        raise ValueError(f"a is {a.dtype} but w is {w.dtype}")
    return a.shape[0], w.shape[0], a.shape[1]


def gemm_bias(
    a: torch.Tensor,
    w: torch.Tensor,
    bias: torch.Tensor,
    *,
    gelu: bool = False,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """`a @ w.T + bias` (then erf-GELU if `gelu`), fp32 accumulation, output in `a.dtype`."""
    m, n, k = _check(a, w, bias)
    c = torch.empty((m, n), dtype=a.dtype, device=a.device) if out is None else out
    if m == 0:
        return c
    cfg = gemm_config(n, k, w.dtype)
    grid = (triton.cdiv(m, cfg.block_m), triton.cdiv(n, cfg.block_n))
    _gemm_bias_kernel[grid](
        a,
        w,
        bias,
        c,
        m,
        n,
        k,
        a.stride(0),
        w.stride(0),
        c.stride(0),
        APPLY_GELU=gelu,
        INPUT_PRECISION=_input_precision(a.dtype),
        BLOCK_M=cfg.block_m,
        BLOCK_N=cfg.block_n,
        BLOCK_K=cfg.block_k,
        num_warps=cfg.num_warps,
        num_stages=cfg.num_stages,
        enable_fp_fusion=FP_FUSION,
    )
    return c


def gemm_bias_autotuned(a: torch.Tensor, w: torch.Tensor, bias: torch.Tensor, *, gelu: bool = False) -> torch.Tensor:
    """Like `gemm_bias` with tiles autotuned per (M, N, K): NOT batch-invariant (benchmarks)."""
    m, n, k = _check(a, w, bias)
    c = torch.empty((m, n), dtype=a.dtype, device=a.device)
    if m == 0:
        return c

    def grid(meta: dict[str, int]) -> tuple[int, int]:
        return (triton.cdiv(m, meta["BLOCK_M"]), triton.cdiv(n, meta["BLOCK_N"]))

    _gemm_bias_tuned_kernel[grid](
        a,
        w,
        bias,
        c,
        m,
        n,
        k,
        a.stride(0),
        w.stride(0),
        c.stride(0),
        APPLY_GELU=gelu,
        INPUT_PRECISION=_input_precision(a.dtype),
        enable_fp_fusion=FP_FUSION,
    )
    return c
