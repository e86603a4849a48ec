"""Where the node's inference runs: in its own process (the one-machine default), or fanned
out over Celery worker processes and hosts (when a broker is configured).

Either way the node hands over ids only (job id, input blob id) and gets back output blob
ids, hashes and units; the bytes travel through the blob store.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from common.blobs import BlobError, BlobStore
from worker.node.compute import (
    ComputeFailure,
    ComputeRequest,
    Outcome,
    compute_jobs,
    outcome_from_dict,
    shared_encoder,
)
from worker.node.errors import ComputeError

if TYPE_CHECKING:
    from celery import Celery

    from worker.model import Encoder

log = logging.getLogger(__name__)

EMBED_TASK = "hearth.embed_batch"


class Executor(Protocol):
    runtime_hash: bytes
    model_hash: bytes

    def run(self, requests: Sequence[ComputeRequest], *, owner: str | None = None) -> list[Outcome]: ...


class InProcessExecutor:
    """Runs the model in this process (one encoder, loaded once)."""

    def __init__(
        self,
        store: BlobStore,
        encoder: Encoder | None = None,
        *,
        backend: str = "torch",
        dtype: str = "fp32",
        device: str | None = None,
        max_tokens: int = 16384,
        max_batch_size: int = 64,
        max_input_bytes: int = 1 << 20,
    ) -> None:
        self.store = store
        self.encoder = encoder or shared_encoder(backend, dtype, device)
        self.runtime_hash = self.encoder.runtime_hash()
        self.model_hash = self.encoder.model_hash()
        self.max_tokens = max_tokens
        self.max_batch_size = max_batch_size
        self.max_input_bytes = max_input_bytes

    def run(self, requests: Sequence[ComputeRequest], *, owner: str | None = None) -> list[Outcome]:
        if not requests:
            return []
        try:
            return compute_jobs(
                requests,
                self.store,
                self.encoder,
                max_tokens=self.max_tokens,
                max_batch_size=self.max_batch_size,
                max_input_bytes=self.max_input_bytes,
            )
        except BlobError as exc:  # an input went missing since the node checked it: retry later
            return [ComputeFailure(r.job_id, r.input_blob, str(exc), permanent=False) for r in requests]


class CeleryExecutor:
    """Sends ``hearth.embed_batch`` tasks (ids only) to a queue and waits for them. Jobs are
    split into tasks of ``jobs_per_task`` so several GPU processes share the work; each task
    batches its jobs' texts under the token budget."""

    def __init__(
        self,
        app: Celery,
        *,
        queue: str = "hearth",
        jobs_per_task: int = 16,
        timeout_s: float = 600.0,
        backend: str = "torch",
        dtype: str = "fp32",
    ) -> None:
        from worker.model.encoder import model_hash, runtime_hash

        self.app = app
        self.queue = queue
        self.jobs_per_task = max(1, jobs_per_task)
        self.timeout_s = timeout_s
        self.runtime_hash = runtime_hash(backend, dtype)  # type: ignore[arg-type]
        self.model_hash = model_hash()

    def run(self, requests: Sequence[ComputeRequest], *, owner: str | None = None) -> list[Outcome]:
        if not requests:
            return []
        chunks = [list(requests[i : i + self.jobs_per_task]) for i in range(0, len(requests), self.jobs_per_task)]
        pending = []
        for chunk in chunks:
            items = [[r.job_id, r.input_blob] for r in chunk]
            res = self.app.send_task(
                EMBED_TASK, args=[items, "0x" + self.runtime_hash.hex(), owner], queue=self.queue
            )
            log.info("enqueued batch task=%s jobs=%s queue=%s", res.id, [r.job_id for r in chunk], self.queue)
            pending.append((chunk, res))
        deadline = time.monotonic() + self.timeout_s
        out: list[Outcome] = []
        for chunk, res in pending:
            try:
                payload: list[dict[str, Any]] = res.get(
                    timeout=max(1.0, deadline - time.monotonic()), interval=0.2, propagate=True
                )
                out.extend(outcome_from_dict(d) for d in payload)
            except Exception as exc:  # noqa: BLE001 - timeout or task failure: retry these jobs later
                log.warning("batch task=%s failed: %s", res.id, exc)
                out.extend(
                    ComputeFailure(r.job_id, r.input_blob, f"task {res.id}: {exc}", permanent=False) for r in chunk
                )
        if len(out) != len(requests):
            raise ComputeError(f"{len(out)} outcomes for {len(requests)} jobs")
        return out
