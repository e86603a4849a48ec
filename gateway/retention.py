"""Who may store blobs, how much, and for how long.

* Uploads (``POST /v1/blobs``) need an identity: a SIWE session or an API key, both of which
  name a wallet. Each wallet may hold ``blob_quota_bytes`` of unexpired uploads
  (``blob_provider_quota_bytes`` if it is a registered provider, whose outputs are blobs).
  Clients' uploads are refused (507) once the gateway holds ``blob_store_max_bytes`` for
  everyone together, which bounds what any number of new wallets can make it store. That cap
  never refuses a registered provider's upload (its outputs: refused, it would miss its
  deliveries) nor the input of a job someone pays for: wallets created to fill the store could
  otherwise stop both. Those are bounded by stake (the provider quota per staked provider) and
  by payment instead.
* Every stored blob carries holds (one per holder, :class:`gateway.store.BlobUpload`) that
  expire ``blob_retention_s`` after the last upload. That period must exceed the market's
  challenge window (checked on start), so a verifier can always fetch what it re-executes.
* :class:`BlobSweeper` deletes a blob once all its holds have expired, unless an open job
  (posted, claimed, delivered or challenged) names it as its input or output: such holds are
  renewed for another period, so a blob outlives the last open job that needs it.

Holds are written in the same database transaction as the check against the quota, and the
sweeper deletes a blob's bytes inside the transaction that drops its last hold, so an upload
racing the sweeper either renews the hold first or writes the bytes again after.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

import anyio
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, or_, select

from common.index_models import Job, Provider
from contracts import jobstate
from gateway import store
from gateway.blobs import GatewayBlobs, blob_id
from gateway.errors import BlobQuotaError, BlobStoreFullError

log = logging.getLogger(__name__)
OPEN_STATES = jobstate.labels(jobstate.OPEN)


@dataclass(frozen=True)
class BlobPolicy:
    retention_s: int
    quota_bytes: int
    provider_quota_bytes: int
    store_max_bytes: int


def uploader(wallet: str) -> str:
    return f"wallet:{wallet}"


def payer(wallet: str) -> str:
    return f"paid:{wallet}"


def is_provider(index_engine: Engine, wallet: str) -> bool:
    try:
        with Session(index_engine) as s:
            p = s.get(Provider, wallet)
    except Exception:  # noqa: BLE001 - no index yet: treat as a client
        return False
    return p is not None and p.staked > 0


def store_held(blobs: GatewayBlobs, db: Engine, policy: BlobPolicy, data: bytes, owner: str,
               quota: int | None, now: int, *, store_cap: int | None = None) -> str:
    """Stores ``data`` under a hold of ``owner``; with a ``quota``, refuses (429) when the
    owner's unexpired holds would exceed it; with a ``store_cap``, refuses (507) when the
    store would hold more than that for everyone together."""
    bid = blob_id(data)
    with store.session(db) as s:
        store.hold_blob(s, bid, owner, len(data), now, policy.retention_s)
        if quota is not None:
            held = store.held_bytes(s, owner, now)
            if held > quota:
                first = store.next_expiry(s, owner, now) or now + policy.retention_s
                raise BlobQuotaError(
                    f"this wallet holds {held - len(data)} bytes of unexpired blobs; its quota is {quota} "
                    f"(uploads expire {policy.retention_s}s after they are made)",
                    retry_after=max(1, first - now), held=held - len(data), quota=quota)
        if store_cap is not None and store.stored_bytes(s, now) > store_cap:
            raise BlobStoreFullError(f"the gateway's blob store is full ({store_cap} bytes)", limit=store_cap)
        blobs.put(data)  # inside the transaction: a failed write leaves no hold
    return bid


def check_retention(policy: BlobPolicy, challenge_window: int | None) -> None:
    from gateway.errors import ConfigurationError

    if challenge_window is not None and policy.retention_s <= challenge_window:
        raise ConfigurationError(
            f"blob retention of {policy.retention_s}s must exceed the market's challenge window of "
            f"{challenge_window}s (HEARTH_GATEWAY_BLOB_RETENTION_S)", reason="retention_too_short")


class BlobSweeper:
    """Start/stop service: every ``interval`` seconds, :meth:`sweep` once."""

    def __init__(self, blobs: GatewayBlobs, db: Engine, index_engine: Engine, policy: BlobPolicy,
                 interval: float, clock: Callable[[], int] = store.now, batch: int = 500) -> None:
        self.blobs = blobs
        self.db = db
        self.index_engine = index_engine
        self.policy = policy
        self.interval = interval
        self.clock = clock
        self.batch = batch
        self._task: asyncio.Task[None] | None = None
        self.last_ok: bool | None = None

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="hearth-blob-sweeper")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def healthy(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _run(self) -> None:
        while True:
            try:
                await anyio.to_thread.run_sync(self.sweep)
                self.last_ok = True
            except Exception as exc:  # noqa: BLE001 - keep sweeping; report once
                if self.last_ok is not False:
                    log.warning("blob sweeper: %s", exc)
                self.last_ok = False
            await asyncio.sleep(self.interval)

    def sweep(self) -> tuple[list[str], list[str]]:
        """One pass: (deleted blob ids, blob ids kept because an open job names them)."""
        now = self.clock()
        deleted: list[str] = []
        kept: list[str] = []
        while True:
            with Session(self.db) as s:
                due = [b for b in store.expired_blobs(s, now, self.batch) if b not in kept]
            if not due:
                return deleted, kept
            needed = self._open_job_blobs(due)
            if needed:
                with store.session(self.db) as s:
                    store.renew_blobs(s, sorted(needed), now + self.policy.retention_s)
                kept.extend(sorted(needed))
            for bid in due:
                if bid in needed:
                    continue
                with store.session(self.db) as s:
                    if store.drop_expired_holds(s, bid, now):
                        self.blobs.delete(bid)
                        deleted.append(bid)
            if deleted:
                log.info("blob sweeper: deleted %d expired blobs, kept %d named by open jobs", len(deleted),
                         len(kept))
            if len(due) < self.batch:
                return deleted, kept

    def _open_job_blobs(self, ids: list[str]) -> set[str]:
        with Session(self.index_engine) as s:
            rows = s.exec(select(Job.input_hash, Job.output_hash).where(
                col(Job.status).in_(OPEN_STATES), or_(col(Job.input_hash).in_(ids), col(Job.output_hash).in_(ids))))
            found = {h for pair in rows for h in pair if h}
        return found & set(ids)
