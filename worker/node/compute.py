"""Running the model over jobs: fetch each input (hash-checked), tokenize, run token-budgeted
batches that span jobs, store each job's output blob.

Shared by the node's in-process executor and the Celery task, so both produce the same
bytes. Grouping texts of different jobs into one batch is safe because the kernels are
batch-invariant: a text's embedding bytes do not depend on what shares its batch.
"""

from __future__ import annotations

import functools
import logging
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from common.blobs import BlobIntegrityError, BlobStore, BlobTooLargeError, normalize_id
from contracts import jobio
from contracts.errors import InvalidJobInputError
from contracts.types import Receipt

if TYPE_CHECKING:
    from worker.model import Encoder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ComputeRequest:
    """One job to run: its id and its input blob (= the job's inputHash)."""

    job_id: int
    input_blob: str


@dataclass(frozen=True)
class ComputeResult:
    job_id: int
    input_blob: str
    output_blob: str
    output_hash: bytes
    units: int
    computed: bool = True
    """False when an earlier run's stored output was reused (idempotent re-delivery)."""

    def receipt(self, model_id: bytes, runtime_hash: bytes, gpu_class: bytes) -> Receipt:
        """The work receipt that delivers this result (what the provider signs and submits)."""
        return Receipt(self.job_id, self.output_hash, self.units, model_id, runtime_hash, gpu_class)

    def to_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "input_blob": self.input_blob,
            "output_blob": self.output_blob,
            "output_hash": "0x" + self.output_hash.hex(),
            "units": self.units,
            "computed": self.computed,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ComputeResult:
        return cls(
            int(d["job_id"]),
            str(d["input_blob"]),
            str(d["output_blob"]),
            bytes.fromhex(str(d["output_hash"]).removeprefix("0x")),
            int(d["units"]),
            bool(d["computed"]),
        )


@dataclass(frozen=True)
class ComputeFailure:
    """A job that cannot be computed; ``permanent`` when retrying cannot help (bad input)."""

    job_id: int
    input_blob: str
    error: str
    permanent: bool

    def to_dict(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "input_blob": self.input_blob, "error": self.error, "permanent": self.permanent}


Outcome = ComputeResult | ComputeFailure


def outcome_from_dict(d: dict[str, Any]) -> Outcome:
    if "error" in d:
        return ComputeFailure(int(d["job_id"]), str(d["input_blob"]), str(d["error"]), bool(d["permanent"]))
    return ComputeResult.from_dict(d)


@functools.cache
def shared_encoder(backend: str = "torch", dtype: str = "fp32", device: str | None = None) -> Encoder:
    """One encoder per (backend, dtype, device) per process: weights load once."""
    from worker.model import Encoder

    return Encoder(backend=backend, dtype=dtype, device=device)  # type: ignore[arg-type]


class ResultMemo:
    """Memo of finished computations, ``(input blob, runtime) -> (output, units)``,
    in SQLite. A pure function's results: a re-delivered task (``acks_late`` after a crash)
    finds its output here and in the blob store instead of running the model again."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), timeout=30, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS results (input_blob TEXT, runtime TEXT,"
            " output_blob TEXT NOT NULL, units INTEGER NOT NULL, PRIMARY KEY (input_blob, runtime))"
        )
        self._lock = threading.Lock()

    def get(self, input_blob: str, runtime: bytes) -> tuple[str, int] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT output_blob, units FROM results WHERE input_blob=? AND runtime=?",
                (input_blob, runtime.hex()),
            ).fetchone()
        return (str(row[0]), int(row[1])) if row else None

    def put(self, input_blob: str, runtime: bytes, output_blob: str, units: int) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?)",
                (input_blob, runtime.hex(), output_blob, units),
            )

    def close(self) -> None:
        self._db.close()


def compute_jobs(
    requests: Sequence[ComputeRequest],
    store: BlobStore,
    encoder: Encoder,
    *,
    max_tokens: int = 16384,
    max_batch_size: int = 64,
    max_input_bytes: int = jobio.MAX_INPUT_BYTES,
    memo: ResultMemo | None = None,
) -> list[Outcome]:
    """Runs ``requests`` (one outcome per request, in order). Missing or unreachable inputs
    raise (:class:`~common.blobs.BlobNotFoundError`, :class:`~common.blobs.BlobUnavailableError`):
    retrying can help. Malformed or tampered inputs give a permanent :class:`ComputeFailure`."""
    from worker.model import plan_batches
    from worker.model.batching import QueuedItem

    runtime = encoder.runtime_hash()
    outcomes: dict[int, Outcome] = {}
    token_ids: dict[int, list[list[int]]] = {}
    for i, req in enumerate(requests):
        bid = normalize_id(req.input_blob)
        if memo is not None and (hit := memo.get(bid, runtime)) and store.has(hit[0]):
            out = store.get(hit[0])
            outcomes[i] = ComputeResult(req.job_id, bid, hit[0], jobio.output_hash(out), hit[1], computed=False)
            continue
        try:
            texts = jobio.decode_input(store.get(bid, max_bytes=max_input_bytes), max_input_bytes)
        except (InvalidJobInputError, BlobIntegrityError, BlobTooLargeError) as exc:
            outcomes[i] = ComputeFailure(req.job_id, bid, str(exc), permanent=True)
            continue
        token_ids[i] = encoder.tokenize(texts)

    # One plan over every text of every job: batches are cut by padded-token budget.
    items = [
        QueuedItem(f"{i:08d}:{k:05d}", "", len(ids))
        for i, per_job in token_ids.items()
        for k, ids in enumerate(per_job)
    ]
    rows: dict[str, np.ndarray] = {}
    for batch in plan_batches(items, max_tokens=max_tokens, max_batch_size=max_batch_size):
        ids = [token_ids[int(it.id[:8])][int(it.id[9:])] for it in batch]
        emb = encoder.encode_ids(ids)
        for it, row in zip(batch, emb, strict=True):
            rows[it.id] = row
    for i, per_job in token_ids.items():
        req = requests[i]
        emb = np.stack([rows[f"{i:08d}:{k:05d}"] for k in range(len(per_job))]).astype(np.float32)
        out = jobio.encode_output(emb)
        units = sum(len(ids) for ids in per_job)
        output_blob = store.put(out)
        bid = normalize_id(req.input_blob)
        if memo is not None:
            memo.put(bid, runtime, output_blob, units)
        outcomes[i] = ComputeResult(req.job_id, bid, output_blob, jobio.output_hash(out), units)
    log.debug("computed %d jobs (%d texts)", len(token_ids), len(items))
    return [outcomes[i] for i in range(len(requests))]
