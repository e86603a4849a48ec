"""Celery tasks of the worker. They take ids, never objects: job ids and blob ids in, blob ids,
hashes and units out; bytes travel through the blob store.

``hearth.embed_batch`` is idempotent, so a redelivered message (``acks_late`` after a worker
died, or the same batch sent twice) does no work twice and gives the same answer:

1. for a provider's own delivery (``owner`` given) it first asks the chain: a job already
   delivered by ``owner`` whose output blob is in the store is answered from there;
2. then its memo: an input already run on this runtime whose output blob is still in the store
   is answered from there;
3. otherwise it runs the model; the output is content-addressed, so storing it again is a
   no-op, and deterministic kernels make a recomputation byte-identical anyway.

Expected, transient failures (an input not uploaded yet, the gateway unreachable) are retried
with exponential backoff; a malformed or tampered input is a permanent per-job failure in the
result, and a runtime mismatch fails the task.
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Any

from celery import Task, shared_task

from common.blobs import BlobNotFoundError, BlobStore, BlobUnavailableError, normalize_id
from worker.node.compute import ComputeRequest, ComputeResult, Outcome, ResultMemo, compute_jobs, shared_encoder
from worker.node.errors import RuntimeMismatchError
from worker.node.executor import EMBED_TASK
from worker.serving.fanout import SERVE_EMBED_TASK, encode_rows
from worker.settings import WorkerSettings

log = logging.getLogger(__name__)


@functools.cache
def _settings() -> WorkerSettings:
    return WorkerSettings()


@functools.cache
def _store() -> BlobStore:
    return _settings().open_blob_store()


@functools.cache
def _memo() -> ResultMemo:
    return ResultMemo(_settings().data_dir / "worker" / "task-memo.sqlite")


@functools.cache
def _hearth() -> Any:
    from worker.node.service import load_hearth

    return load_hearth(_settings())


def _delivered(req: ComputeRequest, owner: str, store: BlobStore) -> ComputeResult | None:
    """The job's result if ``owner`` already delivered it and its output blob is stored."""
    try:
        h = _hearth()
        events = h.job_events(req.job_id)
    except Exception:  # noqa: BLE001 - no manifest or no chain here: just compute
        return None
    rec = next((e for e in events if e.name == "ReceiptSubmitted"), None)
    if rec is None or str(rec.args["provider"]).lower() != owner.lower():
        return None
    out = "0x" + bytes(rec.args["outputHash"]).hex()
    if not store.has(out):
        return None
    return ComputeResult(
        req.job_id, req.input_blob, out, bytes(rec.args["outputHash"]), int(rec.args["units"]), computed=False
    )


@shared_task(  # type: ignore[untyped-decorator]
    bind=True,
    name=EMBED_TASK,
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=(BlobNotFoundError, BlobUnavailableError),
    retry_backoff=2,
    retry_backoff_max=60,
    retry_jitter=True,
    max_retries=6,
)
def embed_batch(
    self: Task, items: list[list[Any]], runtime_hash: str, owner: str | None = None
) -> list[dict[str, Any]]:
    """Embeds the inputs of ``items`` (``[[job_id, input_blob_id], ...]``) in token-budgeted
    batches; returns one dict per item (``ComputeResult`` / ``ComputeFailure`` fields)."""
    s = _settings()
    encoder = shared_encoder(s.backend, s.dtype, s.device)
    mine = "0x" + encoder.runtime_hash().hex()
    if mine != runtime_hash.lower():
        raise RuntimeMismatchError(f"this worker runs runtime {mine}, the node asked for {runtime_hash}")
    store = _store()
    reqs = [ComputeRequest(int(job_id), normalize_id(str(blob))) for job_id, blob in items]
    done: dict[int, Outcome] = {}
    if owner:
        for i, r in enumerate(reqs):
            if (hit := _delivered(r, owner, store)) is not None:
                done[i] = hit
    todo = [i for i in range(len(reqs)) if i not in done]
    outs = compute_jobs(
        [reqs[i] for i in todo],
        store,
        encoder,
        max_tokens=s.max_tokens,
        max_batch_size=s.max_batch_size,
        max_input_bytes=s.max_input_bytes,
        memo=_memo(),
    )
    done.update(zip(todo, outs, strict=True))
    result = [done[i].to_dict() for i in range(len(reqs))]
    log.info(
        "embed_batch task=%s jobs=%s computed=%d",
        self.request.id,
        [r.job_id for r in reqs],
        sum(1 for d in result if d.get("computed")),
    )
    return result


@shared_task(  # type: ignore[untyped-decorator]
    bind=True,
    name=SERVE_EMBED_TASK,
    acks_late=True,
    reject_on_worker_lost=True,
)
def serve_embed(self: Task, texts: list[str], runtime_hash: str) -> list[str]:
    """Embeds ``texts`` for a provider endpoint (``worker.serving.fanout``): one base64 float32
    row per text. A pure function of ``texts``, so a redelivered task just runs again; refused
    (failed) when this process runs another runtime than the endpoint's."""
    s = _settings()
    encoder = shared_encoder(s.backend, s.dtype, s.device)
    mine = "0x" + encoder.runtime_hash().hex()
    if mine != runtime_hash.lower():
        raise RuntimeMismatchError(f"this worker runs runtime {mine}, the endpoint asked for {runtime_hash}")
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise TypeError("texts must be a list of strings")
    t0 = time.perf_counter()
    rows = encode_rows(encoder.encode(texts))
    log.info("serve_embed task=%s texts=%d ms=%.1f", self.request.id, len(texts), (time.perf_counter() - t0) * 1e3)
    return rows
