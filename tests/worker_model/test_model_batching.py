"""Token-budgeted batching: the plan and the dynamic batcher."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.model.batching import (
    BatcherStoppedError,
    DynamicBatcher,
    QueuedItem,
    embedding_batcher,
    padded_tokens,
    plan_batches,
)
from worker.model.errors import InvalidInputError


def items_of(lengths: Sequence[int]) -> list[QueuedItem]:
    return [QueuedItem(f"id{i}", f"text {i}", n) for i, n in enumerate(lengths)]


def word_count(texts: Sequence[str]) -> list[int]:
    return [len(t.split()) for t in texts]


@settings(max_examples=200, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 256), max_size=200),
    max_tokens=st.integers(1, 4096),
    max_batch_size=st.integers(1, 64),
)
def test_plan_keeps_every_item_once_and_respects_both_limits(
    lengths: list[int], max_tokens: int, max_batch_size: int
) -> None:
    items = items_of(lengths)
    plan = plan_batches(items, max_tokens=max_tokens, max_batch_size=max_batch_size)
    flat = [i for batch in plan for i in batch]
    assert sorted(i.id for i in flat) == sorted(i.id for i in items)
    for batch in plan:
        assert 1 <= len(batch) <= max_batch_size
        assert padded_tokens(batch) <= max_tokens or len(batch) == 1
    # Batches are grouped by length: sorted within and across batches.
    assert [i.n_tokens for i in flat] == sorted(lengths)


def test_plan_groups_similar_lengths_and_fills_the_budget() -> None:
    plan = plan_batches(items_of([10, 200, 12, 11, 190]), max_tokens=400, max_batch_size=8)
    assert [[i.n_tokens for i in b] for b in plan] == [[10, 11, 12], [190, 200]]


def test_plan_puts_an_oversized_item_in_a_batch_of_its_own() -> None:
    plan = plan_batches(items_of([5, 300, 6]), max_tokens=100, max_batch_size=8)
    assert [[i.n_tokens for i in b] for b in plan] == [[5, 6], [300]]


def test_plan_rejects_non_positive_limits() -> None:
    with pytest.raises(InvalidInputError):
        plan_batches([], max_tokens=0, max_batch_size=1)


def test_batcher_flushes_when_the_wait_expires() -> None:
    seen: list[list[str]] = []

    def process(items: list[QueuedItem]) -> list[str]:
        seen.append([i.id for i in items])
        return [i.text.upper() for i in items]

    with DynamicBatcher(process, word_count, max_tokens=10_000, max_wait_s=0.05) as batcher:
        start = time.monotonic()
        futures = [batcher.submit(f"j{i}", f"text {i}") for i in range(3)]
        results = [f.result(timeout=5) for f in futures]
        elapsed = time.monotonic() - start
    assert results == ["TEXT 0", "TEXT 1", "TEXT 2"]
    assert seen == [["j0", "j1", "j2"]]
    assert elapsed >= 0.04


def test_batcher_flushes_at_once_when_the_batch_size_is_reached() -> None:
    sizes: list[int] = []

    def process(items: list[QueuedItem]) -> list[int]:
        sizes.append(len(items))
        return [i.n_tokens for i in items]

    with DynamicBatcher(process, word_count, max_batch_size=4, max_wait_s=30.0) as batcher:
        start = time.monotonic()
        futures = [batcher.submit(f"j{i}", "a b") for i in range(4)]
        assert [f.result(timeout=5) for f in futures] == [2, 2, 2, 2]
        assert time.monotonic() - start < 5
    assert sizes == [4]


def test_batcher_flushes_when_the_token_budget_is_full() -> None:
    gate = threading.Event()

    def process(items: list[QueuedItem]) -> list[int]:
        gate.set()
        return [0] * len(items)

    with DynamicBatcher(process, word_count, max_tokens=6, max_wait_s=30.0) as batcher:
        batcher.submit("a", "one two three")
        fut = batcher.submit("b", "four five six")  # 2 x 3 padded tokens = budget
        assert fut.result(timeout=5) == 0
    assert gate.is_set()


def test_batcher_delivers_process_errors_to_every_waiter() -> None:
    def process(items: list[QueuedItem]) -> list[int]:
        raise RuntimeError("gpu on fire")

    with DynamicBatcher(process, word_count, max_wait_s=0.0) as batcher:
        fut = batcher.submit("a", "x")
        with pytest.raises(RuntimeError, match="gpu on fire"):
            fut.result(timeout=5)
        assert batcher.healthy()


def test_batcher_drains_queued_items_on_stop_and_then_refuses_new_ones() -> None:
    batcher: DynamicBatcher[str] = DynamicBatcher(lambda items: [i.id for i in items], word_count, max_wait_s=60.0)
    batcher.start()
    fut = batcher.submit("late", "queued before stop")
    batcher.stop(timeout=5)
    assert fut.result(timeout=1) == "late"
    assert not batcher.healthy()
    with pytest.raises(BatcherStoppedError):
        batcher.submit("x", "y")


def test_batcher_serves_asyncio_callers() -> None:
    async def main(batcher: DynamicBatcher[int]) -> list[int]:
        return list(await asyncio.gather(*(batcher.submit_async(str(i), "a " * i) for i in range(1, 6))))

    with DynamicBatcher(lambda items: [i.n_tokens for i in items], word_count, max_wait_s=0.01) as b:
        assert asyncio.run(main(b)) == [1, 2, 3, 4, 5]


def test_embedding_batcher_returns_each_items_own_row() -> None:
    class FakeEncoder:
        def encode(self, texts: Sequence[str]) -> np.ndarray:
            return np.array([[float(len(t))] * 3 for t in texts], dtype=np.float32)

        def count_tokens(self, texts: Sequence[str]) -> list[int]:
            return [len(t) for t in texts]

    with embedding_batcher(FakeEncoder(), max_wait_s=0.01) as batcher:
        futures = {t: batcher.submit(t, t) for t in ("a", "bbb", "cc")}
        for text, fut in futures.items():
            assert fut.result(timeout=5).tolist() == [float(len(text))] * 3
