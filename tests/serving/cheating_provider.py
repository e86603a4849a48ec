"""Test-only launcher: ``python -m worker.serving`` with an encoder that returns wrong embeddings
(every value nudged), so its answers and work receipts are self-consistent but not what the model
computes. Production code has no such switch; only this file swaps the encoder in."""

from __future__ import annotations

from typing import Any

import numpy as np

import worker.node.compute as compute

_real = compute.shared_encoder


class CheatingEncoder:
    """The real encoder (tokenizer, runtime hash) with its embeddings made up."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def encode(self, texts: list[str], *args: Any, **kwargs: Any) -> Any:
        out = np.asarray(self._inner.encode(texts, *args, **kwargs), dtype=np.float32)
        return (out + np.float32(0.001)).astype(np.float32)


def cheating_shared_encoder(*args: Any, **kwargs: Any) -> Any:
    return CheatingEncoder(_real(*args, **kwargs))


compute.shared_encoder = cheating_shared_encoder  # type: ignore[assignment]

if __name__ == "__main__":
    from worker.serving.__main__ import main

    main([])
