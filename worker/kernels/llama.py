"""Triton kernels of the Llama forward (SmolLM2): fixed tiles, fixed splits, batch-invariant.

* `matmul`: `C = A @ W^T`, one program per output tile, K walked in fixed `BLOCK_K` steps from 0
  (no split-K, no atomics); tiles are constants and M is not specialised on, so every row of A
  follows the same instructions whatever the number of rows.
* `rms_norm`: one program per row, the whole row in one block.
* `rope`: one program per (token, head), adjacent pairs rotated with the token's table row.
* `swiglu`: one program per row: `silu(gate) * up`.
* `paged_attention`: one program per (query token, query head, key split). A split is
  `SPLIT` consecutive key positions read through the sequence's page table; a program writes
  its split's running max, sum and weighted values, and `_combine` merges the splits of a query
  in increasing order. The number of splits and every reduction are a function of the query's
  position alone, never of the batch or of how its prompt was chunked.

Importing this module imports Triton; under `TRITON_INTERPRET=1` (set before the import) the
kernels run on CPU tensors (fp32).
"""

# Triton kernels take untyped (pointer / constexpr) parameters.
# mypy: disable-error-code="no-untyped-def,untyped-decorator"

from __future__ import annotations

import torch
import triton
import triton.language as tl

from worker.kernels.common import FP_FUSION, check_device

BLOCK_M = 32
BLOCK_N = 64
BLOCK_K = 32
SPLIT = 64
"""Key positions per attention split. Part of the numerics."""


