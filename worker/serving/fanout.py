"""Embeddings of a provider endpoint run by Celery worker processes instead of in the endpoint.

With ``HEARTH_SERVING_BROKER_URL`` set, the endpoint keeps its dynamic batcher (requests still
share batches), but each batch is cut into ``HEARTH_SERVING_FANOUT_PARTS`` parts of
consecutive texts and each part is a ``hearth.serve_embed`` task on ``HEARTH_SERVING_QUEUE``;
the batch is done when every part's rows are back. Run the workers (one per GPU; prefork,
so that a worker process that dies has its task handed back to the queue)::

    HEARTH_WORKER_BROKER_URL=redis://127.0.0.1:6379/0 \\
        celery -A worker.celery_app worker --pool=prefork -c 2 -Q hearth-serving

Why cutting a batch changes nothing: the kernels are batch-invariant, so a text's embedding is
the same bytes in any batch (``tests/worker_model`` shows it), and the task checks that the
worker runs the endpoint's runtime before it computes. Rows travel as base64 of little-endian
float32: bitwise, never through a float's text form.

A worker process killed mid-task (SIGKILL, out of memory) loses nothing: tasks are
``acks_late`` with ``reject_on_worker_lost`` (``worker.celery_app``), so the prefork master
hands the task back to the queue and another process runs it. The task is a pure function of
its texts, so a second run is harmless. A batch whose parts are not all back within
``HEARTH_SERVING_FANOUT_TIMEOUT_S`` (no worker alive) fails with :class:`FanoutError`; the
endpoint answers 503 ``inference_unavailable`` and charges nothing.
"""

from __future__ import annotations

import base64
import logging
import time
from typing import Any

import numpy as np
import numpy.typing as npt

from worker.model.batching import DynamicBatcher, QueuedItem

log = logging.getLogger(__name__)

SERVE_EMBED_TASK = "hearth.serve_embed"


class FanoutError(RuntimeError):
    """A batch's tasks did not all come back in time (or a worker refused it)."""


def encode_rows(rows: npt.NDArray[np.float32]) -> list[str]:
    return [base64.b64encode(np.ascontiguousarray(r, dtype="<f4").tobytes()).decode() for r in rows]


def decode_rows(rows: list[str], dim: int) -> list[npt.NDArray[np.float32]]:
    out = []
    for r in rows:
        a = np.frombuffer(base64.b64decode(r), dtype="<f4")
        if a.shape != (dim,):
            raise FanoutError(f"a worker returned a row of {a.size} floats, not {dim}")
        out.append(a.astype(np.float32))
    return out


def parts_of(n: int, parts: int) -> list[slice]:
    """``n`` items cut into at most ``parts`` runs of consecutive items, as even as can be."""
    k = max(1, min(parts, n))
    bounds = [round(i * n / k) for i in range(k + 1)]
    return [slice(a, b) for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


class CeleryEmbedder:
    """Sends a batch's texts to Celery workers as ``parts`` tasks and waits for all of them."""

    def __init__(self, app: Any, queue: str, runtime_hash: bytes, dim: int, *, parts: int = 2,
                 timeout_s: float = 30.0) -> None:
        if parts < 1 or timeout_s <= 0:
            raise ValueError("parts must be >= 1 and the timeout positive")
        self.app = app
        self.queue = queue
        self.runtime_hash = "0x" + runtime_hash.hex()
        self.dim = dim
        self.parts = parts
        self.timeout_s = timeout_s
        self.batches = 0
        self.tasks = 0

    def __call__(self, texts: list[str]) -> list[npt.NDArray[np.float32]]:
        sent = [(sl, self.app.send_task(SERVE_EMBED_TASK, args=[texts[sl], self.runtime_hash], queue=self.queue))
                for sl in parts_of(len(texts), self.parts)]
        self.tasks += len(sent)
        end = time.monotonic() + self.timeout_s
        rows: list[npt.NDArray[np.float32]] = []
        try:
            for sl, res in sent:
                try:
                    got = res.get(timeout=max(0.01, end - time.monotonic()), propagate=True)
                except Exception as exc:  # noqa: BLE001 - a timeout or the task's own error, named below
                    raise FanoutError(f"task {res.id} ({sl.stop - sl.start} texts) on queue {self.queue}: "
                                      f"{type(exc).__name__}: {exc}") from exc
                part = decode_rows(list(got), self.dim)
                if len(part) != sl.stop - sl.start:
                    raise FanoutError(f"task {res.id} returned {len(part)} rows for {sl.stop - sl.start} texts")
                rows.extend(part)
        finally:
            for _, res in sent:
                res.forget()
        self.batches += 1
        return rows


def celery_batcher(embedder: CeleryEmbedder, count_tokens: Any, **limits: Any) -> DynamicBatcher[Any]:
    """A dynamic batcher like ``worker.model.embedding_batcher`` whose batches run on Celery."""

    def process(items: list[QueuedItem]) -> list[npt.NDArray[np.float32]]:
        return embedder([i.text for i in items])

    return DynamicBatcher(process, count_tokens, name="embedding-fanout", **limits)
