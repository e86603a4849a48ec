"""The resolver duty (every role): once a dispute's reveal phase is over, calls
``resolveDispute`` (anyone may; the first to look does it, the others see it done), and after an
escalation waits for governance's deadline before settling it neutrally. A dispute about one of
this node's own jobs brings that job's record in line with the outcome.
"""

from __future__ import annotations

from contracts.errors import ChainError
from contracts.types import Outcome, Status
from worker.node.duties.base import Duty, kv
from worker.node.duties.reconciler import sync
from worker.node.sources import tx_hex
from worker.node.state import DisputeRow, JobRow
from worker.node.view import TickContext

OUTCOMES = {
    Outcome.PROVIDER_WON: "provider won",
    Outcome.PROVIDER_LOST: "provider slashed",
    Outcome.NEUTRAL: "settled neutrally",
    Outcome.ESCALATED: "escalated to governance",
}


class Resolver(Duty):
    """Resolve disputes past their reveal phase (see the module docstring)."""

    name = "resolver"

    def run(self, ctx: TickContext) -> None:
        for d in self.op.state.select(DisputeRow, "resolved=0 AND commit_end>0 AND reveal_end<=?", (ctx.now,)):
            self.resolve(ctx, d)

    def resolve(self, ctx: TickContext, d: DisputeRow) -> None:
        op = self.op
        entry = ctx.market.entry(d.job_id)
        if entry is None or entry.job is None:
            return
        if entry.job.status != Status.CHALLENGED:
            d.resolved = 1
            d.outcome = OUTCOMES[entry.outcome] if entry.outcome is not None else entry.job.status.label
            op.state.upsert(d)
            return
        try:
            rcpt = op.sender.send(op.h.market.functions.resolveDispute(d.job_id, entry.job.as_tuple()))
        except ChainError as exc:
            self.log.info("resolveDispute for job %d: %s", d.job_id, exc, extra={"job_id": d.job_id})
            return
        ctx.market.apply(rcpt)
        a = op.event(rcpt, "DisputeResolved")["args"]
        outcome = Outcome(a["outcome"])
        if outcome == Outcome.ESCALATED:
            # Governance has until escalationEnd; after it anyone settles neutrally.
            d.reveal_end = int(a["escalationEnd"])
        else:
            d.resolved = 1
        d.outcome = OUTCOMES[outcome]
        op.state.upsert(d)
        ctx.report.resolved.append(d.job_id)
        row = op.state.get(JobRow, d.job_id)
        if row is not None and outcome != Outcome.ESCALATED:
            sync(op, ctx.market, row)  # our own job: its record follows the outcome now
        self.log.warning(
            "resolved dispute %s",
            kv(job=d.job_id, outcome=repr(d.outcome), slashed=a["slashed"], block=rcpt["blockNumber"], tx=tx_hex(rcpt)),
            extra={"job_id": d.job_id, "block": rcpt["blockNumber"], "tx": tx_hex(rcpt)},
        )
