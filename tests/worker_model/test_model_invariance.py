"""Batch invariance of the torch path: a sentence's bytes do not depend on its batch."""

from __future__ import annotations

import random

import pytest
import torch

from worker.model._mkl import strict_cnr_active
from worker.model.packing import pack
from worker.model.torch_path import ROW_BLOCK, TorchForward
from worker.model.weights import MiniLMTokenizer

from .sentences import SENTENCES

BATCH_SIZES = [2, 3, 4, 5, 7, 8, 13, 16, 17, 31, 32, 33, 48, 63, 64]


@pytest.fixture(scope="module")
def corpus(tokenizer: MiniLMTokenizer) -> list[list[int]]:
    """64 inputs: the varied sentences, topped up with random word salads."""
    rng = random.Random(7)
    words = ["the", "of", "fox", "🙂", "日本", "naïve", "SELECT", "{x}", "42", "state-of-the-art", "zürich"]
    extra = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 40))) for _ in range(64 - len(SENTENCES))]
    return tokenizer.encode_ids(SENTENCES + extra)


@pytest.fixture(scope="module")
def alone(torch_forward: TorchForward, corpus: list[list[int]]) -> list[bytes]:
    return [torch_forward(pack([ids])).numpy()[0].tobytes() for ids in corpus]


def test_torch_path_output_bytes_are_identical_alone_and_in_batches_of_2_to_64(
    torch_forward: TorchForward, corpus: list[list[int]], alone: list[bytes]
) -> None:
    rng = random.Random(11)
    for size in BATCH_SIZES:
        idx = rng.sample(range(len(corpus)), size)
        out = torch_forward(pack([corpus[i] for i in idx])).numpy()
        for row, i in enumerate(idx):
            assert out[row].tobytes() == alone[i], f"sentence {i} in a batch of {size}"


def test_torch_path_output_bytes_do_not_depend_on_order_or_duplicates(
    torch_forward: TorchForward, corpus: list[list[int]], alone: list[bytes]
) -> None:
    rng = random.Random(12)
    idx = list(range(len(corpus))) + [0, 0, 5]
    for _ in range(2):
        rng.shuffle(idx)
        out = torch_forward(pack([corpus[i] for i in idx])).numpy()
        assert [out[row].tobytes() for row in range(len(idx))] == [alone[i] for i in idx]


def test_torch_path_output_bytes_do_not_depend_on_neighbour_lengths_or_row_block_offset(
    torch_forward: TorchForward, corpus: list[list[int]], alone: list[bytes]
) -> None:
    # Put sentence 4 at every offset modulo the row block by prepending fillers of each length.
    target = 4
    for pad in range(1, ROW_BLOCK + 1, 7):
        filler = [101] + [1996] * (pad - 1) if pad > 1 else [101]
        out = torch_forward(pack([filler, corpus[target], [101, 2000, 102]])).numpy()
        assert out[1].tobytes() == alone[target], f"filler of {pad} tokens"


def test_torch_path_output_bytes_do_not_depend_on_the_thread_count(
    torch_forward: TorchForward, corpus: list[list[int]], alone: list[bytes]
) -> None:
    if not strict_cnr_active():
        pytest.skip("MKL strict CNR mode unavailable: GEMMs may depend on threads")
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        out = torch_forward(pack(corpus[:16])).numpy()
    finally:
        torch.set_num_threads(before)
    assert [r.tobytes() for r in out] == alone[:16]
