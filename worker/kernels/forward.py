"""The whole MiniLM forward through the Triton kernels, on packed (unpadded) tokens."""

from __future__ import annotations

from collections.abc import Callable

import torch

from worker.kernels.attention import attention_varlen
from worker.kernels.gemm import gemm_bias, gemm_bias_autotuned
from worker.kernels.layernorm import add_layernorm, embedding_layernorm
from worker.kernels.pooling import mean_pool_l2
from worker.model.packing import PackedBatch
from worker.model.weights import LAYER_NORM_EPS, NUM_HEADS, MiniLMWeights


class TritonForward:
    """Callable `PackedBatch -> [B, HIDDEN] float32` embeddings, every op a Triton kernel.

    `autotuned_gemm=True` swaps in the autotuned GEMM, which is not batch-invariant; it exists
    only to measure what the fixed tiles cost (bench/kernels.py).
    """

    def __init__(self, weights: MiniLMWeights, *, autotuned_gemm: bool = False) -> None:
        self.weights = weights
        self._gemm: Callable[..., torch.Tensor] = gemm_bias_autotuned if autotuned_gemm else gemm_bias

    @torch.inference_mode()
    def __call__(self, batch: PackedBatch) -> torch.Tensor:
        """Embed every sequence of `batch` (weights' device; CPU only when interpreting)."""
        w = self.weights
        dev = w.device
        ids = batch.input_ids.to(dev)
        positions = batch.positions.to(dev)
        cu = torch.tensor(batch.cu_seqlens, dtype=torch.int32, device=dev)
        h = embedding_layernorm(
            ids,
            positions,
            w.word_emb,
            w.pos_emb,
            w.type_emb[0],
            w.emb_ln_w,
            w.emb_ln_b,
            LAYER_NORM_EPS,
        )
        for lw in w.layers:
            qkv = self._gemm(h, lw.qkv_w, lw.qkv_b)
            ctx = attention_varlen(qkv, cu, batch.max_len, NUM_HEADS)
            a = self._gemm(ctx, lw.attn_out_w, lw.attn_out_b)
            x = add_layernorm(a, h, lw.attn_ln_w, lw.attn_ln_b, LAYER_NORM_EPS)
            u = self._gemm(x, lw.ffn_up_w, lw.ffn_up_b, gelu=True)
            d = self._gemm(u, lw.ffn_down_w, lw.ffn_down_b)
            h = add_layernorm(d, x, lw.ffn_ln_w, lw.ffn_ln_b, LAYER_NORM_EPS)
        return mean_pool_l2(h, cu)
