"""Test-only launcher: ``python -m worker.serving`` that serves a different model under SmolLM2's
registered id: the real weights with their last :data:`DROPPED` decoder layers cut off (a
"truncated model", cheaper to run). Its answers and work receipts are self-consistent (same
tokenizer, runtime hash and model id) but not what SmolLM2 computes. Production code has no such
switch; only this file swaps the weights."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import worker.model.llm as llm

#: decoder layers dropped from the end (SmolLM2 has 30)
DROPPED = 10
_real = llm.load_weights


def truncated_weights(*args: Any, **kwargs: Any) -> Any:
    w = _real(*args, **kwargs)
    return replace(w, layers=w.layers[: len(w.layers) - DROPPED])


llm.load_weights = truncated_weights  # type: ignore[assignment]

if __name__ == "__main__":
    from worker.serving.__main__ import main

    main([])
