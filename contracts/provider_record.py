"""A provider's record on the chain: the challenges against its work and how they ended, its
slashes, and what it collected and withdrew (what ``hearth provider status`` shows).

Everything is read from events in bounded ranges (:func:`contracts.logs.scan_logs`, at most
``span`` blocks per ``eth_getLogs``, narrowed when a node refuses a range). Challenges are rare
and a provider's batches and jobs are many, so the network's challenges are read first and then
matched to the provider (``BatchCommitted`` of the questioned batches and ``ReceiptSubmitted`` of
the challenged jobs, filtered by the provider's topic): the provider's every batch and job is
never read.

A questioned leaf of a serving-plane batch has the statuses of the indexer's ``leaf_cases``:
``demanded`` (its data asked for, not yet revealed), ``revealed`` (the demand answered),
``disputed`` (a leaf dispute is open), ``upheld`` and ``fraud`` (slashed). A per-job challenge is
``pending`` until its dispute resolves, then ``IJobMarket.Outcome``'s label (``provider_won``,
``provider_lost``, ``neutral``, or ``escalated`` while governance may still decide).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from web3 import Web3
from web3.contract import Contract
from web3.types import EventData

from contracts.bindings import Hearth, decode_log, event_topics
from contracts.logs import scan_logs
from contracts.types import Outcome

#: blocks per ``eth_getLogs`` call
DEFAULT_SPAN = 10_000
#: values per topic position of one filter (nodes cap the size of a filter)
TOPIC_VALUES_MAX = 100

LEAF_EVENTS = ("LeafDemanded", "LeafRevealed", "LeafChallenged", "LeafUpheld", "LeafFraudProven")
LEAF_STATUSES = ("demanded", "revealed", "disputed", "upheld", "fraud")
#: statuses where the provider's answer or a verdict is still to come
LEAF_PENDING = ("demanded", "disputed")
JOB_OUTCOMES = ("pending", "escalated", "provider_won", "provider_lost", "neutral")


@dataclass(frozen=True)
class LeafChallenge:
    """A questioned leaf of one of the provider's batches."""

    batch_id: int
    index: int
    challenger: str
    status: str
    withheld: bool = False
    """fraud because the demanded leaf was never revealed"""
    by_default: bool = False
    """upheld because no verdict came in time (the neutral default)"""
    slashed: int = 0
    """staking-token wei slashed for it"""
    refunded: int = 0
    """payment-token wei refunded to the payer from the provider's escrow bond"""
    block: int = 0
    """block of its latest event"""


@dataclass(frozen=True)
class JobChallenge:
    """A challenged job the provider delivered (the per-job path)."""

    job_id: int
    challenger: str
    outcome: str
    slashed: int = 0
    block: int = 0


@dataclass(frozen=True)
class Slash:
    """A ``Staking.Slashed`` of the provider (for any cause: a fraud, an expired claim, a
    committee vote)."""

    amount: int
    recipient: str
    jailed_until: int
    block: int
    tx_hash: str


@dataclass(frozen=True)
class Earnings:
    """What the provider took out: vouchers collected from the escrow (paid to its wallet at
    once), and payment-token and staking-token credits withdrawn from the job market and the
    batch settlement."""

    collected: int = 0
    collections: int = 0
    withdrawn_market: int = 0
    withdrawn_settlement: int = 0
    rewards_withdrawn: int = 0
    """staking-token wei (committee and challenger rewards)"""


@dataclass(frozen=True)
class ProviderRecord:
    provider: str
    from_block: int
    to_block: int
    leaf_challenges: tuple[LeafChallenge, ...]
    job_challenges: tuple[JobChallenge, ...]
    slashes: tuple[Slash, ...]
    earnings: Earnings

    def leaf_outcomes(self) -> dict[str, int]:
        """Questioned leaves by status (every status, zeros included)."""
        n = Counter(c.status for c in self.leaf_challenges)
        return {s: n[s] for s in LEAF_STATUSES}

    def job_outcomes(self) -> dict[str, int]:
        n = Counter(c.outcome for c in self.job_challenges)
        return {o: n[o] for o in JOB_OUTCOMES}

    @property
    def slashed_total(self) -> int:
        return sum(s.amount for s in self.slashes)


def read_provider_record(h: Hearth, provider: str, *, from_block: int | None = None, to_block: int | None = None,
                         span: int = DEFAULT_SPAN) -> ProviderRecord:
    """The provider's record in ``[from_block, to_block]`` (default: the deployment block to the
    head), reading at most ``span`` blocks per call."""
    me = Web3.to_checksum_address(provider)
    frm = h.manifest.deployment_block if from_block is None else from_block
    to = int(h.w3.eth.block_number) if to_block is None else to_block
    scan = _Scan(h.w3, frm, to, span)
    slashes = tuple(_slash(ev) for ev in scan([h.staking], [event_topics(h.staking, ["Slashed"]), _topic(me)]))
    leaves = _leaf_challenges(scan, h.settlement, me) if h.settlement is not None else ()
    return ProviderRecord(me, frm, to, leaves, _job_challenges(scan, h.market, me), slashes, _earnings(scan, h, me))