@triton.jit(do_not_specialize=["M"])
def _matmul_kernel(a_ptr, w_ptr, c_ptr, M, N, K, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    mask_m = offs_m < M
    mask_n = offs_n < N
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        mask_k = (k0 + offs_k) < K
        a = tl.load(
            a_ptr + offs_m[:, None].to(tl.int64) * K + k0 + offs_k[None, :],
            mask=mask_m[:, None] & mask_k[None, :],
            other=0.0,
        )
        w = tl.load(
            w_ptr + offs_n[None, :].to(tl.int64) * K + k0 + offs_k[:, None],
            mask=mask_k[:, None] & mask_n[None, :],
            other=0.0,
        )
        acc = tl.dot(a, w, acc, input_precision="ieee")
    c_ptrs = c_ptr + offs_m[:, None].to(tl.int64) * N + offs_n[None, :]
    tl.store(c_ptrs, acc, mask=mask_m[:, None] & mask_n[None, :])


def matmul(a: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """`a @ w.T` in fp32 (IEEE products), `a` `[M, K]`, `w` `[N, K]`, both contiguous."""
    check_device(a)
    if a.dim() != 2 or w.dim() != 2 or a.shape[1] != w.shape[1] or not (a.is_contiguous() and w.is_contiguous()):
        raise ValueError(f"bad operands a={tuple(a.shape)} w={tuple(w.shape)}")
    m, k = a.shape
    n = w.shape[0]
    c = torch.empty((m, n), dtype=torch.float32, device=a.device)
    if m == 0:
        return c
    grid = (triton.cdiv(m, BLOCK_M), triton.cdiv(n, BLOCK_N))
    _matmul_kernel[grid](
        a, w, c, m, n, k, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K, num_warps=4, enable_fp_fusion=FP_FUSION
    )
    return c


@triton.jit
def _rms_norm_kernel(x_ptr, w_ptr, out_ptr, eps, HIDDEN: tl.constexpr, BLOCK_H: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK_H)
    mask = offs < HIDDEN
    x = tl.load(x_ptr + row * HIDDEN + offs, mask=mask, other=0.0)
    ms = tl.sum(x * x, axis=0) / HIDDEN
    w = tl.load(w_ptr + offs, mask=mask, other=0.0)
    y = w * (x * (1.0 / tl.sqrt_rn(ms + eps)))
    tl.store(out_ptr + row * HIDDEN + offs, y, mask=mask)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """`weight * (x * rsqrt(mean(x^2) + eps))` per row of a contiguous `[M, H]` fp32 tensor."""
    check_device(x)
    m, h = x.shape
    out = torch.empty_like(x)
    if m:
        _rms_norm_kernel[(m,)](
            x, weight, out, eps, HIDDEN=h, BLOCK_H=triton.next_power_of_2(h), num_warps=4, enable_fp_fusion=FP_FUSION
        )
    return out


@triton.jit
def _rope_kernel(x_ptr, pos_ptr, cos_ptr, sin_ptr, row_stride, HALF: tl.constexpr, BLOCK: tl.constexpr):
    tok = tl.program_id(0).to(tl.int64)
    head = tl.program_id(1)
    offs = tl.arange(0, BLOCK)
    mask = offs < HALF
    pos = tl.load(pos_ptr + tok).to(tl.int64)
    base = x_ptr + tok * row_stride + head * (2 * HALF)
    x0 = tl.load(base + 2 * offs, mask=mask, other=0.0)
    x1 = tl.load(base + 2 * offs + 1, mask=mask, other=0.0)
    c = tl.load(cos_ptr + pos * HALF + offs, mask=mask, other=0.0)
    s = tl.load(sin_ptr + pos * HALF + offs, mask=mask, other=0.0)
    tl.store(base + 2 * offs, x0 * c - x1 * s, mask=mask)
    tl.store(base + 2 * offs + 1, x1 * c + x0 * s, mask=mask)


def rope_(x: torch.Tensor, heads: int, positions: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> None:
    """Rotate, in place, the first `heads * head_dim` columns of each row of `x` `[T, >=heads*D]`."""
    check_device(x)
    t = x.shape[0]
    half = cos.shape[1]
    if t:
        _rope_kernel[(t, heads)](
            x,
            positions,
            cos,
            sin,
            x.stride(0),
            HALF=half,
            BLOCK=triton.next_power_of_2(half),
            num_warps=1,
            enable_fp_fusion=False,
        )


@triton.jit
def _swiglu_kernel(gu_ptr, out_ptr, FFN: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    mask = offs < FFN
    g = tl.load(gu_ptr + row * (2 * FFN) + offs, mask=mask, other=0.0)
    u = tl.load(gu_ptr + row * (2 * FFN) + FFN + offs, mask=mask, other=0.0)
    a = g / (1.0 + tl.exp(-g)) * u
    tl.store(out_ptr + row * FFN + offs, a, mask=mask)


def swiglu(gate_up: torch.Tensor) -> torch.Tensor:
    """`silu(gate) * up` of a `[M, 2F]` tensor holding gate columns then up columns: `[M, F]`."""
    check_device(gate_up)
    m, two_f = gate_up.shape
    f = two_f // 2
    out = torch.empty((m, f), dtype=torch.float32, device=gate_up.device)
    if m:
        _swiglu_kernel[(m,)](
            gate_up, out, FFN=f, BLOCK=triton.next_power_of_2(f), num_warps=4, enable_fp_fusion=FP_FUSION
        )
    return out


@triton.jit
def _attention_split_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    tables_ptr,
    tok_seq_ptr,
    tok_pos_ptr,
    m_ptr,
    l_ptr,
    acc_ptr,
    q_stride,
    table_stride,
    kv_head_stride,
    max_splits,
    scale,
    NUM_HEADS: tl.constexpr,
    GROUP: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    PAGE: tl.constexpr,
    SPLIT: tl.constexpr,
):
    tok = tl.program_id(0).to(tl.int64)
    head = tl.program_id(1)
    split = tl.program_id(2)
    pos = tl.load(tok_pos_ptr + tok)
    if split * SPLIT > pos:
        return
    seq = tl.load(tok_seq_ptr + tok).to(tl.int64)
    kvh = head // GROUP
    offs_d = tl.arange(0, HEAD_DIM)
    offs_n = split * SPLIT + tl.arange(0, SPLIT)
    mask_n = offs_n <= pos
    q = tl.load(q_ptr + tok * q_stride + head * HEAD_DIM + offs_d)
    page = tl.load(tables_ptr + seq * table_stride + offs_n // PAGE, mask=mask_n, other=0).to(tl.int64)
    slot = page * PAGE + offs_n % PAGE
    kv_off = kvh * kv_head_stride + slot[:, None] * HEAD_DIM + offs_d[None, :]
    k = tl.load(k_ptr + kv_off, mask=mask_n[:, None], other=0.0)
    s = tl.sum(q[None, :] * k, axis=1) * scale
    s = tl.where(mask_n, s, float("-inf"))
    m = tl.max(s, axis=0)
    p = tl.exp(s - m)
    l_sum = tl.sum(p, axis=0)
    v = tl.load(v_ptr + kv_off, mask=mask_n[:, None], other=0.0)
    acc = tl.sum(p[:, None] * v, axis=0)
    part = (tok * NUM_HEADS + head) * max_splits + split
    tl.store(m_ptr + part, m)
    tl.store(l_ptr + part, l_sum)
    tl.store(acc_ptr + part * HEAD_DIM + offs_d, acc)


@triton.jit
def _combine_kernel(
    m_ptr,
    l_ptr,
    acc_ptr,
    tok_pos_ptr,
    out_ptr,
    max_splits,
    NUM_HEADS: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    SPLIT: tl.constexpr,
):
    tok = tl.program_id(0).to(tl.int64)
    head = tl.program_id(1)
    pos = tl.load(tok_pos_ptr + tok)
    n_splits = pos // SPLIT + 1
    base = (tok * NUM_HEADS + head) * max_splits
    offs_d = tl.arange(0, HEAD_DIM)
    m_all = tl.load(m_ptr + base)
    for j in range(1, n_splits):
        m_all = tl.maximum(m_all, tl.load(m_ptr + base + j))
    l_all = 0.0
    acc = tl.zeros((HEAD_DIM,), dtype=tl.float32)
    for j in range(0, n_splits):
        w = tl.exp(tl.load(m_ptr + base + j) - m_all)
        l_all += w * tl.load(l_ptr + base + j)
        acc += w * tl.load(acc_ptr + (base + j) * HEAD_DIM + offs_d)
    tl.store(out_ptr + tok * NUM_HEADS * HEAD_DIM + head * HEAD_DIM + offs_d, acc / l_all)


def paged_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    tables: torch.Tensor,
    tok_seq: torch.Tensor,
    tok_pos: torch.Tensor,
    *,
    num_heads: int,
    num_kv_heads: int,
    head_dim: int,
) -> torch.Tensor:
    """Causal attention of each query token over its own sequence's cached keys `0 .. pos`.

    `q` `[T, >= H*D]` (row stride free); `k_cache`/`v_cache` one layer `[Hkv, pages, page, D]`;
    `tables` int32 `[S, max_pages]` page tables; `tok_seq`/`tok_pos` int32 `[T]`: each token's
    table row and position. Returns `[T, H*D]`.
    """
    check_device(q)
    t = q.shape[0]
    out = torch.empty((t, num_heads * head_dim), dtype=torch.float32, device=q.device)
    if t == 0:
        return out
    page = k_cache.shape[2]
    max_splits = int(tok_pos.max().item()) // SPLIT + 1
    parts = t * num_heads * max_splits
    m = torch.empty(parts, dtype=torch.float32, device=q.device)
    lsum = torch.empty(parts, dtype=torch.float32, device=q.device)
    acc = torch.empty((parts, head_dim), dtype=torch.float32, device=q.device)
    _attention_split_kernel[(t, num_heads, max_splits)](
        q, k_cache, v_cache, tables, tok_seq, tok_pos, m, lsum, acc,
        q.stride(0), tables.stride(0), k_cache.stride(0), max_splits, head_dim**-0.5,
        NUM_HEADS=num_heads, GROUP=num_heads // num_kv_heads, HEAD_DIM=head_dim, PAGE=page, SPLIT=SPLIT,
        num_warps=4, enable_fp_fusion=FP_FUSION,
    )  # fmt: skip
    _combine_kernel[(t, num_heads)](
        m, lsum, acc, tok_pos, out, max_splits, NUM_HEADS=num_heads, HEAD_DIM=head_dim, SPLIT=SPLIT, num_warps=1,
        enable_fp_fusion=FP_FUSION,
    )  # fmt: skip
    return out
