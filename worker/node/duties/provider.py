"""The provider's intake duty: finds posted jobs for the model it serves, fetches each input and
checks its hash and format *before* claiming (a job it cannot run is never claimed), claims up to
its capacity, and runs the model over all claimed jobs at once (token-budgeted batches that span
jobs).

Claims are pipelined: every claim of the tick is broadcast (``TxSender.submit``, nonces in a
row, each estimated against the pending block) before the duty waits for any, so they are
mined together instead of one per block. Each record is written (``claiming``) before its
transaction leaves, and set to ``claimed`` once it is mined.
"""

from __future__ import annotations

import time

from common.blobs import BlobIntegrityError, BlobNotFoundError, BlobTooLargeError, BlobUnavailableError
from contracts import jobio
from contracts.chain import PendingTx
from contracts.errors import ChainError, InvalidJobInputError
from contracts.types import Job, Status
from worker.node.compute import ComputeRequest, ComputeResult
from worker.node.duties.base import Duty, Operator, h, kv
from worker.node.duties.reconciler import sync
from worker.node.errors import JobSourceError
from worker.node.sources import ChainJobSource, JobSource, tx_hex
from worker.node.state import CandidateRow, CandidateState, JobRow, Phase
from worker.node.view import TickContext

#: Claim refusals that say this node cannot claim at all now (not that one job is gone).
NOT_ABLE = ("ProviderNotActive", "InsufficientFreeStake", "ModelNotServed")


