"""Live job updates: one poller over the indexer's tables, fanned out to every open stream.

The poller reads the market's job events (``raw_events``) in a sliding window of recent blocks
and publishes each event it has not seen yet, keyed by (tx hash, log index), together with the
job's current row. Keying by event identity rather than by row id makes it reorg-safe: an event
that a reorg replaced comes back under a new key and is published again, and one that vanished
is simply never repeated. One query per interval serves any number of streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

import anyio
from sqlalchemy.engine import Engine
from sqlmodel import Session

from contracts import jobstate
from gateway import index
from gateway.metrics import Metrics

log = logging.getLogger(__name__)

EVENT_STATUS = {name: status.label for name, status in jobstate.EVENT_STATUS.items()}


@dataclass(eq=False)
class Subscription:
    job_id: int | None
    queue: asyncio.Queue[dict[str, Any] | None] = field(default_factory=lambda: asyncio.Queue(maxsize=1000))


class JobFeed:
    """Start/stop service; ``subscribe`` returns a queue of update dicts (None: closed)."""

    def __init__(self, engine: Engine, chain_id: int, interval: float, metrics: Metrics,
                 window_blocks: int = 64) -> None:
        self.engine = engine
        self.chain_id = chain_id
        self.interval = interval
        self.metrics = metrics
        self.window = window_blocks
        self._subs: set[Subscription] = set()
        self._seen: dict[tuple[str, int], int] = {}
        self._high: int | None = None
        self._task: asyncio.Task[None] | None = None
        self.last_poll_ok: bool | None = None

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="hearth-job-feed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for sub in list(self._subs):
            self._close(sub)

    def healthy(self) -> bool:
        return self._task is not None and not self._task.done()

    # ------------------------------------------------------------ subscribers

    def subscribe(self, job_id: int | None = None) -> Subscription:
        sub = Subscription(job_id)
        self._subs.add(sub)
        self.metrics.sse_clients.set(len(self._subs))
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subs.discard(sub)
        self.metrics.sse_clients.set(len(self._subs))

    def _close(self, sub: Subscription) -> None:
        self.unsubscribe(sub)
        with contextlib.suppress(asyncio.QueueFull):
            sub.queue.put_nowait(None)

    # ------------------------------------------------------------ polling

    async def _run(self) -> None:
        while True:
            try:
                updates = await anyio.to_thread.run_sync(self.poll)
                self.last_poll_ok = True
            except Exception as exc:  # noqa: BLE001 - the index may not exist yet; keep trying
                if self.last_poll_ok is not False:
                    log.warning("job feed: cannot read the index: %s", exc)
                self.last_poll_ok = False
                updates = []
            for u in updates:
                self.publish(u)
            await asyncio.sleep(self.interval)

    def publish(self, update: dict[str, Any]) -> None:
        self.metrics.feed_events.inc()
        for sub in list(self._subs):
            if sub.job_id is not None and sub.job_id != update["job_id"]:
                continue
            try:
                sub.queue.put_nowait(update)
            except asyncio.QueueFull:
                log.warning("job feed: dropping a stream that does not keep up")
                self._close(sub)

    def poll(self) -> list[dict[str, Any]]:
        """New job events since the last poll, as update dicts (sync; runs in a thread)."""
        with Session(self.engine) as s:
            if self._high is None:
                # Start from now: streams get current state from their snapshot, not a replay.
                self._high = index.latest_event_block(s, self.chain_id)
                for ev in index.job_events_since(s, self.chain_id, max(0, self._high - self.window)):
                    self._seen[ev.key] = ev.block
                return []
            events = index.job_events_since(s, self.chain_id, max(0, self._high - self.window))
            new = [ev for ev in events if ev.key not in self._seen]
            if not new:
                return []
            jobs = index.jobs_by_id(s, {ev.job_id for ev in new})
        out = []
        for ev in new:
            self._seen[ev.key] = ev.block
            job = jobs.get(ev.job_id)
            status = EVENT_STATUS.get(ev.event) or (job.status if job else "delivered")
            out.append({
                "job_id": ev.job_id, "event": ev.event, "status": status, "block": ev.block,
                "log_index": ev.log_index, "tx_hash": ev.tx_hash, "at": ev.at,
                "job": index.job_out(job).model_dump() if job else None,
            })
        self._high = max(self._high, max(ev.block for ev in new))
        low = self._high - self.window
        if len(self._seen) > 4 * 1024:
            self._seen = {k: b for k, b in self._seen.items() if b >= low}
        return out
