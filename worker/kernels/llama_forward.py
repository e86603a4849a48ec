"""The Llama forward through the Triton kernels over the same paged KV cache as the torch path.

Same interface as `worker.model.llm.LlamaForward` (`__call__(chunks, cache) -> logits`), so the
engine runs on either. Every row-wise op is one program per row and the GEMM has fixed tiles,
so nothing needs padding; attention uses the fixed key split of `paged_attention`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from worker.kernels import llama as K
from worker.model.errors import InvalidInputError
from worker.model.llm.kv_cache import PagedKVCache
from worker.model.llm.torch_path import SeqChunk, rope_tables
from worker.model.llm.weights import LlamaWeights


class TritonLlamaForward:
    """Callable `(chunks, cache) -> fp32 logits [n, vocab]`, every op a Triton kernel."""

    def __init__(self, weights: LlamaWeights) -> None:
        self.weights = weights
        self.config = weights.config
        cos, sin = rope_tables(self.config)
        self._cos = cos.contiguous().to(weights.device)
        self._sin = sin.contiguous().to(weights.device)

    @torch.inference_mode()
    def __call__(self, chunks: Sequence[SeqChunk], cache: PagedKVCache) -> torch.Tensor:
        c = self.config
        w = self.weights
        dev = w.device
        for ch in chunks:
            if ch.end > c.max_positions or cache.pages_for(ch.end) > len(ch.table):
                raise InvalidInputError("chunk beyond the context or its page table")
        ids = torch.tensor([t for ch in chunks for t in ch.token_ids], dtype=torch.int64, device=dev)
        pos = torch.tensor([p for ch in chunks for p in ch.positions], dtype=torch.int32, device=dev)
        seq = torch.tensor([i for i, ch in enumerate(chunks) for _ in ch.token_ids], dtype=torch.int32, device=dev)
        width = max(len(ch.table) for ch in chunks)
        tables = torch.zeros((len(chunks), width), dtype=torch.int32, device=dev)
        for i, ch in enumerate(chunks):
            tables[i, : len(ch.table)] = torch.tensor(list(ch.table), dtype=torch.int32)
        slots = torch.tensor(
            [s for ch in chunks for s in cache.slots(ch.table, ch.start, len(ch.token_ids))],
            dtype=torch.int64,
            device=dev,
        )
        h = w.embed[ids].contiguous()
        t = h.shape[0]
        qs, kvs = c.q_size, c.kv_size
        for li, layer in enumerate(w.layers):
            qkv = K.matmul(K.rms_norm(h, layer.attn_norm, c.rms_eps), layer.qkv)
            K.rope_(qkv, c.num_heads, pos, self._cos, self._sin)
            K.rope_(qkv[:, qs:], c.num_kv_heads, pos, self._cos, self._sin)
            k = qkv[:, qs : qs + kvs].reshape(t, c.num_kv_heads, c.head_dim)
            v = qkv[:, qs + kvs :].reshape(t, c.num_kv_heads, c.head_dim)
            cache.write(li, slots, k, v)  # new keys and values first, then attention
            ctx = K.paged_attention(
                qkv,
                cache.k[li],
                cache.v[li],
                tables,
                seq,
                pos,
                num_heads=c.num_heads,
                num_kv_heads=c.num_kv_heads,
                head_dim=c.head_dim,
            )
            h = h + K.matmul(ctx, layer.out)
            a = K.swiglu(K.matmul(K.rms_norm(h, layer.ffn_norm, c.rms_eps), layer.gate_up))
            h = h + K.matmul(a, layer.down)
        idx: list[int] = []
        row = 0
        for ch in chunks:
            idx.extend(row + i for i in ch.logit_rows())
            row += len(ch.token_ids)
        sel = h[torch.tensor(idx, dtype=torch.int64, device=dev)].contiguous()
        return K.matmul(K.rms_norm(sel, w.final_norm, c.rms_eps), w.embed)
