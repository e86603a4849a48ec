"""Domain values shared by every package: jobs, receipts, requests, parameters."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from enum import IntEnum
from typing import Any

ZERO_ADDRESS = "0x" + "00" * 20
ZERO32 = b"\x00" * 32


class Outcome(IntEnum):
    """How a dispute ended (mirrors ``IJobMarket.Outcome``)."""

    NONE = 0
    PROVIDER_WON = 1
    PROVIDER_LOST = 2
    NEUTRAL = 3
    ESCALATED = 4

    @property
    def label(self) -> str:
        return self.name.lower()


class Phase(IntEnum):
    """A dispute's phase (mirrors ``IJobMarket.Phase``)."""

    NONE = 0
    AWAITING_DRAW = 1
    NO_COMMITTEE = 2
    VOTING = 3
    ESCALATED = 4
    SETTLED = 5


class Status(IntEnum):
    NONE = 0
    POSTED = 1
    CLAIMED = 2
    DELIVERED = 3
    CHALLENGED = 4
    FINALIZED = 5
    REFUNDED = 6

    @property
    def label(self) -> str:
        return self.name.lower()




@dataclass(frozen=True)
class Job:
    """The full job record the market commits to (mirrors ``IJobMarket.Job``)."""

    client: str
    provider: str
    model_id: bytes
    input_hash: bytes
    max_payment: int
    price_per_unit: int
    payment: int
    collateral: int
    deadline: int
    challenge_end: int
    status: Status
    output_hash: bytes
    units: int = 0
    gpu_class: bytes = ZERO32
    treasury: str = ZERO_ADDRESS
    fee_bps: int = 0
    claim_expiry: int = 0

    def as_tuple(self) -> tuple[Any, ...]:
        return (
            self.client, self.provider, self.model_id, self.input_hash, self.max_payment,
            self.price_per_unit, self.payment, self.collateral, self.deadline, self.challenge_end,
            int(self.status), self.output_hash, self.units, self.gpu_class, self.treasury, self.fee_bps,
            self.claim_expiry,
        )

    def with_(self, **changes: Any) -> Job:
        return replace(self, **changes)


@dataclass(frozen=True)
class JobRequest:
    """What a client signs (EIP-712 ``JobRequest``)."""

    client: str
    model_id: bytes
    input_hash: bytes
    max_payment: int
    deadline: int
    nonce: int

    def as_tuple(self) -> tuple[Any, ...]:
        return (self.client, self.model_id, self.input_hash, self.max_payment, self.deadline, self.nonce)


@dataclass(frozen=True)
class Permit:
    value: int = 0
    deadline: int = 0
    v: int = 0
    r: bytes = ZERO32
    s: bytes = ZERO32

    def as_tuple(self) -> tuple[Any, ...]:
        return (self.value, self.deadline, self.v, self.r, self.s)


@dataclass(frozen=True)
class Receipt:
    """What a provider signs when it delivers (EIP-712 ``Receipt``)."""

    job_id: int
    output_hash: bytes
    units: int
    model_hash: bytes
    runtime_hash: bytes
    gpu_class: bytes

    def as_tuple(self) -> tuple[Any, ...]:
        return (self.job_id, self.output_hash, self.units, self.model_hash, self.runtime_hash, self.gpu_class)


@dataclass(frozen=True)
class MarketParams:
    """Governance parameters (mirrors ``IJobMarket.Params``, field for field). Amounts are in
    wei of the payment token (hUSD, 6 decimals) or of the staking token (HST, 18 decimals) as
    named; periods in seconds. The defaults are the devnet's."""

    treasury: str = ZERO_ADDRESS
    fee_bps: int = 500
    challenge_window: int = 600
    refund_penalty_bps: int = 5000
    sample_rate_bps: int = 1000
    committee_size: int = 3
    claim_collateral: int = 10 * 10**18  # HST
    collateral_per_payment_wei: int = 10**13  # HST wei per hUSD wei: 10 HST per hUSD of maxPayment
    claim_timeout: int = 300
    commit_period: int = 300
    reveal_period: int = 300
    challenge_bond: int = 5 * 10**6  # hUSD
    member_bond: int = 10 * 10**18  # HST per seat
    member_penalty_bps: int = 5000
    challenger_reward_bps: int = 2000
    committee_reward_bps: int = 3000
    escalation_period: int = 3600
    max_challenger_reward: int = 20 * 10**18  # HST

    def as_tuple(self) -> tuple[Any, ...]:
        return tuple(getattr(self, f.name) for f in fields(self))

    def collateral_for(self, max_payment: int) -> int:
        """The staking-token wei a claim of a job escrowing ``max_payment`` locks."""
        return self.claim_collateral + max_payment * self.collateral_per_payment_wei


def gpu_class_bytes(name: str) -> bytes:
    """A GPU class name ("cpu", "h100") as the bytes32 a receipt carries."""
    raw = name.encode()
    if len(raw) > 32:
        raise ValueError(f"GPU class name longer than 32 bytes: {name!r}")
    return raw.ljust(32, b"\x00")
