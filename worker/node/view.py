"""What a node knows of the market during one tick.

:class:`MarketView` keeps the record of every job of the market, folded (with
:func:`~contracts.bindings.apply_job_event`, the rule the indexer uses too) from one chunked
``eth_getLogs`` scan per tick that starts at the block after the last one it read: a duty asks
the view instead of re-reading a job's events from the deployment block. The node's own mined
transactions are folded in as soon as they are mined, so the next duty in the same tick sees
them. Folding is idempotent per field (each event sets fields to values it carries), so a
block folded from a receipt and again by the next scan gives the same record.

Reorgs: the view remembers the highest block it has folded (the scanned head, or a block of one
of its own receipts) with its hash. When the chain no longer has that hash there (or is shorter),
a reorg replaced what the view folded: it forgets everything and folds again from the deployment
block. Reorgs are rare, so the simple rebuild is the right trade against tracking undo data.

:class:`TickContext` is what every duty gets: head and safe block, the head's timestamp (the
clock for every deadline and window), the typed :class:`~contracts.types.MarketParams`, the view
and the report being filled.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from contracts.bindings import JOB_EVENTS, Hearth, UnknownJobError, apply_job_event, decode_log, event_topics
from contracts.logs import scan_logs
from contracts.types import ZERO32, Job, MarketParams, Outcome, Status
from worker.node.config import Checkpoint, TickReport

log = logging.getLogger(__name__)


@dataclass
class JobEntry:
    """A job's record and what its events say beyond it."""

    job: Job | None = None
    runtime_hash: bytes = ZERO32
    """From its ``ReceiptSubmitted`` (what a verifier or committee member compares with its own)."""
    outcome: Outcome | None = None
    """Of its last ``DisputeResolved``."""
    challenged_block: int = 0
    """The block of its last ``JobChallenged`` (votes are looked for from there)."""


class MarketView:
    """The market's job records at the head, kept across ticks (see the module docstring)."""

    def __init__(self, hearth: Hearth, *, max_span: int = 5000) -> None:
        self.h = hearth
        self.max_span = max(1, max_span)
        self._topics = event_topics(hearth.market, JOB_EVENTS)
        self.reset()

    def reset(self) -> None:
        self._jobs: dict[int, JobEntry] = {}
        self._next = self.h.manifest.deployment_block
        self._seen: tuple[int, bytes] | None = None

    @property
    def next_block(self) -> int:
        """The first block the next scan reads."""
        return self._next

    def refresh(self, head: int, head_hash: bytes) -> None:
        """Folds the job events of ``[next_block, head]``, after checking for a reorg."""
        if self._seen is not None:
            number, digest = self._seen
            if head < number or bytes(self.h.w3.eth.get_block(number)["hash"]) != digest:
                log.warning("the chain no longer holds block %d as this node saw it (a reorg): folding the "
                            "market's jobs again from block %d", number, self.h.manifest.deployment_block,
                            extra={"block": head})
                self.reset()
        if self._next <= head:
            params = {"address": self.h.market.address, "topics": [self._topics]}
            for lg in scan_logs(self.h.w3, params, self._next, head, max_span=self.max_span):
                ev = decode_log(self.h.market, lg)
                self._fold(ev["event"], dict(ev["args"]), int(ev["blockNumber"]))
            self._next = head + 1
        if self._seen is None or head >= self._seen[0]:
            self._seen = (head, head_hash)

    def apply(self, rcpt: Any) -> None:
        """Folds the market events of one of this node's mined transactions."""
        for lg in rcpt["logs"]:
            if lg["address"] == self.h.market.address:
                ev = decode_log(self.h.market, lg)
                if ev["event"] in JOB_EVENTS:
                    self._fold(ev["event"], dict(ev["args"]), int(rcpt["blockNumber"]))
        block = int(rcpt["blockNumber"])
        if self._seen is None or block > self._seen[0]:
            self._seen = (block, bytes(rcpt["blockHash"]))

    def _fold(self, name: str, args: dict[str, Any], block: int) -> None:
        job_id = int(args["jobId"])
        e = self._jobs.setdefault(job_id, JobEntry())
        e.job = apply_job_event(e.job, name, args)
        if name == "ReceiptSubmitted":
            e.runtime_hash = bytes(args["runtimeHash"])
        elif name == "DisputeResolved":
            e.outcome = Outcome(args["outcome"])
        elif name == "JobChallenged":
            e.challenged_block = block

    def entry(self, job_id: int) -> JobEntry | None:
        e = self._jobs.get(job_id)
        return e if e is not None and e.job is not None else None

    def job(self, job_id: int) -> Job:
        e = self.entry(job_id)
        if e is None or e.job is None:
            raise UnknownJobError(f"unknown job {job_id} on market {self.h.market.address}")
        return e.job

    def status(self, job_id: int) -> Status | None:
        e = self.entry(job_id)
        return e.job.status if e is not None and e.job is not None else None

    def __len__(self) -> int:
        return len(self._jobs)


@dataclass
class TickContext:
    """One tick as every duty sees it."""

    head: int
    safe: int
    """The head less the confirmation depth: logs are acted on up to here."""
    now: int
    """The head block's timestamp."""
    params: MarketParams
    market: MarketView
    report: TickReport
    final: bool = False
    """The last tick of a ``--once`` run: withdraw whatever is credited."""
    checkpoint: Checkpoint | None = field(default=None, repr=False)

    def checked(self, name: str, ids: list[int]) -> None:
        """Calls the checkpoint hook after a step that advanced ``ids``."""
        if ids and self.checkpoint is not None:
            self.checkpoint(name, list(ids))
