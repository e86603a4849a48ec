"""The committee duty (every role): notes the disputes this node is a party to
(``JobChallenged``) or sits on (``CommitteeDrawn``, one entry per seat); as a party, draws the
committee once the draw block is past; as a member, re-executes the disputed job, commits
``keccak256(abi.encode(jobId, voter, outputHash, units, salt))`` in the commit phase and reveals
in the reveal phase.

A member re-executes only receipts made on its own runtime and GPU class and abstains
otherwise. The salt is written to the state file before the commitment leaves the process, and a
vote already on chain is never sent twice (a restart looks for its own ``VoteCommitted`` /
``VoteRevealed`` first).
"""

from __future__ import annotations

import os

from contracts.bindings import vote_commitment
from contracts.errors import ChainError
from contracts.types import ZERO32
from contracts.types import Phase as DisputePhase
from worker.node.compute import ComputeFailure, ComputeRequest
from worker.node.duties.base import Duty, h, kv
from worker.node.sources import topic_of, tx_hex
from worker.node.state import DisputeRow, JobRow
from worker.node.view import TickContext

#: a dispute's phase times once there is nothing to vote on: the resolver takes it from there
NO_VOTE = 1


class Committee(Duty):
    """Watch, draw, commit, reveal (see the module docstring)."""

    name = "committee"

    def run(self, ctx: TickContext) -> None:
        self.watch(ctx.safe)
        for d in self.op.state.select(DisputeRow, "resolved=0"):
            if not d.commit_end:
                self.draw(ctx, d)
            elif d.member and d.vote == "pending":
                if ctx.now >= d.commit_end:
                    self._missed(d, "commit")
                else:
                    self.commit(ctx, d)
            elif d.member and d.vote == "committed":
                if d.commit_end <= ctx.now < d.reveal_end:
                    self.reveal(ctx, d)
                elif ctx.now >= d.reveal_end:
                    self._missed(d, "reveal")
        ctx.checked("after_commit", ctx.report.committed)
        ctx.checked("after_reveal", ctx.report.revealed)

    def _missed(self, d: DisputeRow, phase: str) -> None:
        d.vote = "missed"
        self.op.state.upsert(d)
        self.log.warning("missed the %s phase of job %d", phase, d.job_id, extra={"job_id": d.job_id})

    def watch(self, safe: int) -> None:
        op = self.op
        start = op.state.cursor("challenged", op.h.manifest.deployment_block)
        if start > safe:
            return
        me = op.address.lower()
        for ev in op.reader.logs(["JobChallenged", "CommitteeDrawn"], start, safe):
            a = ev["args"]
            job_id = int(a["jobId"])
            if ev["event"] == "JobChallenged":
                if str(a["challenger"]).lower() == me or op.state.get(JobRow, job_id) is not None:
                    op.state.insert_new(DisputeRow(job_id, 0, 0, 0))
                continue
            seats = sum(1 for m in a["seats"] if str(m).lower() == me)
            self.drawn(job_id, seats, int(a["commitEnd"]), int(a["revealEnd"]), int(ev["blockNumber"]))
        op.state.set_cursor("challenged", safe + 1)

    def drawn(self, job_id: int, seats: int, commit_end: int, reveal_end: int, block: int) -> None:
        """Notes a drawn committee: phase times for a party, a pending vote for a member."""
        d = self.op.state.get(DisputeRow, job_id)
        if d is None and not seats:
            return
        if d is None:
            d = DisputeRow(job_id, 0, 0, 0)
        if d.commit_end and d.member == seats:
            return  # seen already
        d.member, d.commit_end, d.reveal_end = seats, commit_end, reveal_end
        if seats and d.vote == "none":
            d.vote = "pending"
            self.log.info("on the committee %s", kv(job=job_id, seats=seats, commit_end=commit_end,
                                                     reveal_end=reveal_end, block=block), extra={"job_id": job_id})
        self.op.state.upsert(d)

    def draw(self, ctx: TickContext, d: DisputeRow) -> None:
        """A party's duty: draw the committee once the draw block is past (anyone may); a dispute
        without a committee, or whose draw expired, goes to the resolver."""
        op = self.op
        view = op.h.dispute(d.job_id)
        phase = DisputePhase(view["phase"])
        if phase == DisputePhase.VOTING:
            seats = int(op.h.market.functions.member(d.job_id, op.address).call()[0])
            self.drawn(d.job_id, seats, int(view["commitEnd"]), int(view["revealEnd"]), ctx.head)
            return
        if phase in (DisputePhase.NO_COMMITTEE, DisputePhase.ESCALATED, DisputePhase.SETTLED) or (
            phase == DisputePhase.AWAITING_DRAW and ctx.head > int(view["drawBlock"]) + 256
        ):
            d.commit_end = d.reveal_end = NO_VOTE
            op.state.upsert(d)
            return
        if phase != DisputePhase.AWAITING_DRAW or ctx.head <= int(view["drawBlock"]):
            return
        try:
            rcpt = op.sender.send(op.h.market.functions.drawCommittee(d.job_id))
        except ChainError as exc:
            self.log.info("drawCommittee for job %d: %s", d.job_id, exc, extra={"job_id": d.job_id})
            return
        a = op.event(rcpt, "CommitteeDrawn")["args"]
        names = ",".join(str(m)[:10] for m in a["seats"]) or "none (too few eligible)"
        tx = tx_hex(rcpt)
        self.log.info("drew the committee %s", kv(job=d.job_id, seats=names, block=rcpt["blockNumber"], tx=tx),
                      extra={"job_id": d.job_id, "block": rcpt["blockNumber"], "tx": tx})
        if not a["seats"]:
            d.commit_end = d.reveal_end = NO_VOTE
            op.state.upsert(d)

    def _voted(self, ctx: TickContext, event: str, job_id: int) -> bool:
        entry = ctx.market.entry(job_id)
        start = entry.challenged_block if entry is not None and entry.challenged_block else None
        logs = self.op.reader.logs([event], start or self.op.h.manifest.deployment_block, ctx.head,
                                   [topic_of(job_id), topic_of(self.op.address)])
        return any(True for _ in logs)

    def _reexecute(self, ctx: TickContext, d: DisputeRow) -> bool:
        """Computes this member's vote (output, units) and keeps it with a fresh salt."""
        op = self.op
        entry = ctx.market.entry(d.job_id)
        if entry is None or entry.job is None or entry.runtime_hash == ZERO32:
            return False
        if entry.runtime_hash != op.runtime_hash or entry.job.gpu_class != op.gpu_class:
            d.vote = "abstained"
            op.state.upsert(d)
            self.log.warning("abstaining on job %d: the receipt names another runtime or GPU class", d.job_id,
                             extra={"job_id": d.job_id})
            return False
        o = op.executor.run([ComputeRequest(d.job_id, h(entry.job.input_hash))])[0]
        if isinstance(o, ComputeFailure):
            self.log.warning("cannot re-execute job %d for the committee: %s", d.job_id, o.error,
                             extra={"job_id": d.job_id})
            if o.permanent:
                d.vote = "abstained"
                op.state.upsert(d)
            return False
        d.output_hash, d.units, d.salt = h(o.output_hash), o.units, h(os.urandom(32))
        op.state.upsert(d)  # the salt is kept before the commitment leaves this process
        return True

    def commit(self, ctx: TickContext, d: DisputeRow) -> None:
        op = self.op
        if d.output_hash is None and not self._reexecute(ctx, d):
            return
        assert d.output_hash is not None and d.salt is not None
        if self._voted(ctx, "VoteCommitted", d.job_id):
            d.vote = "committed"
            op.state.upsert(d)
            return
        commitment = vote_commitment(d.job_id, op.address, bytes.fromhex(d.output_hash[2:]), int(d.units or 0),
                                     bytes.fromhex(d.salt[2:]))
        try:
            rcpt = op.sender.send(op.h.market.functions.commitVote(d.job_id, commitment))
        except ChainError as exc:
            self.log.warning("commit for job %d failed: %s", d.job_id, exc, extra={"job_id": d.job_id})
            return
        d.vote, d.commit_tx = "committed", tx_hex(rcpt)
        op.state.upsert(d)
        ctx.report.committed.append(d.job_id)
        self.log.info("committed vote %s", kv(job=d.job_id, block=rcpt["blockNumber"], tx=d.commit_tx),
                      extra={"job_id": d.job_id, "block": rcpt["blockNumber"], "tx": d.commit_tx})

    def reveal(self, ctx: TickContext, d: DisputeRow) -> None:
        op = self.op
        assert d.output_hash is not None and d.salt is not None
        if self._voted(ctx, "VoteRevealed", d.job_id):
            d.vote = "revealed"
            op.state.upsert(d)
            return
        fn = op.h.market.functions.revealVote(d.job_id, bytes.fromhex(d.output_hash[2:]), int(d.units or 0),
                                              bytes.fromhex(d.salt[2:]))
        try:
            rcpt = op.sender.send(fn)
        except ChainError as exc:
            self.log.warning("reveal for job %d failed: %s", d.job_id, exc, extra={"job_id": d.job_id})
            return
        d.vote, d.reveal_tx = "revealed", tx_hex(rcpt)
        op.state.upsert(d)
        ctx.report.revealed.append(d.job_id)
        self.log.info("revealed vote %s", kv(job=d.job_id, output=d.output_hash[:18], units=d.units,
                                             block=rcpt["blockNumber"], tx=d.reveal_tx),
                      extra={"job_id": d.job_id, "block": rcpt["blockNumber"], "tx": d.reveal_tx})