class Provider(Duty):
    """Discover, claim, compute (see the module docstring)."""

    name = "provider"

    def __init__(self, op: Operator, source: JobSource | None = None) -> None:
        super().__init__(op)
        self.source: JobSource = source or self._chain_source()
        self._claim_paused_until = 0.0

    def _chain_source(self) -> ChainJobSource:
        return ChainJobSource(self.op.h, self.op.state, [self.op.model_id], self.op.config.log_chunk_blocks)

    def run(self, ctx: TickContext) -> None:
        self.discover(ctx)
        self.claim(ctx)
        self.compute(ctx)

    def discover(self, ctx: TickContext) -> None:
        try:
            found = self.source.poll(ctx.safe)
        except JobSourceError as exc:
            self.log.warning("%s; reading JobPosted logs from the chain instead", exc)
            self.source = self._chain_source()
            found = self.source.poll(ctx.safe)
        for c in found:
            if self.op.state.get(JobRow, c.job_id) is None and self.op.state.insert_new(
                CandidateRow(c.job_id, h(c.input_hash), c.deadline)
            ):
                self.log.debug("found job %d", c.job_id)

    def _drop(self, c: CandidateRow, why: str) -> None:
        c.state, c.note = CandidateState.GONE, why
        self.op.state.upsert(c)
        self.log.debug("skipping job %d: %s", c.job_id, why)

    def _input_ok(self, c: CandidateRow, wall: float) -> bool:
        """Whether the job's input is there and well formed (retried later when it is missing)."""
        cfg = self.op.config
        try:
            jobio.decode_input(self.op.store.get(c.input_hash, max_bytes=cfg.max_input_bytes), cfg.max_input_bytes)
        except (BlobNotFoundError, BlobUnavailableError) as exc:
            c.attempts += 1
            c.next_try = wall + cfg.input_retry_s
            c.note = str(exc)
            if c.attempts >= cfg.max_input_attempts:
                self._drop(c, f"input unavailable: {exc}")
            else:
                self.op.state.upsert(c)
            return False
        except (BlobIntegrityError, BlobTooLargeError, InvalidJobInputError) as exc:
            self._drop(c, f"bad input: {exc}")
            return False
        return True

    def claim(self, ctx: TickContext) -> None:
        wall = time.time()
        if wall < self._claim_paused_until:
            return
        st, cfg = self.op.state, self.op.config
        capacity = cfg.max_open_jobs - st.count_jobs(Phase.CLAIMING, Phase.CLAIMED, Phase.COMPUTED, Phase.SUBMITTING)
        sent: list[tuple[CandidateRow, JobRow, Job, PendingTx]] = []
        for c in st.select(CandidateRow, "state='open' AND next_try<=?", (wall,), order="deadline, job_id"):
            if capacity <= 0:
                break
            if c.deadline <= ctx.now + cfg.min_deadline_margin_s:
                self._drop(c, "deadline too close")
                continue
            entry = ctx.market.entry(c.job_id)
            if entry is None or entry.job is None:
                # Listed by a gateway after this tick read the chain (or not on this chain at all).
                c.attempts += 1
                if c.attempts >= cfg.max_input_attempts:
                    self._drop(c, "not on chain")
                else:
                    st.upsert(c)
                continue
            job = entry.job
            if job.status != Status.POSTED:
                self._drop(c, job.status.label)
                continue
            if not self._input_ok(c, wall):
                continue
            row = JobRow(c.job_id, Phase.CLAIMING, c.input_hash, job.deadline)
            st.upsert(row)  # recorded before the transaction
            try:
                pending = self.op.sender.submit(self.op.h.market.functions.claimJob(c.job_id, job.as_tuple()))
            except ChainError as exc:
                if exc.error_name in NOT_ABLE:
                    row.phase, row.note = Phase.ABANDONED, str(exc)
                    st.upsert(row)
                    self._claim_paused_until = wall + cfg.claim_pause_s
                    self.log.warning("cannot claim: %s; pausing claims for %.0fs", exc, cfg.claim_pause_s)
                    break
                self.log.info("claim of job %d failed (%s); checking the chain", c.job_id, exc)
                if sync(self.op, ctx.market, row).phase == Phase.ABANDONED:
                    self._drop(c, row.note or "taken")
                continue
            sent.append((c, row, job, pending))
            capacity -= 1
        for c, row, _job, pending in sent:
            try:
                rcpt = self.op.sender.wait(pending)
            except ChainError as exc:
                self.log.info("claim of job %d failed (%s); checking the chain", c.job_id, exc)
                if sync(self.op, ctx.market, row).phase == Phase.ABANDONED:
                    self._drop(c, row.note or "taken")
                continue
            ctx.market.apply(rcpt)
            row.phase, row.claim_tx = Phase.CLAIMED, tx_hex(rcpt)
            st.upsert(row)
            c.state, c.note = CandidateState.CLAIMED, None
            st.upsert(c)
            ctx.report.claimed.append(c.job_id)
            self.log.info("claimed", extra={"job_id": c.job_id, "block": rcpt["blockNumber"], "tx": row.claim_tx})
        ctx.checked("after_claim", ctx.report.claimed)

    def compute(self, ctx: TickContext) -> None:
        rows = []
        for r in self.op.state.jobs(Phase.CLAIMED):
            if ctx.now >= r.deadline:
                r.phase, r.note = Phase.ABANDONED, "deadline passed before the output was ready"
                self.op.state.upsert(r)
                self.log.error("job %d missed its deadline %d", r.job_id, r.deadline, extra={"job_id": r.job_id})
            else:
                rows.append(r)
        if not rows:
            return
        t0 = time.monotonic()
        done = ctx.report.computed
        outcomes = self.op.executor.run([ComputeRequest(r.job_id, r.input_hash) for r in rows], owner=self.op.address)
        for r, o in zip(rows, outcomes, strict=True):
            if isinstance(o, ComputeResult):
                r.phase, r.output_blob, r.output_hash = Phase.COMPUTED, o.output_blob, h(o.output_hash)
                r.units = o.units
                done.append(r.job_id)
            else:
                r.attempts += 1
                r.note = o.error
                if o.permanent:
                    r.phase = Phase.ABANDONED
                    self.log.error("job %d cannot be computed: %s", r.job_id, o.error, extra={"job_id": r.job_id})
                else:
                    self.log.warning("job %d compute failed (will retry): %s", r.job_id, o.error,
                                     extra={"job_id": r.job_id})
            self.op.state.upsert(r)
        if done:
            units = sum(r.units or 0 for r in rows if r.job_id in done)
            self.log.info("computed %d jobs in %.2fs %s", len(done), time.monotonic() - t0, kv(jobs=done, units=units))
        ctx.checked("after_compute", done)
