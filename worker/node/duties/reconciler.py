"""The reconciler duty: keeps this node's own job records in line with the chain, the source of
truth.

On the first tick it compares every open record of the state file with the market (the node
may have died after a transaction was mined and before it wrote that down, or before one was
mined); on every tick it looks for records the chain no longer backs (a reorg dropped the claim
or the receipt) and sends them back to the step that redoes what was lost. :func:`sync` is the
rule, which the other provider duties also apply after a failed transaction.
"""

from __future__ import annotations

from contracts.types import Status
from worker.node.duties.base import Duty, Operator, h, kv
from worker.node.state import CandidateRow, JobRow, Phase
from worker.node.view import MarketView, TickContext

OPEN = (Phase.CLAIMING, Phase.CLAIMED, Phase.COMPUTED, Phase.SUBMITTING, Phase.DELIVERED, Phase.CHALLENGED)


def sync(op: Operator, market: MarketView, row: JobRow) -> JobRow:
    """Brings a job's local record in line with the chain's (as the market view holds it)."""
    before = row.phase
    entry = market.entry(row.job_id)
    job = entry.job if entry is not None else None
    if job is None:
        row.phase, row.note = Phase.ABANDONED, "not on chain"
    elif job.status == Status.POSTED:
        # Our claim never made it (or a reorg dropped it): the job is claimable again.
        row.phase = Phase.ABANDONED
        row.note = "claim not on chain"
        op.state.upsert(CandidateRow(row.job_id, row.input_hash, row.deadline))
    elif not op.mine(job):
        row.phase = Phase.ABANDONED
        row.note = f"taken by {job.provider}"
    elif job.status == Status.CLAIMED:
        if row.phase == Phase.CLAIMING:
            row.phase = Phase.CLAIMED
        elif row.phase in (Phase.SUBMITTING, Phase.DELIVERED) and row.output_hash and row.units is not None:
            # Our receipt is not on the canonical chain (a reorg dropped it): send it again.
            row.phase, row.note = Phase.COMPUTED, "receipt not on chain"
    elif job.status == Status.DELIVERED:
        row.phase = Phase.DELIVERED
        row.challenge_end = job.challenge_end
        row.output_hash = h(job.output_hash)
    elif job.status == Status.CHALLENGED:
        row.phase = Phase.CHALLENGED
    elif job.status == Status.FINALIZED:
        row.phase = Phase.FINALIZED
    elif job.status == Status.REFUNDED:
        row.phase = Phase.REFUNDED
    if row.phase != before:
        op.state.upsert(row)
        op.log.info("job %d: %s -> %s (from chain) %s", row.job_id, before, row.phase,
                    kv(job=row.job_id, note=row.note), extra={"job_id": row.job_id})
    return row


def _backed(row: JobRow, status: Status | None) -> bool:
    """Whether the chain still holds what the record says was mined."""
    if status is None or row.phase in (Phase.CLAIMING, Phase.SUBMITTING):
        return False  # a step left half-done (its transaction failed or was never mined)
    if row.phase in (Phase.CLAIMED, Phase.COMPUTED):
        return status != Status.POSTED
    if row.phase == Phase.DELIVERED:
        return status not in (Status.POSTED, Status.CLAIMED)
    return True


class Reconciler(Duty):
    """Resumes open records on the first tick; re-syncs those a reorg left unbacked after it."""

    name = "reconciler"

    def __init__(self, op: Operator) -> None:
        super().__init__(op)
        self._resumed = False

    def run(self, ctx: TickContext) -> None:
        if not self._resumed:
            rows = self.op.state.jobs(*OPEN)
            if rows:
                self.log.info("resuming %d open jobs from %s", len(rows), self.op.state.path)
            for row in rows:
                sync(self.op, ctx.market, row)
            self._resumed = True
            return
        for row in self.op.state.jobs(*OPEN):
            job = ctx.market.entry(row.job_id)
            if job is None or job.job is None or not _backed(row, job.job.status) or (
                job.job.status != Status.POSTED and not self.op.mine(job.job)
            ):
                sync(self.op, ctx.market, row)
