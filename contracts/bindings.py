"""Typed bindings over the deployed contracts, shared by the CLI, worker, gateway and tests.

Jobs are stored on-chain as a commitment (see ``IJobMarket``); :meth:`Hearth.job` rebuilds the
full record from the job's events (the fold of ``contracts.jobfold``, which the indexer uses
too), which is what every call that acts on a job passes along.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from web3 import Web3
from web3.contract import Contract
from web3.types import BlockIdentifier, EventData, LogReceipt, TxReceipt

from contracts import eip712
from contracts.chain import ErrorDecoder, TxSender, connect
from contracts.errors import ChainError, ContractsError
from contracts.jobfold import apply_job_event as apply_job_event  # re-exported: the fold's old home
from contracts.logs import scan_logs
from contracts.manifest import DeployedContract, Manifest
from contracts.types import Job, JobRequest, MarketParams, Permit, Receipt, Status

log = logging.getLogger(__name__)

JOB_EVENTS = (
    "JobPosted", "JobClaimed", "ClaimReleased", "ReceiptSubmitted", "JobChallenged", "DisputeResolved",
    "JobFinalized", "JobRefunded",
)


class UnknownJobError(ContractsError, LookupError):
    """No job with that id on this deployment."""


@dataclass(frozen=True)
class JobEvent:
    name: str
    args: dict[str, Any]
    block_number: int
    tx_hash: str
    log_index: int


class Hearth:
    """The deployed contracts on one chain, from a manifest."""

    def __init__(self, manifest: Manifest, w3: Web3 | None = None) -> None:
        self.manifest = manifest
        self.w3 = w3 or connect(manifest.rpc_url)
        c = manifest.contracts
        self.usd: Contract = self._contract(c["HearthUSD"])
        self.hst: Contract = self._contract(c["HearthStake"])
        self.registry: Contract = self._contract(c["ModelRegistry"])
        self.dispute_game: Contract = self._contract(c["DisputeGame"])
        self.staking: Contract = self._contract(c["Staking"])
        self.market: Contract = self._contract(c["JobMarket"])
        # Batched settlement (absent from manifests written before it existed).
        self.escrow: Contract | None = self._contract(c["PaymentEscrow"]) if "PaymentEscrow" in c else None
        self.settlement: Contract | None = self._contract(c["BatchSettlement"]) if "BatchSettlement" in c else None
        self.decoder = ErrorDecoder((d.abi for d in c.values()), {d.address: n for n, d in c.items()})
        self._senders: dict[str, TxSender] = {}

    def _contract(self, d: DeployedContract) -> Contract:
        return self.w3.eth.contract(address=Web3.to_checksum_address(d.address), abi=d.abi)

    @property
    def chain_id(self) -> int:
        return self.manifest.chain_id

    def check_chain(self) -> None:
        actual = self.w3.eth.chain_id
        if actual != self.manifest.chain_id:
            raise ChainError(f"wrong chain: the RPC reports chain id {actual}, the manifest {self.manifest.chain_id}")

    def sender(self, key: str) -> TxSender:
        """The one transaction sender for this key (nonce management lives there)."""
        if key not in self._senders:
            self._senders[key] = TxSender(self.w3, key, self.decoder)
        return self._senders[key]

    # ------------------------------------------------------------ reading jobs

    def job_events(self, job_id: int, to_block: BlockIdentifier = "latest") -> list[JobEvent]:
        topics = [self.w3.keccak(text=_event_signature(self.market, n)).hex() for n in JOB_EVENTS]
        last = to_block if isinstance(to_block, int) else int(self.w3.eth.get_block(to_block)["number"])
        logs = scan_logs(self.w3, {
            "address": self.market.address,
            "topics": [["0x" + t.removeprefix("0x") for t in topics], "0x" + job_id.to_bytes(32, "big").hex()],
        }, self.manifest.deployment_block, last)
        return [self._decode(lg) for lg in logs]

    def _decode(self, lg: LogReceipt) -> JobEvent:
        ev = decode_log(self.market, lg)
        return JobEvent(ev["event"], dict(ev["args"]), ev["blockNumber"], ev["transactionHash"].hex(), ev["logIndex"])

    def job(self, job_id: int) -> Job:
        """The job's current record, rebuilt from its events."""
        job: Job | None = None
        for ev in self.job_events(job_id):
            job = apply_job_event(job, ev.name, ev.args)
        if job is None:
            raise UnknownJobError(f"unknown job {job_id} on market {self.market.address}")
        return job

    def market_params(self) -> MarketParams:
        """The market's current governance parameters, typed (never index the raw tuple)."""
        return MarketParams(*self.market.functions.params().call())

    def status(self, job_id: int) -> Status:
        return Status(self.market.functions.jobStatus(job_id).call())

    # ------------------------------------------------------------ writing

    def approve_usd(self, key: str, amount: int) -> TxReceipt:
        return self.sender(key).send(self.usd.functions.approve(self.market.address, amount))

    def post_job(
        self, key: str, model_id: bytes, input_hash: bytes, max_payment: int, deadline: int
    ) -> tuple[int, TxReceipt]:
        rcpt = self.sender(key).send(self.market.functions.postJob(model_id, input_hash, max_payment, deadline))
        return self.job_id_from(rcpt), rcpt

    def post_job_with_sig(self, relayer_key: str, req: JobRequest, signature: bytes,
                          permit: Permit | None = None) -> tuple[int, TxReceipt]:
        fn = self.market.functions.postJobWithSig(req.as_tuple(), signature, (permit or Permit()).as_tuple())
        rcpt = self.sender(relayer_key).send(fn)
        return self.job_id_from(rcpt), rcpt

    def fold_receipt(self, job_id: int, job: Job | None, rcpt: TxReceipt) -> Job:
        """``job`` advanced by the market events about ``job_id`` in one transaction receipt."""
        for lg in rcpt["logs"]:
            if lg["address"] == self.market.address:
                ev = decode_log(self.market, lg)
                if ev["args"].get("jobId") == job_id:
                    job = apply_job_event(job, ev["event"], dict(ev["args"]))
        if job is None:
            raise ChainError(f"transaction {rcpt['transactionHash'].hex()} has no event of job {job_id}")
        return job

    def job_id_from(self, rcpt: TxReceipt) -> int:
        for lg in rcpt["logs"]:
            if lg["address"] == self.market.address:
                ev = decode_log(self.market, lg)
                if ev["event"] == "JobPosted":
                    return int(ev["args"]["jobId"])
        raise ChainError("transaction posted no job")

    def claim(self, key: str, job_id: int, job: Job | None = None) -> TxReceipt:
        job = job or self.job(job_id)
        return self.sender(key).send(self.market.functions.claimJob(job_id, job.as_tuple()))

    def sign_receipt(self, key: str, receipt: Receipt) -> bytes:
        return eip712.sign_receipt(key, receipt, self.chain_id, self.market.address)

    def submit_receipt(self, key: str, receipt: Receipt, signature: bytes, job: Job | None = None) -> TxReceipt:
        job = job or self.job(receipt.job_id)
        return self.sender(key).send(self.market.functions.submitReceipt(job.as_tuple(), receipt.as_tuple(), signature))

    def finalize(self, key: str, job_id: int, job: Job | None = None) -> TxReceipt:
        job = job or self.job(job_id)
        return self.sender(key).send(self.market.functions.finalize(job_id, job.as_tuple()))

    def refund(self, key: str, job_id: int, job: Job | None = None) -> TxReceipt:
        job = job or self.job(job_id)
        return self.sender(key).send(self.market.functions.refund(job_id, job.as_tuple()))

    def challenge(self, key: str, job_id: int, job: Job | None = None) -> TxReceipt:
        job = job or self.job(job_id)
        return self.sender(key).send(self.market.functions.challenge(job_id, job.as_tuple()))

    def release_claim(self, key: str, job_id: int, job: Job | None = None) -> TxReceipt:
        job = job or self.job(job_id)
        return self.sender(key).send(self.market.functions.releaseClaim(job_id, job.as_tuple()))

    def draw_committee(self, key: str, job_id: int) -> TxReceipt:
        return self.sender(key).send(self.market.functions.drawCommittee(job_id))

    def commit_vote(self, key: str, job_id: int, output_hash: bytes, units: int, salt: bytes) -> TxReceipt:
        s = self.sender(key)
        commitment = vote_commitment(job_id, s.address, output_hash, units, salt)
        return s.send(self.market.functions.commitVote(job_id, commitment))

    def reveal_vote(self, key: str, job_id: int, output_hash: bytes, units: int, salt: bytes) -> TxReceipt:
        return self.sender(key).send(self.market.functions.revealVote(job_id, output_hash, units, salt))

    def dispute(self, job_id: int) -> dict[str, Any]:
        """``IJobMarket.dispute(jobId)`` as a dict keyed by the struct's field names."""
        names = ("challenger", "provider", "phase", "bond", "drawBlock", "challengedAt", "commitEnd", "revealEnd",
                 "escalationEnd", "seats", "agreeSeats", "disagreeSeats", "modelId", "gpuClass", "outputHash", "units")
        return dict(zip(names, self.market.functions.dispute(job_id).call(), strict=True))

    def withdraw_rewards(self, key: str, to: str | None = None) -> TxReceipt:
        s = self.sender(key)
        return s.send(self.market.functions.withdrawRewards(to or s.address))

    def resolve_dispute(self, key: str, job_id: int, job: Job | None = None) -> TxReceipt:
        job = job or self.job(job_id)
        return self.sender(key).send(self.market.functions.resolveDispute(job_id, job.as_tuple()))

    def withdraw(self, key: str, to: str | None = None) -> TxReceipt:
        s = self.sender(key)
        return s.send(self.market.functions.withdraw(to or s.address))