def _earnings(scan: _Scan, h: Hearth, me: str) -> Earnings:
    collected = collections = 0
    if h.escrow is not None:
        for ev in scan([h.escrow], [event_topics(h.escrow, ["Collected"]), None, _topic(me)]):
            collected += int(ev["args"]["amount"])
            collections += 1
    # The market and the settlement declare Withdrawn and RewardsWithdrawn alike: one filter.
    sources = [h.market] + ([h.settlement] if h.settlement is not None else [])
    withdrawn = {c.address: 0 for c in sources}
    rewards = 0
    for ev in scan(sources, [event_topics(h.market, ["Withdrawn", "RewardsWithdrawn"]), _topic(me)]):
        if ev["event"] == "RewardsWithdrawn":
            rewards += int(ev["args"]["amount"])
        else:
            withdrawn[Web3.to_checksum_address(ev["address"])] += int(ev["args"]["amount"])
    from_market = withdrawn.pop(h.market.address)
    return Earnings(collected, collections, from_market, sum(withdrawn.values()), rewards)


class _Scan:
    """Decoded logs of some contracts over the record's range, ``span`` blocks per call."""

    def __init__(self, w3: Web3, frm: int, to: int, span: int) -> None:
        self.w3, self.frm, self.to, self.span = w3, frm, to, span

    def __call__(self, contracts: Sequence[Contract], topics: list[Any]) -> Iterator[EventData]:
        by_address = {c.address: c for c in contracts}
        address = contracts[0].address if len(contracts) == 1 else list(by_address)
        for lg in scan_logs(self.w3, {"address": address, "topics": topics}, self.frm, self.to, max_span=self.span):
            yield decode_log(by_address[Web3.to_checksum_address(lg["address"])], lg)


def _topic(value: int | str) -> str:
    raw = value.to_bytes(32, "big") if isinstance(value, int) else bytes.fromhex(value[2:]).rjust(32, b"\x00")
    return "0x" + raw.hex()


def _groups(values: Sequence[int]) -> Iterator[list[str]]:
    for i in range(0, len(values), TOPIC_VALUES_MAX):
        yield [_topic(v) for v in values[i:i + TOPIC_VALUES_MAX]]


def _slash(ev: EventData) -> Slash:
    a = ev["args"]
    return Slash(int(a["amount"]), str(a["recipient"]), int(a["jailedUntil"]), int(ev["blockNumber"]),
                 "0x" + bytes(ev["transactionHash"]).hex())


def _leaf_challenges(scan: _Scan, settlement: Contract, me: str) -> tuple[LeafChallenge, ...]:
    cases: dict[tuple[int, int], LeafChallenge] = {}
    owner: dict[int, str] = {}  # batch id -> provider, where an outcome event named it
    for ev in scan([settlement], [event_topics(settlement, LEAF_EVENTS)]):
        a = ev["args"]
        key = (int(a["batchId"]), int(a["index"]))
        cases[key] = _fold_leaf(cases.get(key), ev["event"], a, int(ev["blockNumber"]))
        if "provider" in a:
            owner[key[0]] = str(a["provider"])
    unknown = sorted({b for b, _ in cases} - owner.keys())
    for ids in _groups(unknown):
        for ev in scan([settlement], [event_topics(settlement, ["BatchCommitted"]), ids, _topic(me)]):
            owner[int(ev["args"]["batchId"])] = me
    return tuple(c for (b, _), c in sorted(cases.items()) if owner.get(b) == me)


def _fold_leaf(case: LeafChallenge | None, name: str, a: Any, block: int) -> LeafChallenge:
    c = replace(case or LeafChallenge(int(a["batchId"]), int(a["index"]), challenger="", status=""), block=block)
    if name == "LeafDemanded":
        return replace(c, challenger=str(a["challenger"]), status="demanded")
    if name == "LeafRevealed":
        return replace(c, status="revealed")
    if name == "LeafChallenged":
        return replace(c, challenger=str(a["challenger"]), status="disputed")
    if name == "LeafUpheld":
        return replace(c, status="upheld", by_default=bool(a["byDefault"]))
    return replace(c, status="fraud", challenger=str(a["challenger"]), withheld=bool(a["withheld"]),
                   slashed=int(a["slashed"]), refunded=int(a["refunded"]))


def _job_challenges(scan: _Scan, market: Contract, me: str) -> tuple[JobChallenge, ...]:
    cases: dict[int, JobChallenge] = {}
    for ev in scan([market], [event_topics(market, ["JobChallenged", "DisputeResolved"])]):
        a, job_id, block = ev["args"], int(ev["args"]["jobId"]), int(ev["blockNumber"])
        if ev["event"] == "JobChallenged":
            cases[job_id] = JobChallenge(job_id, str(a["challenger"]), "pending", block=block)
        else:
            c = cases.get(job_id) or JobChallenge(job_id, "", "pending")
            cases[job_id] = replace(c, outcome=Outcome(int(a["outcome"])).label, slashed=int(a["slashed"]),
                                    block=block)
    mine: set[int] = set()
    for ids in _groups(sorted(cases)):
        for ev in scan([market], [event_topics(market, ["ReceiptSubmitted"]), ids, _topic(me)]):
            mine.add(int(ev["args"]["jobId"]))
    return tuple(cases[j] for j in sorted(mine))
