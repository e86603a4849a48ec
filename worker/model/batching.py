"""Token-budgeted dynamic batching of embedding requests.

`plan_batches` groups queued items by token length (sorted, so similar lengths share a batch)
under a padded-token budget (`batch size x longest item`) and a maximum batch size.
`DynamicBatcher` queues items from any thread (or coroutine) and runs them through a
processing function in such batches, flushing when the budget is full or the oldest queued
item has waited `max_wait_s`. Because the kernels are batch-invariant, grouping changes
only throughput, never an output byte.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from worker.model.errors import InvalidInputError, ModelError

logger = logging.getLogger(__name__)

R = TypeVar("R")


class TextEncoder(Protocol):
    """What `embedding_batcher` needs of an encoder (`worker.model.Encoder` fits)."""

    def encode(self, texts: Sequence[str]) -> npt.NDArray[np.float32]: ...

    def count_tokens(self, texts: Sequence[str]) -> list[int]: ...


@dataclass(frozen=True)
class QueuedItem:
    """One input waiting to be embedded."""

    id: str
    text: str
    n_tokens: int


def padded_tokens(items: Sequence[QueuedItem]) -> int:
    """Tokens a batch costs once padded to its longest item."""
    return len(items) * max((i.n_tokens for i in items), default=0)


def plan_batches(items: Sequence[QueuedItem], *, max_tokens: int, max_batch_size: int) -> list[list[QueuedItem]]:
    """Split `items` into batches sorted by length, each within both limits.

    Items are ordered by (n_tokens, id) and cut greedily, so the plan is deterministic. An
    item longer than `max_tokens` on its own forms a batch by itself.
    """
    if max_tokens < 1 or max_batch_size < 1:
        raise InvalidInputError("max_tokens and max_batch_size must be positive")
    batches: list[list[QueuedItem]] = []
    current: list[QueuedItem] = []
    for item in sorted(items, key=lambda i: (i.n_tokens, i.id)):
        # Sorted ascending, so `item` is the longest of current + [item].
        if current and (len(current) >= max_batch_size or (len(current) + 1) * item.n_tokens > max_tokens):
            batches.append(current)
            current = []
        current.append(item)
    if current:
        batches.append(current)
    return batches


class BatcherStoppedError(ModelError, RuntimeError):
    """An item was submitted to a batcher that is not running."""


@dataclass
class _Pending(Generic[R]):
    item: QueuedItem
    future: Future[R]
    enqueued_at: float = field(default_factory=time.monotonic)


class DynamicBatcher(Generic[R]):
    """Background thread that batches submitted texts and runs `process` on each batch.

    `process(items)` returns one result per item, in order. `count_tokens(texts)` gives each
    text's token count (e.g. `Encoder.count_tokens`).
    """

    def __init__(
        self,
        process: Callable[[list[QueuedItem]], Sequence[R]],
        count_tokens: Callable[[Sequence[str]], list[int]],
        *,
        max_tokens: int = 16384,
        max_batch_size: int = 64,
        max_wait_s: float = 0.01,
        name: str = "embedding-batcher",
    ) -> None:
        if max_tokens < 1 or max_batch_size < 1 or max_wait_s < 0:
            raise InvalidInputError("limits must be positive and max_wait_s non-negative")
        self.max_tokens = max_tokens
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self._process = process
        self._count_tokens = count_tokens
        self._name = name
        self._cond = threading.Condition()
        self._pending: list[_Pending[R]] = []
        self._running = False
        self._thread: threading.Thread | None = None
        self.batches_run = 0
        self.items_run = 0

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Start the batching thread (idempotent)."""
        with self._cond:
            if self._running:
                return
            self._running = True
            self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
            self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop accepting items, run what is queued, and join the thread."""
        with self._cond:
            self._running = False
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def healthy(self) -> bool:
        """Whether the batching thread is alive and accepting items."""
        return self._running and self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> DynamicBatcher[R]:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- submission ----------------------------------------------------------------------

    def submit(self, item_id: str, text: str, n_tokens: int | None = None) -> Future[R]:
        """Queue one text; the future resolves to its result."""
        count = self._count_tokens([text])[0] if n_tokens is None else n_tokens
        pending: _Pending[R] = _Pending(QueuedItem(item_id, text, count), Future())
        with self._cond:
            if not self._running:
                raise BatcherStoppedError(f"{self._name} is not running")
            self._pending.append(pending)
            self._cond.notify_all()
        return pending.future

    async def submit_async(self, item_id: str, text: str) -> R:
        """`submit` for asyncio callers."""
        return await asyncio.wrap_future(self.submit(item_id, text))

    @property
    def queued(self) -> int:
        """Number of items waiting."""
        with self._cond:
            return len(self._pending)

    # -- internals -----------------------------------------------------------------------

    def _budget_full(self) -> bool:
        items = [p.item for p in self._pending]
        return len(items) >= self.max_batch_size or padded_tokens(items) >= self.max_tokens

    def _take(self) -> list[_Pending[R]] | None:
        with self._cond:
            while True:
                if not self._pending:
                    if not self._running:
                        return None
                    self._cond.wait()
                    continue
                if not self._running or self._budget_full():
                    break
                left = self._pending[0].enqueued_at + self.max_wait_s - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            taken, self._pending = self._pending, []
            return taken

    def _loop(self) -> None:
        while (taken := self._take()) is not None:
            by_id = {id(p.item): p for p in taken}
            for batch in plan_batches(
                [p.item for p in taken],
                max_tokens=self.max_tokens,
                max_batch_size=self.max_batch_size,
            ):
                self._run([by_id[id(item)] for item in batch])

    def _run(self, batch: list[_Pending[R]]) -> None:
        items = [p.item for p in batch]
        try:
            results = self._process(items)
            if len(results) != len(items):
                raise ModelError(f"process returned {len(results)} results for {len(items)}")
        except Exception as exc:  # delivered to every waiter of the batch
            logger.exception("batch failed", extra={"batch_size": len(items)})
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(exc)
            return
        for p, r in zip(batch, results, strict=True):
            if not p.future.done():
                p.future.set_result(r)
        self.batches_run += 1
        self.items_run += len(items)
        logger.debug(
            "batch done",
            extra={"batch_size": len(items), "padded_tokens": padded_tokens(items)},
        )


def embedding_batcher(encoder: TextEncoder, **limits: Any) -> DynamicBatcher[npt.NDArray[np.float32]]:
    """A `DynamicBatcher` whose results are each item's embedding row (`[384]` float32)."""

    def process(items: list[QueuedItem]) -> list[npt.NDArray[np.float32]]:
        return list(encoder.encode([i.text for i in items]))

    return DynamicBatcher(process, encoder.count_tokens, **limits)