def vote_commitment(job_id: int, voter: str, output_hash: bytes, units: int, salt: bytes) -> bytes:
    """keccak256(abi.encode(jobId, voter, outputHash, units, salt)), as ``revealVote`` checks."""
    from eth_abi import encode

    return bytes(Web3.keccak(encode(["uint256", "address", "bytes32", "uint64", "bytes32"],
                                    [job_id, voter, output_hash, units, salt])))


def _abi(contract: Contract) -> list[dict[str, Any]]:
    return cast(list[dict[str, Any]], contract.abi)


def _event_signature(contract: Contract, name: str) -> str:
    for item in _abi(contract):
        if item.get("type") == "event" and item["name"] == name:
            from contracts.chain import _abi_type

            return f"{name}({','.join(_abi_type(i) for i in item['inputs'])})"
    raise ContractsError(f"no event {name}")


_TOPIC_CACHE: dict[tuple[str, str], dict[bytes, Any]] = {}


def decode_log(contract: Contract, lg: LogReceipt | dict[str, Any]) -> EventData:
    """Decodes a log emitted by ``contract`` (any of its events)."""
    key = (contract.address, "events")
    table = _TOPIC_CACHE.get(key)
    if table is None:
        table = {}
        for item in _abi(contract):
            if item.get("type") == "event":
                topic = Web3.keccak(text=_event_signature(contract, item["name"]))
                table[bytes(topic)] = contract.events[item["name"]]()
        _TOPIC_CACHE[key] = table
    topic0 = bytes(lg["topics"][0])
    if topic0 not in table:
        raise ContractsError(f"unknown event topic 0x{topic0.hex()}")
    return table[topic0].process_log(lg)  # type: ignore[no-any-return]


def event_topics(contract: Contract, names: Sequence[str]) -> list[str]:
    return ["0x" + Web3.keccak(text=_event_signature(contract, n)).hex().removeprefix("0x") for n in names]
