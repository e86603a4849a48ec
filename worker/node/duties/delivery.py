"""The provider's delivery duty: signs the EIP-712 receipt of every computed job and submits it,
then finalizes its delivered jobs once their challenge window has passed.

Receipts are pipelined like claims: all of a tick's receipts are broadcast before the duty waits
for any. Each record is set to ``submitting`` (with its signature) before its transaction
leaves, so a restart neither signs twice nor loses one.
"""

from __future__ import annotations

from contracts.chain import PendingTx
from contracts.errors import ChainError
from contracts.types import Receipt, Status
from worker.node.duties.base import Duty, h, kv
from worker.node.duties.reconciler import sync
from worker.node.sources import tx_hex
from worker.node.state import JobRow, Phase
from worker.node.view import TickContext


class Delivery(Duty):
    """Deliver receipts, finalize after the window (see the module docstring)."""

    name = "delivery"

    def run(self, ctx: TickContext) -> None:
        self.deliver(ctx)
        self.settle(ctx)

    def deliver(self, ctx: TickContext) -> None:
        op = self.op
        sent: list[tuple[JobRow, PendingTx]] = []
        for r in op.state.jobs(Phase.COMPUTED, Phase.SUBMITTING):
            if ctx.now > r.deadline:
                r.phase, r.note = Phase.ABANDONED, "deadline passed before the receipt"
                op.state.upsert(r)
                self.log.error("job %d missed its deadline %d", r.job_id, r.deadline, extra={"job_id": r.job_id})
                continue
            assert r.output_hash is not None and r.units is not None
            job = ctx.market.job(r.job_id)
            if job.status != Status.CLAIMED or not op.mine(job):
                sync(op, ctx.market, r)
                continue
            receipt = Receipt(r.job_id, bytes.fromhex(r.output_hash[2:]), r.units, op.model_id, op.runtime_hash,
                              op.gpu_class)
            if r.signature is None:
                r.signature = h(op.h.sign_receipt(op.key, receipt))
            r.phase = Phase.SUBMITTING
            op.state.upsert(r)  # recorded before the transaction
            fn = op.h.market.functions.submitReceipt(job.as_tuple(), receipt.as_tuple(),
                                                     bytes.fromhex(r.signature[2:]))
            try:
                sent.append((r, op.sender.submit(fn)))
            except ChainError as exc:
                self.log.warning("receipt for job %d failed (%s); checking the chain", r.job_id, exc,
                                 extra={"job_id": r.job_id})
                sync(op, ctx.market, r)
        for r, pending in sent:
            try:
                rcpt = op.sender.wait(pending)
            except ChainError as exc:
                self.log.warning("receipt for job %d failed (%s); checking the chain", r.job_id, exc,
                                 extra={"job_id": r.job_id})
                sync(op, ctx.market, r)
                continue
            ctx.market.apply(rcpt)
            assert r.output_hash is not None
            ev = op.event(rcpt, "ReceiptSubmitted")
            r.phase, r.receipt_tx = Phase.DELIVERED, tx_hex(rcpt)
            r.challenge_end = int(ev["args"]["challengeEnd"])
            op.state.upsert(r)
            ctx.report.delivered.append(r.job_id)
            self.log.info("delivered %s", kv(units=r.units, payment=ev["args"]["payment"], output=r.output_hash[:18]),
                          extra={"job_id": r.job_id, "block": rcpt["blockNumber"], "tx": r.receipt_tx})
        ctx.checked("after_receipt", ctx.report.delivered)

    def settle(self, ctx: TickContext) -> None:
        op = self.op
        for r in op.state.jobs(Phase.DELIVERED, Phase.CHALLENGED):
            if r.phase == Phase.DELIVERED and r.challenge_end is not None and ctx.now < r.challenge_end:
                continue
            job = ctx.market.job(r.job_id)
            if job.status == Status.DELIVERED and op.mine(job):
                if ctx.now < job.challenge_end:
                    r.phase, r.challenge_end = Phase.DELIVERED, job.challenge_end
                    op.state.upsert(r)
                    continue
                try:
                    rcpt = op.sender.send(op.h.market.functions.finalize(r.job_id, job.as_tuple()))
                except ChainError as exc:
                    self.log.warning("finalize of job %d failed (%s); checking the chain", r.job_id, exc,
                                     extra={"job_id": r.job_id})
                    sync(op, ctx.market, r)
                    continue
                ctx.market.apply(rcpt)
                a = op.event(rcpt, "JobFinalized")["args"]
                r.phase, r.finalize_tx = Phase.FINALIZED, tx_hex(rcpt)
                op.state.upsert(r)
                ctx.report.finalized.append(r.job_id)
                self.log.info("finalized %s", kv(paid=a["providerAmount"], fee=a["fee"], refund=a["clientRefund"]),
                              extra={"job_id": r.job_id, "block": rcpt["blockNumber"], "tx": r.finalize_tx})
            elif job.status == Status.CHALLENGED:
                if r.phase != Phase.CHALLENGED:
                    r.phase = Phase.CHALLENGED
                    op.state.upsert(r)
                    self.log.warning("job %d was challenged; waiting for the committee", r.job_id,
                                     extra={"job_id": r.job_id})
            elif sync(op, ctx.market, r).phase == Phase.REFUNDED:
                self.log.error("job %d refunded to its client: this node lost the dispute and was slashed",
                               r.job_id, extra={"job_id": r.job_id})
        ctx.checked("after_finalize", ctx.report.finalized)
