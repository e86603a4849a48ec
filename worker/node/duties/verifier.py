"""The verifier duty: reads every ``ReceiptSubmitted`` of other providers, samples it with
randomness the provider could not know when it delivered (see :meth:`Verifier.sampled`;
``sample_all`` takes every receipt), re-executes the sampled ones on its own runtime, and
challenges a mismatch, posting the bond.

Receipts name the runtime hash and GPU class; a verifier checks only receipts made on its own
runtime and GPU class (bitwise reproducibility is only promised there).
"""

from __future__ import annotations

from eth_hash.auto import keccak

from contracts.errors import ChainError
from contracts.types import Job, Status
from worker.node.compute import ComputeFailure, ComputeRequest
from worker.node.duties.base import Duty, h, kv
from worker.node.sources import tx_hex
from worker.node.state import CheckRow, DisputeRow
from worker.node.view import TickContext

BPS = 10_000


class Verifier(Duty):
    """Sample, re-execute, challenge (see the module docstring)."""

    name = "verifier"

    def run(self, ctx: TickContext) -> None:
        self.watch(ctx.safe)
        self.verify(ctx)

    def watch(self, safe: int) -> None:
        op = self.op
        start = op.state.cursor("receipts", op.h.manifest.deployment_block)
        if start > safe:
            return
        me = op.address.lower()
        for ev in op.reader.logs(["ReceiptSubmitted"], start, safe):
            a = ev["args"]
            if str(a["provider"]).lower() == me:
                continue
            op.state.insert_new(CheckRow(
                int(a["jobId"]), str(a["provider"]), int(ev["blockNumber"]), h(bytes(a["outputHash"])),
                h(bytes(a["runtimeHash"])), h(bytes(a["gpuClass"])), int(a["challengeEnd"]),
            ))
        op.state.set_cursor("receipts", safe + 1)

    def sampled(self, job_id: int, receipt_block: int, rate_bps: int) -> bool:
        """This verifier's private sample: keccak256(secret ++ blockhash(receipt block + 1) ++
        uint256(jobId)) mod 10000 < sampleRateBps, with ``secret`` derived from the verifier's
        key. The provider cannot know that block's hash when it delivers, and cannot compute
        any verifier's draw even afterwards, so it cannot tell which receipts are checked (nor
        have its own sybil challenge first exactly when it was sampled)."""
        bh = bytes(self.op.h.w3.eth.get_block(receipt_block + 1)["hash"])
        seed = keccak(self.sampling_secret + bh + job_id.to_bytes(32, "big"))
        return int.from_bytes(seed, "big") % BPS < rate_bps

    @property
    def sampling_secret(self) -> bytes:
        """A per-verifier secret for sampling, derived from its private key (never published)."""
        return keccak(b"hearth verifier sampling" + bytes.fromhex(self.op.key.removeprefix("0x")))

    def _to_check(self, ctx: TickContext, c: CheckRow) -> Job | None:
        """The job of a receipt to re-execute now, or None (deciding what can be decided)."""
        op = self.op
        if ctx.now >= c.challenge_end:
            c.verdict = "expired"
            op.state.upsert(c)
            return None
        if c.verdict == "pending":
            if not op.config.sample_all:
                if ctx.head < c.block + 1:
                    return None  # the sampling block does not exist yet
                if not self.sampled(c.job_id, c.block, ctx.params.sample_rate_bps):
                    c.verdict = "unsampled"
                    op.state.upsert(c)
                    return None
            if c.runtime_hash != h(op.runtime_hash) or c.gpu_class != h(op.gpu_class):
                c.verdict, c.note = "incomparable", "receipt names another runtime or GPU class"
                op.state.upsert(c)
                self.log.info("cannot check job %d: runtime %s gpu %s differ from this node's", c.job_id,
                              c.runtime_hash[:10], c.gpu_class[:10], extra={"job_id": c.job_id})
                return None
        entry = ctx.market.entry(c.job_id)
        if entry is None or entry.job is None or entry.job.status != Status.DELIVERED:
            c.verdict, c.note = "moot", entry.job.status.label if entry is not None and entry.job else "not on chain"
            op.state.upsert(c)
            return None
        return entry.job

    def verify(self, ctx: TickContext) -> None:
        op = self.op
        todo: list[tuple[CheckRow, Job]] = []
        for c in op.state.select(CheckRow, "verdict IN ('pending', 'mismatch')"):
            job = self._to_check(ctx, c)
            if job is not None:
                todo.append((c, job))
        fresh = [(c, j) for c, j in todo if c.verdict == "pending"]
        outcomes = op.executor.run([ComputeRequest(c.job_id, h(j.input_hash)) for c, j in fresh]) if fresh else []
        for (c, _), o in zip(fresh, outcomes, strict=True):
            if isinstance(o, ComputeFailure):
                if o.permanent:
                    c.verdict, c.note = "uncheckable", o.error
                    op.state.upsert(c)
                self.log.warning("cannot re-execute job %d: %s", c.job_id, o.error, extra={"job_id": c.job_id})
                continue
            ctx.report.verified.append(c.job_id)
            if h(o.output_hash) == c.output_hash:
                c.verdict = "match"
                op.state.upsert(c)
                self.log.info("verified %s", kv(job=c.job_id, provider=c.provider, result="match"))
            else:
                c.verdict, c.note = "mismatch", f"re-executed {h(o.output_hash)}"
                op.state.upsert(c)
                self.log.warning("MISMATCH %s", kv(job=c.job_id, provider=c.provider, receipt=c.output_hash[:18],
                                                   reexecuted=h(o.output_hash)[:18]))
        for c, job in todo:
            if c.verdict == "mismatch":
                self.challenge(ctx, c, job)

    def challenge(self, ctx: TickContext, c: CheckRow, job: Job) -> None:
        op = self.op
        if ctx.now >= job.challenge_end:
            c.verdict = "expired"
            op.state.upsert(c)
            return
        bond = ctx.params.challenge_bond
        usd = op.h.usd.functions
        if bond:
            if usd.balanceOf(op.address).call() < bond:
                self.log.error("cannot challenge job %d: the bond is %d and this node holds less", c.job_id, bond,
                               extra={"job_id": c.job_id})
                return
            if usd.allowance(op.address, op.h.market.address).call() < bond:
                op.h.approve_usd(op.key, bond * 20)
        try:
            rcpt = op.sender.send(op.h.market.functions.challenge(c.job_id, job.as_tuple()))
        except ChainError as exc:
            self.log.warning("challenge of job %d failed: %s", c.job_id, exc, extra={"job_id": c.job_id})
            if op.h.status(c.job_id) != Status.DELIVERED:
                c.verdict, c.note = "moot", str(exc)
                op.state.upsert(c)
            return
        ctx.market.apply(rcpt)
        a = op.event(rcpt, "JobChallenged")["args"]
        c.verdict, c.challenge_tx = "challenged", tx_hex(rcpt)
        op.state.upsert(c)
        op.state.insert_new(DisputeRow(c.job_id, 0, 0, 0))
        ctx.report.challenged.append(c.job_id)
        self.log.warning(
            "challenged %s",
            kv(job=c.job_id, provider=c.provider, bond=a["bond"], draw_block=a["drawBlock"], block=rcpt["blockNumber"],
               tx=c.challenge_tx),
            extra={"job_id": c.job_id, "block": rcpt["blockNumber"], "tx": c.challenge_tx},
        )
