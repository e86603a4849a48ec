"""The provider / verifier node: one loop, one operator key, one transaction sender.

Each :meth:`Node.tick` reads the chain head (its timestamp is the clock for every deadline and
window) and then, depending on the role:

provider
    finds posted jobs for the models it serves (``JobPosted`` logs, or the indexer's table),
    fetches each input and checks its hash *before* claiming (a job it cannot run is never
    claimed), claims, runs the model over all claimed jobs at once (token-budgeted batches
    that span jobs), stores the outputs, signs and submits the EIP-712 receipts, finalizes
    its delivered jobs once their challenge window has passed, and withdraws its earnings on
    a schedule;
verifier
    reads every ``ReceiptSubmitted`` of other providers and samples it with randomness the
    provider could not know when it posted: ``keccak256(abi.encodePacked(blockhash(b + 1),
    jobId)) mod 10000 < sampleRateBps`` where ``b`` is the receipt's block (``--sample-all``
    takes every receipt); re-executes the sampled ones on its own runtime, and challenges a
    mismatch, posting the bond;
every role
    sits on dispute committees it is drawn for (``JobChallenged`` lists them): re-executes,
    commits ``keccak256(abi.encode(jobId, voter, outputHash, salt))`` in the commit phase,
    reveals in the reveal phase, and calls ``resolveDispute`` after it (as do the parties).

Receipts name the runtime hash and GPU class; a verifier or committee member re-executes
only receipts made on its own runtime and GPU class (bitwise reproducibility is only
promised there) and abstains otherwise.

Restart safety: see :mod:`worker.node.state`. The node acts only on what the chain says
(it re-reads a job's record before each transaction), so a repeated step is refused by the
contract's status checks at gas estimation and never reaches the chain.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eth_hash.auto import keccak
from web3.exceptions import TransactionNotFound
from web3.types import EventData

from common.blobs import (
    BlobIntegrityError,
    BlobNotFoundError,
    BlobStore,
    BlobTooLargeError,
    BlobUnavailableError,
)
from contracts import jobio
from contracts.bindings import Hearth, decode_log, vote_commitment
from contracts.errors import ChainError, InvalidJobInputError
from contracts.types import Job, MarketParams, Outcome, Receipt, Status, gpu_class_bytes
from contracts.types import Phase as DisputePhase
from worker.node.compute import ComputeFailure, ComputeRequest, ComputeResult
from worker.node.errors import JobSourceError, NodeError
from worker.node.executor import Executor
from worker.node.sources import ChainJobSource, ChainReader, JobSource, topic_of, tx_hex
from worker.node.state import CandidateRow, CandidateState, CheckRow, DisputeRow, JobRow, NodeState, Phase
from worker.settings import Role

log = logging.getLogger(__name__)

_OUTCOMES = {
    Outcome.PROVIDER_WON: "provider won",
    Outcome.PROVIDER_LOST: "provider slashed",
    Outcome.NEUTRAL: "settled neutrally",
    Outcome.ESCALATED: "escalated to governance",
}

BPS = 10_000
#: ``checkpoint(name, job_ids)`` is called after each step with the jobs it advanced.
Checkpoint = Callable[[str, list[int]], None]


@dataclass(frozen=True)
class NodeConfig:
    role: Role = "provider"
    sample_all: bool = False
    gpu_class: str = "cpu"
    confirmations: int = 0
    log_chunk_blocks: int = 5000
    max_open_jobs: int = 64
    min_deadline_margin_s: int = 30
    withdraw_interval_s: float = 3600.0
    min_withdraw: int = 1
    max_input_bytes: int = 1 << 20
    poll_interval_s: float = 2.0
    input_retry_s: float = 5.0
    max_input_attempts: int = 60
    claim_pause_s: float = 60.0
    name: str | None = None
    """A label for log lines (default: the start of the operator address)."""

    @property
    def provides(self) -> bool:
        return self.role in ("provider", "both")

    @property
    def verifies(self) -> bool:
        return self.role in ("verifier", "both")


@dataclass
class TickReport:
    """What one tick did (job ids per action), for callers and tests."""

    block: int = 0
    timestamp: int = 0
    claimed: list[int] = field(default_factory=list)
    computed: list[int] = field(default_factory=list)
    delivered: list[int] = field(default_factory=list)
    finalized: list[int] = field(default_factory=list)
    verified: list[int] = field(default_factory=list)
    challenged: list[int] = field(default_factory=list)
    committed: list[int] = field(default_factory=list)
    revealed: list[int] = field(default_factory=list)
    resolved: list[int] = field(default_factory=list)
    withdrawn: int = 0


class _NodeLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Adds the node's label to per-call ``extra`` (job_id, block, tx); the formatter of
    :mod:`common.log` prints them all."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        kwargs["extra"] = {**(self.extra or {}), **kwargs.get("extra", {})}
        return msg, kwargs


def state_path(state_dir: Path, hearth: Hearth, address: str) -> Path:
    """One state file per chain, market deployment and operator address."""
    return state_dir / f"{hearth.chain_id}-{hearth.market.address.lower()}" / f"{address.lower()}.sqlite"


def _h(b: bytes) -> str:
    return "0x" + b.hex()


def _kv(**fields: Any) -> str:
    return " ".join(f"{k}={v}" for k, v in fields.items() if v is not None)


class Node:
    """A worker node for one operator key (see the module docstring)."""

    def __init__(
        self,
        hearth: Hearth,
        key: str,
        store: BlobStore,
        executor: Executor,
        config: NodeConfig | None = None,
        *,
        state_dir: Path,
        job_source: JobSource | None = None,
        checkpoint: Checkpoint | None = None,
    ) -> None:
        self.h = hearth
        self.key = key
        self.sender = hearth.sender(key)
        self.address: str = self.sender.address
        self.store = store
        self.executor = executor
        self.config = config or NodeConfig()
        self.model_id = executor.model_hash
        self.runtime_hash = executor.runtime_hash
        self.gpu_class = gpu_class_bytes(self.config.gpu_class)
        self.state = NodeState(state_path(state_dir, hearth, self.address))
        self.reader = ChainReader(hearth, self.config.log_chunk_blocks)
        self.source: JobSource = job_source or ChainJobSource(
            hearth, self.state, [self.model_id], self.config.log_chunk_blocks
        )
        self._checkpoint = checkpoint
        self._reconciled = False
        self._last_withdraw = -math.inf
        self._claim_paused_until = 0.0
        self.last_ok: float | None = None
        self.consecutive_failures = 0
        self.log = _NodeLog(log, {"node": self.config.name or self.address[:10]})

    # ------------------------------------------------------------------ lifecycle

    def preflight(self) -> None:
        """Checks the chain and this operator's standing; logs what it finds."""
        self.h.check_chain()
        st = self.h.staking.functions
        active = st.isActive(self.address).call()
        serves = st.serves(self.address, self.model_id).call()
        if active and serves and not st.isEligible(self.address, self.model_id).call():
            # Back from a jail (or under a new minimum stake): re-enter the committee set.
            try:
                self.sender.send(st.refresh(self.address))
                self.log.info("rejoined the eligible set of model %s", _h(self.model_id)[:10])
            except ChainError as exc:
                self.log.warning("refresh of this node's eligibility failed: %s", exc)
        self.log.info(
            "node %s role=%s model=%s runtime=%s gpu=%s source=%s active=%s serving=%s",
            self.address,
            self.config.role,
            _h(self.model_id)[:10],
            _h(self.runtime_hash)[:10],
            self.config.gpu_class,
            self.source.name,
            active,
            serves,
        )
        if not (active and serves):
            self.log.warning(
                "node %s is not an active staked provider serving model %s: it cannot claim, "
                "challenge or sit on committees",
                self.address,
                _h(self.model_id),
            )

    def run(self, stop: threading.Event, *, once: bool = False) -> None:
        """Ticks every ``poll_interval_s`` until ``stop`` is set (one tick with ``once``)."""
        self.preflight()
        while not stop.is_set():
            try:
                self.tick(final=once)
                self.last_ok = time.monotonic()
                self.consecutive_failures = 0
            except Exception:
                if once:
                    raise
                self.consecutive_failures += 1
                self.log.exception(
                    "tick failed (%d in a row); retrying in %.1fs",
                    self.consecutive_failures,
                    self.config.poll_interval_s,
                )
            if once:
                return
            stop.wait(self.config.poll_interval_s)

    def healthy(self) -> bool:
        """Whether a tick succeeded recently."""
        if self.last_ok is None:
            return False
        return time.monotonic() - self.last_ok < max(30.0, 10 * self.config.poll_interval_s)

    def close(self) -> None:
        self.state.close()

    # ------------------------------------------------------------------ one pass

    def tick(self, *, final: bool = False) -> TickReport:
        """One pass over everything this node can do now. ``final`` also withdraws
        whatever is credited, ignoring the schedule (``--once``)."""
        head = self.h.w3.eth.block_number
        safe = max(0, head - self.config.confirmations)
        now = int(self.h.w3.eth.get_block(head)["timestamp"])
        rep = TickReport(block=head, timestamp=now)
        if not self._reconciled:
            self._reconcile()
            self._reconciled = True
        if self.config.provides:
            self._discover(safe)
            self._claim(now, rep)
            self._compute(now, rep)
            self._deliver(now, rep)
            self._settle(now, rep)
        self._watch_disputes(safe)
        if self.config.verifies:
            self._watch_receipts(safe)
            self._verify(head, now, rep)
        self._disputes(now, rep)
        self._withdraw(rep, force=final)
        return rep

    def _checked(self, name: str, ids: list[int]) -> None:
        if ids and self._checkpoint is not None:
            self._checkpoint(name, list(ids))

    # ------------------------------------------------------------------ provider: own jobs

    def _mine(self, job: Job) -> bool:
        return job.provider.lower() == self.address.lower()

    def _sync(self, row: JobRow) -> JobRow:
        """Brings a job's local record in line with the chain (the source of truth)."""
        job = self.h.job(row.job_id)
        before = row.phase
        if job.status == Status.POSTED:
            # Our claim never made it: the job is claimable again.
            row.phase = Phase.ABANDONED
            row.note = "claim not mined"
            self.state.upsert(CandidateRow(row.job_id, row.input_hash, row.deadline))
        elif not self._mine(job):
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
            row.output_hash = _h(job.output_hash)
        elif job.status == Status.CHALLENGED:
            row.phase = Phase.CHALLENGED
        elif job.status == Status.FINALIZED:
            row.phase = Phase.FINALIZED
        elif job.status == Status.REFUNDED:
            row.phase = Phase.REFUNDED
        if row.phase != before:
            self.state.upsert(row)
            self.log.info(
                "job %d: %s -> %s (from chain) %s", row.job_id, before, row.phase, _kv(job=row.job_id, note=row.note)
            )
        return row

    def _reconcile(self) -> None:
        rows = self.state.jobs(
            Phase.CLAIMING, Phase.CLAIMED, Phase.COMPUTED, Phase.SUBMITTING, Phase.DELIVERED, Phase.CHALLENGED
        )
        if rows:
            self.log.info("resuming %d open jobs from %s", len(rows), self.state.path)
        for row in rows:
            self._sync(row)

    def _discover(self, safe: int) -> None:
        try:
            found = self.source.poll(safe)
        except JobSourceError as exc:
            self.log.warning("%s; reading JobPosted logs from the chain instead", exc)
            self.source = ChainJobSource(self.h, self.state, [self.model_id], self.config.log_chunk_blocks)
            found = self.source.poll(safe)
        for c in found:
            if self.state.get(JobRow, c.job_id) is None and self.state.insert_new(
                CandidateRow(c.job_id, _h(c.input_hash), c.deadline)
            ):
                self.log.debug("found job %d", c.job_id)

    def _drop(self, c: CandidateRow, why: str) -> None:
        c.state, c.note = CandidateState.GONE, why
        self.state.upsert(c)
        self.log.debug("skipping job %d: %s", c.job_id, why)

    def _claim(self, now: int, rep: TickReport) -> None:
        wall = time.time()
        if wall < self._claim_paused_until:
            return
        busy = self.state.count_jobs(Phase.CLAIMING, Phase.CLAIMED, Phase.COMPUTED, Phase.SUBMITTING)
        capacity = self.config.max_open_jobs - busy
        for c in self.state.select(CandidateRow, "state='open' AND next_try<=?", (wall,), order="deadline, job_id"):
            if capacity <= 0:
                break
            if c.deadline <= now + self.config.min_deadline_margin_s:
                self._drop(c, "deadline too close")
                continue
            status = Status(self.h.market.functions.jobStatus(c.job_id).call())
            if status != Status.POSTED:
                self._drop(c, status.label)
                continue
            try:
                jobio.decode_input(
                    self.store.get(c.input_hash, max_bytes=self.config.max_input_bytes), self.config.max_input_bytes
                )
            except (BlobNotFoundError, BlobUnavailableError) as exc:
                c.attempts += 1
                c.next_try = wall + self.config.input_retry_s
                c.note = str(exc)
                if c.attempts >= self.config.max_input_attempts:
                    self._drop(c, f"input unavailable: {exc}")
                else:
                    self.state.upsert(c)
                continue
            except (BlobIntegrityError, BlobTooLargeError, InvalidJobInputError) as exc:
                self._drop(c, f"bad input: {exc}")
                continue
            job = self.h.job(c.job_id)
            row = JobRow(c.job_id, Phase.CLAIMING, c.input_hash, job.deadline)
            self.state.upsert(row)  # recorded before the transaction
            try:
                rcpt = self.h.claim(self.key, c.job_id, job)
            except ChainError as exc:
                if exc.error_name in ("ProviderNotActive", "InsufficientFreeStake", "ModelNotServed"):
                    row.phase, row.note = Phase.ABANDONED, str(exc)
                    self.state.upsert(row)
                    self._claim_paused_until = wall + self.config.claim_pause_s
                    self.log.warning("cannot claim: %s; pausing claims for %.0fs", exc, self.config.claim_pause_s)
                    break
                self.log.info("claim of job %d failed (%s); checking the chain", c.job_id, exc)
                row = self._sync(row)
                if row.phase == Phase.ABANDONED:
                    self._drop(c, row.note or "taken")
                    continue
                rcpt = None
            if rcpt is not None:
                row.phase, row.claim_tx = Phase.CLAIMED, tx_hex(rcpt)
                self.state.upsert(row)
                self.log.info(
                    "claimed",
                    extra={"job_id": c.job_id, "block": rcpt["blockNumber"], "tx": row.claim_tx},
                )
            c.state, c.note = CandidateState.CLAIMED, None
            self.state.upsert(c)
            rep.claimed.append(c.job_id)
            capacity -= 1
        self._checked("after_claim", rep.claimed)

    def _compute(self, now: int, rep: TickReport) -> None:
        rows = []
        for r in self.state.jobs(Phase.CLAIMED):
            if now >= r.deadline:
                r.phase, r.note = Phase.ABANDONED, "deadline passed before the output was ready"
                self.state.upsert(r)
                self.log.error("job %d missed its deadline %d", r.job_id, r.deadline)
            else:
                rows.append(r)
        if not rows:
            return
        t0 = time.monotonic()
        outcomes = self.executor.run(
            [ComputeRequest(r.job_id, r.input_hash) for r in rows], owner=self.address
        )
        for r, o in zip(rows, outcomes, strict=True):
            if isinstance(o, ComputeResult):
                r.phase, r.output_blob, r.output_hash = Phase.COMPUTED, o.output_blob, _h(o.output_hash)
                r.units = o.units
                self.state.upsert(r)
                rep.computed.append(r.job_id)
            else:
                r.attempts += 1
                r.note = o.error
                if o.permanent:
                    r.phase = Phase.ABANDONED
                    self.log.error("job %d cannot be computed: %s", r.job_id, o.error)
                else:
                    self.log.warning("job %d compute failed (will retry): %s", r.job_id, o.error)
                self.state.upsert(r)
        if rep.computed:
            self.log.info(
                "computed %d jobs in %.2fs %s",
                len(rep.computed),
                time.monotonic() - t0,
                _kv(jobs=rep.computed, units=sum(r.units or 0 for r in rows if r.job_id in rep.computed)),
            )
        self._checked("after_compute", rep.computed)

    def _deliver(self, now: int, rep: TickReport) -> None:
        for r in self.state.jobs(Phase.COMPUTED, Phase.SUBMITTING):
            if now > r.deadline:
                r.phase, r.note = Phase.ABANDONED, "deadline passed before the receipt"
                self.state.upsert(r)
                self.log.error("job %d missed its deadline %d", r.job_id, r.deadline)
                continue
            assert r.output_hash is not None and r.units is not None
            job = self.h.job(r.job_id)
            if job.status != Status.CLAIMED or not self._mine(job):
                self._sync(r)
                continue
            receipt = Receipt(
                r.job_id, bytes.fromhex(r.output_hash[2:]), r.units, self.model_id, self.runtime_hash, self.gpu_class
            )
            if r.signature is None:
                r.signature = _h(self.h.sign_receipt(self.key, receipt))
            r.phase = Phase.SUBMITTING
            self.state.upsert(r)  # recorded before the transaction
            try:
                rcpt = self.h.submit_receipt(self.key, receipt, bytes.fromhex(r.signature[2:]), job)
            except ChainError as exc:
                self.log.warning("receipt for job %d failed (%s); checking the chain", r.job_id, exc)
                self._sync(r)
                continue
            ev = _event(self.h, rcpt, "ReceiptSubmitted")
            r.phase, r.receipt_tx = Phase.DELIVERED, tx_hex(rcpt)
            r.challenge_end = int(ev["args"]["challengeEnd"])
            self.state.upsert(r)
            rep.delivered.append(r.job_id)
            self.log.info(
                "delivered %s",
                _kv(units=r.units, payment=ev["args"]["payment"], output=r.output_hash[:18]),
                extra={"job_id": r.job_id, "block": rcpt["blockNumber"], "tx": r.receipt_tx},
            )
        self._checked("after_receipt", rep.delivered)

    def _receipt_dropped(self, r: JobRow) -> bool:
        """Whether the receipt transaction we sent is no longer on the chain (reorged out)."""
        if r.receipt_tx is None:
            return False
        try:
            self.h.w3.eth.get_transaction_receipt(r.receipt_tx)  # type: ignore[arg-type]
        except TransactionNotFound:
            return True
        return False

    def _settle(self, now: int, rep: TickReport) -> None:
        for r in self.state.jobs(Phase.DELIVERED, Phase.CHALLENGED):
            if r.phase == Phase.DELIVERED and self._receipt_dropped(r):
                self._sync(r)
                continue
            if r.phase == Phase.DELIVERED and r.challenge_end is not None and now < r.challenge_end:
                continue
            job = self.h.job(r.job_id)
            if job.status == Status.DELIVERED and self._mine(job):
                if now < job.challenge_end:
                    r.phase, r.challenge_end = Phase.DELIVERED, job.challenge_end
                    self.state.upsert(r)
                    continue
                try:
                    rcpt = self.h.finalize(self.key, r.job_id, job)
                except ChainError as exc:
                    self.log.warning("finalize of job %d failed (%s); checking the chain", r.job_id, exc)
                    self._sync(r)
                    continue
                a = _event(self.h, rcpt, "JobFinalized")["args"]
                r.phase, r.finalize_tx = Phase.FINALIZED, tx_hex(rcpt)
                self.state.upsert(r)
                rep.finalized.append(r.job_id)
                self.log.info(
                    "finalized %s",
                    _kv(paid=a["providerAmount"], fee=a["fee"], refund=a["clientRefund"]),
                    extra={"job_id": r.job_id, "block": rcpt["blockNumber"], "tx": r.finalize_tx},
                )
            elif job.status == Status.CHALLENGED:
                if r.phase != Phase.CHALLENGED:
                    r.phase = Phase.CHALLENGED
                    self.state.upsert(r)
                    self.log.warning("job %d was challenged; waiting for the committee", r.job_id)
            else:
                r = self._sync(r)
                if r.phase == Phase.REFUNDED:
                    self.log.error(
                        "job %d refunded to its client: this node lost the dispute and was slashed", r.job_id
                    )
        self._checked("after_finalize", rep.finalized)

    # ------------------------------------------------------------------ verifier

    def _watch_receipts(self, safe: int) -> None:
        start = self.state.cursor("receipts", self.h.manifest.deployment_block)
        if start > safe:
            return
        me = self.address.lower()
        for ev in self.reader.logs(["ReceiptSubmitted"], start, safe):
            a = ev["args"]
            if str(a["provider"]).lower() == me:
                continue
            self.state.insert_new(
                CheckRow(
                    int(a["jobId"]),
                    str(a["provider"]),
                    int(ev["blockNumber"]),
                    _h(bytes(a["outputHash"])),
                    _h(bytes(a["runtimeHash"])),
                    _h(bytes(a["gpuClass"])),
                    int(a["challengeEnd"]),
                )
            )
        self.state.set_cursor("receipts", safe + 1)

    def sampled(self, job_id: int, receipt_block: int, rate_bps: int) -> bool:
        """This verifier's private sample: keccak256(secret ++ blockhash(receipt block + 1) ++
        uint256(jobId)) mod 10000 < sampleRateBps, with ``secret`` derived from the verifier's
        key. The provider cannot know that block's hash when it delivers, and cannot compute
        any verifier's draw even afterwards, so it cannot tell which receipts are checked (nor
        have its own sybil challenge first exactly when it was sampled)."""
        bh = bytes(self.h.w3.eth.get_block(receipt_block + 1)["hash"])
        seed = keccak(self.sampling_secret + bh + job_id.to_bytes(32, "big"))
        return int.from_bytes(seed, "big") % BPS < rate_bps

    @property
    def sampling_secret(self) -> bytes:
        """A per-verifier secret for sampling, derived from its private key (never published)."""
        return keccak(b"hearth verifier sampling" + bytes.fromhex(self.key.removeprefix("0x")))

    def _verify(self, head: int, now: int, rep: TickReport) -> None:
        rows = self.state.select(CheckRow, "verdict IN ('pending', 'mismatch')")
        if not rows:
            return
        rate = self.h.market_params().sample_rate_bps
        todo: list[tuple[CheckRow, Job]] = []
        for c in rows:
            if now >= c.challenge_end:
                c.verdict = "expired"
                self.state.upsert(c)
                continue
            if c.verdict == "pending":
                if not self.config.sample_all:
                    if head < c.block + 1:
                        continue  # the sampling block does not exist yet
                    if not self.sampled(c.job_id, c.block, rate):
                        c.verdict = "unsampled"
                        self.state.upsert(c)
                        continue
                if c.runtime_hash != _h(self.runtime_hash) or c.gpu_class != _h(self.gpu_class):
                    c.verdict, c.note = "incomparable", "receipt names another runtime or GPU class"
                    self.state.upsert(c)
                    self.log.info(
                        "cannot check job %d: runtime %s gpu %s differ from this node's",
                        c.job_id,
                        c.runtime_hash[:10],
                        c.gpu_class[:10],
                    )
                    continue
            job = self.h.job(c.job_id)
            if job.status != Status.DELIVERED:
                c.verdict, c.note = "moot", job.status.label
                self.state.upsert(c)
                continue
            todo.append((c, job))
        if not todo:
            return
        fresh = [(c, j) for c, j in todo if c.verdict == "pending"]
        outcomes = self.executor.run(
            [ComputeRequest(c.job_id, _h(j.input_hash)) for c, j in fresh]
        )
        for (c, _), o in zip(fresh, outcomes, strict=True):
            if isinstance(o, ComputeFailure):
                if o.permanent:
                    c.verdict, c.note = "uncheckable", o.error
                    self.state.upsert(c)
                self.log.warning("cannot re-execute job %d: %s", c.job_id, o.error)
                continue
            rep.verified.append(c.job_id)
            if _h(o.output_hash) == c.output_hash:
                c.verdict = "match"
                self.state.upsert(c)
                self.log.info("verified %s", _kv(job=c.job_id, provider=c.provider, result="match"))
            else:
                c.verdict, c.note = "mismatch", f"re-executed {_h(o.output_hash)}"
                self.state.upsert(c)
                self.log.warning(
                    "MISMATCH %s",
                    _kv(
                        job=c.job_id, provider=c.provider, receipt=c.output_hash[:18], reexecuted=_h(o.output_hash)[:18]
                    ),
                )
        for c, job in todo:
            if c.verdict == "mismatch":
                self._challenge(c, job, now, rep)

    def _challenge(self, c: CheckRow, job: Job, now: int, rep: TickReport) -> None:
        if now >= job.challenge_end:
            c.verdict = "expired"
            self.state.upsert(c)
            return
        bond = int(MarketParams(*self.h.market.functions.params().call()).challenge_bond)
        usd = self.h.usd.functions
        if bond:
            if usd.balanceOf(self.address).call() < bond:
                self.log.error("cannot challenge job %d: the bond is %d and this node holds less", c.job_id, bond)
                return
            if usd.allowance(self.address, self.h.market.address).call() < bond:
                self.h.approve_usd(self.key, bond * 20)
        try:
            rcpt = self.h.challenge(self.key, c.job_id, job)
        except ChainError as exc:
            self.log.warning("challenge of job %d failed: %s", c.job_id, exc)
            if Status(self.h.market.functions.jobStatus(c.job_id).call()) != Status.DELIVERED:
                c.verdict, c.note = "moot", str(exc)
                self.state.upsert(c)
            return
        a = _event(self.h, rcpt, "JobChallenged")["args"]
        c.verdict, c.challenge_tx = "challenged", tx_hex(rcpt)
        self.state.upsert(c)
        self.state.insert_new(DisputeRow(c.job_id, 0, 0, 0))
        rep.challenged.append(c.job_id)
        self.log.warning(
            "challenged %s",
            _kv(
                job=c.job_id,
                provider=c.provider,
                bond=a["bond"],
                draw_block=a["drawBlock"],
                block=rcpt["blockNumber"],
                tx=c.challenge_tx,
            ),
            extra={"job_id": c.job_id, "block": rcpt["blockNumber"], "tx": c.challenge_tx},
        )

    # ------------------------------------------------------------------ disputes (every role)

    def _watch_disputes(self, safe: int) -> None:
        """Records the disputes this node is a party to (``JobChallenged``) and those whose
        committee it was drawn on (``CommitteeDrawn``, one entry per seat)."""
        start = self.state.cursor("challenged", self.h.manifest.deployment_block)
        if start > safe:
            return
        me = self.address.lower()
        for ev in self.reader.logs(["JobChallenged", "CommitteeDrawn"], start, safe):
            a = ev["args"]
            job_id = int(a["jobId"])
            if ev["event"] == "JobChallenged":
                party = str(a["challenger"]).lower() == me or self.state.get(JobRow, job_id) is not None
                if party:
                    self.state.insert_new(DisputeRow(job_id, 0, 0, 0))
                continue
            seats = sum(1 for m in a["seats"] if str(m).lower() == me)
            self._drawn(job_id, seats, int(a["commitEnd"]), int(a["revealEnd"]), int(ev["blockNumber"]))
        self.state.set_cursor("challenged", safe + 1)

    def _drawn(self, job_id: int, seats: int, commit_end: int, reveal_end: int, block: int) -> None:
        """Notes a drawn committee: phase times for a party, a pending vote for a member."""
        d = self.state.get(DisputeRow, job_id)
        if d is None and not seats:
            return
        if d is None:
            d = DisputeRow(job_id, 0, 0, 0)
        if d.commit_end and d.member == seats:
            return  # seen already
        d.member, d.commit_end, d.reveal_end = seats, commit_end, reveal_end
        if seats and d.vote == "none":
            d.vote = "pending"
            self.log.info(
                "on the committee %s",
                _kv(job=job_id, seats=seats, commit_end=commit_end, reveal_end=reveal_end, block=block),
            )
        self.state.upsert(d)

    def _disputes(self, now: int, rep: TickReport) -> None:
        for d in self.state.select(DisputeRow, "resolved=0"):
            if not d.commit_end:
                self._draw(d)
                continue
            if d.member and d.vote == "pending":
                if now >= d.commit_end:
                    d.vote = "missed"
                    self.state.upsert(d)
                    self.log.warning("missed the commit phase of job %d", d.job_id)
                else:
                    self._commit(d, rep)
            elif d.member and d.vote == "committed":
                if d.commit_end <= now < d.reveal_end:
                    self._reveal(d, rep)
                elif now >= d.reveal_end:
                    d.vote = "missed"
                    self.state.upsert(d)
                    self.log.warning("missed the reveal phase of job %d", d.job_id)
            if now >= d.reveal_end:
                self._resolve(d, rep)
        self._checked("after_commit", rep.committed)
        self._checked("after_reveal", rep.revealed)

    def _draw(self, d: DisputeRow) -> None:
        """A party's duty: draw the committee once the draw block is past (anyone may); settle
        a dispute without a committee, or whose draw expired, neutrally."""
        view = self.h.dispute(d.job_id)
        phase = DisputePhase(view["phase"])
        head = self.h.w3.eth.block_number
        if phase == DisputePhase.VOTING:
            self._drawn(d.job_id, int(self.h.market.functions.member(d.job_id, self.address).call()[0]),
                        int(view["commitEnd"]), int(view["revealEnd"]), head)
            return
        if phase in (DisputePhase.NO_COMMITTEE, DisputePhase.ESCALATED, DisputePhase.SETTLED) or (
            phase == DisputePhase.AWAITING_DRAW and head > int(view["drawBlock"]) + 256
        ):
            d.commit_end = d.reveal_end = 1  # nothing to vote on: resolve from now on
            self.state.upsert(d)
            return
        if phase != DisputePhase.AWAITING_DRAW or head <= int(view["drawBlock"]):
            return
        try:
            rcpt = self.h.draw_committee(self.key, d.job_id)
        except ChainError as exc:
            self.log.info("drawCommittee for job %d: %s", d.job_id, exc)
            return
        a = _event(self.h, rcpt, "CommitteeDrawn")["args"]
        self.log.info(
            "drew the committee %s",
            _kv(job=d.job_id, seats=",".join(str(m)[:10] for m in a["seats"]) or "none (too few eligible)",
                block=rcpt["blockNumber"], tx=tx_hex(rcpt)),
            extra={"job_id": d.job_id, "block": rcpt["blockNumber"], "tx": tx_hex(rcpt)},
        )
        if not a["seats"]:
            d.commit_end = d.reveal_end = 1
            self.state.upsert(d)

    def _voted(self, event: str, job_id: int) -> bool:
        head = self.h.w3.eth.block_number
        logs = self.reader.logs(
            [event], self.h.manifest.deployment_block, head, [topic_of(job_id), topic_of(self.address)]
        )
        return any(True for _ in logs)

    def _commit(self, d: DisputeRow, rep: TickReport) -> None:
        if d.output_hash is None:
            events = self.h.job_events(d.job_id)
            rec = next((e for e in events if e.name == "ReceiptSubmitted"), None)
            posted = next((e for e in events if e.name == "JobPosted"), None)
            if rec is None or posted is None:
                return
            if bytes(rec.args["runtimeHash"]) != self.runtime_hash or bytes(rec.args["gpuClass"]) != self.gpu_class:
                d.vote = "abstained"
                self.state.upsert(d)
                self.log.warning("abstaining on job %d: the receipt names another runtime or GPU class", d.job_id)
                return
            o = self.executor.run(
                [ComputeRequest(d.job_id, _h(bytes(posted.args["inputHash"])))]
            )[0]
            if isinstance(o, ComputeFailure):
                self.log.warning("cannot re-execute job %d for the committee: %s", d.job_id, o.error)
                if o.permanent:
                    d.vote = "abstained"
                    self.state.upsert(d)
                return
            d.output_hash, d.units, d.salt = _h(o.output_hash), o.units, _h(os.urandom(32))
            self.state.upsert(d)  # the salt is kept before the commitment leaves this process
        assert d.salt is not None
        if self._voted("VoteCommitted", d.job_id):
            d.vote = "committed"
            self.state.upsert(d)
            return
        commitment = vote_commitment(
            d.job_id, self.address, bytes.fromhex(d.output_hash[2:]), int(d.units or 0), bytes.fromhex(d.salt[2:])
        )
        try:
            rcpt = self.sender.send(self.h.market.functions.commitVote(d.job_id, commitment))
        except ChainError as exc:
            self.log.warning("commit for job %d failed: %s", d.job_id, exc)
            return
        d.vote, d.commit_tx = "committed", tx_hex(rcpt)
        self.state.upsert(d)
        rep.committed.append(d.job_id)
        self.log.info(
            "committed vote %s",
            _kv(job=d.job_id, block=rcpt["blockNumber"], tx=d.commit_tx),
            extra={"job_id": d.job_id, "block": rcpt["blockNumber"], "tx": d.commit_tx},
        )

    def _reveal(self, d: DisputeRow, rep: TickReport) -> None:
        assert d.output_hash is not None and d.salt is not None
        if self._voted("VoteRevealed", d.job_id):
            d.vote = "revealed"
            self.state.upsert(d)
            return
        fn = self.h.market.functions.revealVote(
            d.job_id, bytes.fromhex(d.output_hash[2:]), int(d.units or 0), bytes.fromhex(d.salt[2:])
        )
        try:
            rcpt = self.sender.send(fn)
        except ChainError as exc:
            self.log.warning("reveal for job %d failed: %s", d.job_id, exc)
            return
        d.vote, d.reveal_tx = "revealed", tx_hex(rcpt)
        self.state.upsert(d)
        rep.revealed.append(d.job_id)
        self.log.info(
            "revealed vote %s",
            _kv(job=d.job_id, output=d.output_hash[:18], units=d.units, block=rcpt["blockNumber"], tx=d.reveal_tx),
            extra={"job_id": d.job_id, "block": rcpt["blockNumber"], "tx": d.reveal_tx},
        )

    def _resolve(self, d: DisputeRow, rep: TickReport) -> None:
        status = Status(self.h.market.functions.jobStatus(d.job_id).call())
        if status != Status.CHALLENGED:
            events = self.h.job_events(d.job_id)
            done = next((e for e in reversed(events) if e.name == "DisputeResolved"), None)
            d.resolved = 1
            d.outcome = _OUTCOMES[Outcome(done.args["outcome"])] if done is not None else status.label
            self.state.upsert(d)
            return
        try:
            rcpt = self.h.resolve_dispute(self.key, d.job_id, self.h.job(d.job_id))
        except ChainError as exc:
            self.log.info("resolveDispute for job %d: %s", d.job_id, exc)
            return
        a = _event(self.h, rcpt, "DisputeResolved")["args"]
        outcome = Outcome(a["outcome"])
        if outcome == Outcome.ESCALATED:
            # Governance has until escalationEnd; after it anyone settles neutrally.
            d.reveal_end = int(a["escalationEnd"])
        else:
            d.resolved = 1
        d.outcome = _OUTCOMES[outcome]
        self.state.upsert(d)
        rep.resolved.append(d.job_id)
        row = self.state.get(JobRow, d.job_id)
        if row is not None and outcome != Outcome.ESCALATED:
            self._sync(row)  # our own job: its record follows the outcome now
        self.log.warning(
            "resolved dispute %s",
            _kv(
                job=d.job_id, outcome=repr(d.outcome), slashed=a["slashed"], block=rcpt["blockNumber"], tx=tx_hex(rcpt)
            ),
            extra={"job_id": d.job_id, "block": rcpt["blockNumber"], "tx": tx_hex(rcpt)},
        )

    # ------------------------------------------------------------------ earnings

    def _withdraw(self, rep: TickReport, *, force: bool) -> None:
        wall = time.monotonic()
        if not force and wall - self._last_withdraw < self.config.withdraw_interval_s:
            return
        rewards = int(self.h.market.functions.rewardOf(self.address).call())
        if rewards:
            try:
                rcpt = self.h.withdraw_rewards(self.key)
                self.log.info(
                    "withdrew dispute rewards %s",
                    _kv(amount=rewards, token="stake", block=rcpt["blockNumber"], tx=tx_hex(rcpt)),
                    extra={"block": rcpt["blockNumber"], "tx": tx_hex(rcpt)},
                )
            except ChainError as exc:
                self.log.warning("withdrawRewards failed: %s", exc)
        balance = int(self.h.market.functions.balanceOf(self.address).call())
        if balance < max(1, self.config.min_withdraw):
            return
        try:
            rcpt = self.h.withdraw(self.key)
        except ChainError as exc:
            self.log.warning("withdraw failed: %s", exc)
            return
        self._last_withdraw = wall
        rep.withdrawn = balance
        self.log.info(
            "withdrew %s",
            _kv(amount=balance, block=rcpt["blockNumber"], tx=tx_hex(rcpt)),
            extra={"block": rcpt["blockNumber"], "tx": tx_hex(rcpt)},
        )


def _event(h: Hearth, rcpt: Any, name: str) -> EventData:
    for lg in rcpt["logs"]:
        if lg["address"] == h.market.address:
            ev = decode_log(h.market, lg)
            if ev["event"] == name:
                return ev
    raise NodeError(f"transaction {tx_hex(rcpt)} emitted no {name}")


__all__ = ["Checkpoint", "Node", "NodeConfig", "TickReport", "state_path"]
