"""Reservations left behind by a gateway that died mid-request.

A serving-plane request reserves its cost against the API key's cap (a ``gw_charges`` row in
status ``serving``) and, once answered, turns it into the served charge in the same transaction
that records the request; a request that gets no answer gives it back. A gateway killed between
the two (SIGKILL, a crash, a host lost) leaves the reservation counted in the key's spend although
nothing was served or will be paid for it: no served row, so no voucher. This sweeper gives such
reservations back once they are older than any request can last (``ttl_s``: the provider timeout
times the attempts, plus a margin), so it is safe with several gateways sharing one database.
Per-job reservations (status ``reserved``) are left alone: a gateway that died during the pull
may have moved the money, and the relay reconciles those from the chain.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import col

from gateway import idempotency, store

log = logging.getLogger(__name__)


def release_stale(engine: Engine, ttl_s: float, now: float | None = None) -> int:
    """Gives back every serving-plane reservation older than ``ttl_s``; returns how many."""
    cutoff = int((now if now is not None else time.time()) - ttl_s)
    with store.session(engine) as s:
        ids = list(s.execute(sa.select(col(store.Charge.id)).where(
            col(store.Charge.status) == "serving", col(store.Charge.created_at) < cutoff)).scalars())
    released = 0
    for charge_id in ids:
        if store.release(engine, charge_id):  # not if its request settled it meanwhile
            released += 1
            log.warning("released reservation %d: its request never finished (the gateway serving it stopped, "
                        "or it outlived the TTL)", charge_id)
    return released


class ReservationSweeper:
    """Runs :func:`release_stale` (and prunes old idempotency keys) at start and every
    ``interval_s`` in the app's event loop."""

    def __init__(self, engine: Engine, ttl_s: float, interval_s: float = 30.0) -> None:
        self.engine, self.ttl_s, self.interval_s = engine, ttl_s, interval_s
        self._task: asyncio.Task[None] | None = None
        self.released = 0

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="reservation-sweeper")

    async def _loop(self) -> None:
        while True:
            try:
                self.released += await asyncio.to_thread(release_stale, self.engine, self.ttl_s)
                await asyncio.to_thread(idempotency.prune, self.engine)  # answers kept past their day
            except Exception:  # noqa: BLE001 - logged; the next pass tries again
                log.exception("reservation sweep failed")
            await asyncio.sleep(self.interval_s)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
