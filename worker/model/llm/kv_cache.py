"""Paged key/value cache: fixed-size pages in one tensor per layer, a free list, page tables.

Keys and values of every layer live in `[kv_heads, num_pages, page_size, head_dim]` tensors
(heads outermost, so a gather of a sequence's pages is already in attention layout).
A sequence owns a list of pages (its page table); the token at position `p` is stored in
page `table[p // page_size]` at slot `p % page_size`. Pages are handed out lowest id first
and returned when a sequence finishes. Which pages a sequence gets never changes a number it
computes: attention gathers the sequence's keys by position, in position order.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

import torch

from worker.model.errors import ModelError
from worker.model.llm.weights import LlamaConfig


class CacheFullError(ModelError, RuntimeError):
    """Not enough free pages for a request."""


class PagedKVCache:
    """The key/value pages of every layer and their allocator."""

    def __init__(
        self,
        config: LlamaConfig,
        num_pages: int,
        page_size: int = 16,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if num_pages < 1 or page_size < 1:
            raise ValueError("num_pages and page_size must be positive")
        self.config = config
        self.num_pages = num_pages
        self.page_size = page_size
        shape = (config.num_layers, config.num_kv_heads, num_pages, page_size, config.head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self._free = list(range(num_pages))
        heapq.heapify(self._free)

    @property
    def free_pages(self) -> int:
        return len(self._free)

    def pages_for(self, num_tokens: int) -> int:
        """Pages needed to hold `num_tokens` positions."""
        return -(-num_tokens // self.page_size)

    def allocate(self, n: int) -> list[int]:
        """Take `n` free pages (lowest ids first)."""
        if n > len(self._free):
            raise CacheFullError(f"need {n} pages, {len(self._free)} free")
        return [heapq.heappop(self._free) for _ in range(n)]

    def release(self, pages: Sequence[int]) -> None:
        """Return pages to the free list."""
        for p in pages:
            heapq.heappush(self._free, p)

    def slots(self, table: Sequence[int], start: int, count: int) -> list[int]:
        """Flat slot indices (`page * page_size + offset`) of positions `start .. start+count-1`."""
        ps = self.page_size
        return [table[p // ps] * ps + p % ps for p in range(start, start + count)]

    def write(self, layer: int, slots: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store keys and values `[n, kv_heads, head_dim]` at flat `slots` of `layer`."""
        c = self.config
        flat = (c.num_kv_heads, self.num_pages * self.page_size, c.head_dim)
        self.k[layer].view(flat).index_copy_(1, slots, k.permute(1, 0, 2))
        self.v[layer].view(flat).index_copy_(1, slots, v.permute(1, 0, 2))

    def gather(self, layer: int, table: Sequence[int], length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of positions `0 .. length-1`, each `[kv_heads, length, head_dim]`.

        Views of fresh contiguous copies of the sequence's whole pages: position `p` is row `p`.
        """
        n_pages = self.pages_for(length)
        idx = torch.tensor(table[:n_pages], dtype=torch.int64, device=self.k.device)
        c = self.config
        shape = (c.num_kv_heads, n_pages * self.page_size, c.head_dim)
        k = torch.index_select(self.k[layer], 1, idx).view(shape)[:, :length]
        v = torch.index_select(self.v[layer], 1, idx).view(shape)[:, :length]
        return k, v
