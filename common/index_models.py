"""The indexer's tables: a mirror of every Hearth contract event, plus its own bookkeeping.

Readers (the gateway) may rely on these names; they change only through an Alembic migration.

Conventions
-----------
- Addresses are EIP-55 checksummed strings (``0xAbC...``); the zero address means "none".
- ``bytes32`` values (model ids, hashes, tx and block hashes) are lower-case ``0x`` + 64 hex.
- Amounts and other uint256 values are Python ``int`` on both databases through the column type
  :class:`U256`: ``NUMERIC(78, 0)`` on PostgreSQL, and on SQLite a 78-digit zero-padded decimal
  string (SQLite's own numbers are 64-bit or float). Equality, ``ORDER BY`` and range filters
  with Python ints as parameters work on both; SQL arithmetic (``SUM``) is exact only on
  PostgreSQL, so aggregate in Python on SQLite.
- Times are unix seconds (``int``), block timestamps as the chain reports them; ``*_at`` columns
  are the timestamp of the block that carried the event.
- ``*_block`` / ``*_tx`` / ``*_at`` triples say where a state was entered; they are ``None``
  until then.

Tables
------
providers        one row per registered provider: metadata, stake (staked / locked collateral /
                 unbonding), jail, slashing totals, counters. ``active`` as the contract defines
                 it also needs the minimum stake (``params``) and the current time.
provider_models  (provider, model_id) -> serving flag.
models           registered models, current price / runtime / active flag.
jobs             one row per job id with the full on-chain record (the same fold as
                 ``contracts.jobfold.job_changes``) and where each lifecycle state happened;
                 ``status`` is the label of ``contracts.types.Status`` (posted, claimed, delivered,
                 challenged, finalized, refunded).
receipts         the receipt a job was delivered with (one per job).
challenges       one per challenged job: challenger, bond, committee, phases, outcome.
votes            committee votes per (job, voter): commitment, then the revealed output hash.
balances         the market's pull-payment balances: credited and withdrawn totals, current
                 balance (equals ``JobMarket.balanceOf``).
withdrawals      every ``Withdrawn`` event.
slashes          every ``Slashed`` event.
params           governance parameters by key (``market.fee_bps``, ``staking.min_stake``, ...),
                 values as strings.
raw_events       every decoded event (the source of truth the projections are folded from);
                 unique on (chain_id, tx_hash, log_index).
blocks           the recent (possibly reorged) blocks the indexer has seen, with hashes.
checkpoints      one row (id 1): the last indexed block and its hash, per deployment.
undo_log         before-images of projection rows changed in recent blocks (reorg rollback).

Everything a batch of blocks changes (raw events, projections, blocks, undo log, checkpoint) is
written in one transaction, so readers never see half a block.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlmodel import JSON, Field, SQLModel

from contracts.jobstate import ChallengeState
from contracts.types import Status

__all__ = [
    "U256", "Balance", "Block", "Challenge", "Checkpoint", "Job", "Model", "Param", "Provider",
    "ProviderModel", "RawEvent", "Receipt", "Slash", "UndoEntry", "Vote", "Withdrawal",
    "PROJECTION_TABLES", "Collection", "EscrowDeposit", "EscrowLane", "EscrowSigner", "LeafCase", "PriceCeiling",
    "ProviderBond", "ProviderPrice", "SettlementBatch",
]

_U256_DIGITS = 78
#: BIGINT, but INTEGER on SQLite, where only INTEGER PRIMARY KEY autoincrements.
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class U256(sa.types.TypeDecorator[int]):
    """An unsigned 256-bit integer: NUMERIC(78,0) on PostgreSQL, zero-padded text elsewhere.

    The padding keeps text comparison equal to numeric comparison on SQLite."""

    impl = sa.types.String

    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(sa.Numeric(_U256_DIGITS, 0))
        return dialect.type_descriptor(sa.String(_U256_DIGITS))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        v = int(value)
        if v < 0:
            raise ValueError(f"U256 column cannot hold a negative value: {v}")
        if dialect.name == "postgresql":
            return Decimal(v)
        return str(v).zfill(_U256_DIGITS)

    def process_result_value(self, value: Any, dialect: Dialect) -> int | None:
        if value is None:
            return None
        return int(value)


def _u256(default: int | None = 0, **kw: Any) -> Any:
    nullable = default is None
    return Field(default=default, sa_type=U256, nullable=nullable, **kw)


def _int_key() -> Any:
    """A BIGINT primary key that the indexer assigns (never autoincremented)."""
    return Field(primary_key=True, sa_type=sa.BigInteger, sa_column_kwargs={"autoincrement": False})


# ---------------------------------------------------------------------------- projections


class Provider(SQLModel, table=True):
    __tablename__ = "providers"

    address: str = Field(primary_key=True, max_length=42)
    endpoint: str = ""
    region: str = ""
    gpu_class: str = ""
    staked: int = _u256()
    #: collateral locked by open jobs
    locked: int = _u256()
    unbonding: int = _u256()
    unbond_ready_at: int = Field(default=0, sa_type=sa.BigInteger)
    jailed_until: int = Field(default=0, sa_type=sa.BigInteger)
    slashed_total: int = _u256()
    #: jobs finalized (paid)
    jobs_done: int = 0
    slashes: int = 0
    registered_block: int = Field(default=0, sa_type=sa.BigInteger)
    updated_block: int = Field(default=0, sa_type=sa.BigInteger)


class ProviderModel(SQLModel, table=True):
    __tablename__ = "provider_models"

    provider: str = Field(primary_key=True, max_length=42)
    model_id: str = Field(primary_key=True, max_length=66)
    serving: bool = False
    updated_block: int = Field(default=0, sa_type=sa.BigInteger)


class Model(SQLModel, table=True):
    __tablename__ = "models"

    model_id: str = Field(primary_key=True, max_length=66)
    name: str = ""
    runtime_hash: str = Field(default="", max_length=66)
    price_per_unit: int = _u256()
    active: bool = True
    registered_block: int = Field(default=0, sa_type=sa.BigInteger)
    updated_block: int = Field(default=0, sa_type=sa.BigInteger)


class Job(SQLModel, table=True):
    __tablename__ = "jobs"
    __table_args__ = (
        sa.Index("ix_jobs_client", "client"),
        sa.Index("ix_jobs_provider", "provider"),
        sa.Index("ix_jobs_status", "status"),
    )

    job_id: int = _int_key()
    client: str = Field(max_length=42)
    provider: str = Field(default="0x0000000000000000000000000000000000000000", max_length=42)
    model_id: str = Field(max_length=66)
    input_hash: str = Field(max_length=66)
    max_payment: int = _u256()
    price_per_unit: int = _u256()
    payment: int = _u256()
    collateral: int = _u256()
    deadline: int = Field(default=0, sa_type=sa.BigInteger)
    challenge_end: int = Field(default=0, sa_type=sa.BigInteger)
    #: ``contracts.types.Status`` as its label (``contracts.jobstate.parse`` reads it back)
    status: str = Field(default=Status.POSTED.label, max_length=16)
    output_hash: str = Field(default="0x" + "00" * 32, max_length=66)
    units: int = _u256()
    relayer: str | None = Field(default=None, max_length=42)
    #: terms fixed at posting (the fee's rate and recipient) and the claim's expiry
    treasury: str | None = Field(default=None, max_length=42)
    fee_bps: int | None = None
    claim_expiry: int | None = Field(default=None, sa_type=sa.BigInteger)
    gpu_class: str | None = Field(default=None, max_length=66)
    provider_amount: int | None = _u256(None)
    fee: int | None = _u256(None)
    client_refund: int | None = _u256(None)
    refund_amount: int | None = _u256(None)
    penalty: int | None = _u256(None)
    posted_block: int | None = Field(default=None, sa_type=sa.BigInteger)
    posted_tx: str | None = Field(default=None, max_length=66)
    posted_at: int | None = Field(default=None, sa_type=sa.BigInteger)
    claimed_block: int | None = Field(default=None, sa_type=sa.BigInteger)
    claimed_tx: str | None = Field(default=None, max_length=66)
    claimed_at: int | None = Field(default=None, sa_type=sa.BigInteger)
    delivered_block: int | None = Field(default=None, sa_type=sa.BigInteger)
    delivered_tx: str | None = Field(default=None, max_length=66)
    delivered_at: int | None = Field(default=None, sa_type=sa.BigInteger)
    challenged_block: int | None = Field(default=None, sa_type=sa.BigInteger)
    challenged_tx: str | None = Field(default=None, max_length=66)
    challenged_at: int | None = Field(default=None, sa_type=sa.BigInteger)
    finalized_block: int | None = Field(default=None, sa_type=sa.BigInteger)
    finalized_tx: str | None = Field(default=None, max_length=66)
    finalized_at: int | None = Field(default=None, sa_type=sa.BigInteger)
    refunded_block: int | None = Field(default=None, sa_type=sa.BigInteger)
    refunded_tx: str | None = Field(default=None, max_length=66)
    refunded_at: int | None = Field(default=None, sa_type=sa.BigInteger)
    updated_block: int = Field(default=0, sa_type=sa.BigInteger)


class Receipt(SQLModel, table=True):
    __tablename__ = "receipts"

    job_id: int = _int_key()
    provider: str = Field(max_length=42, index=True)
    output_hash: str = Field(max_length=66)
    units: int = _u256()
    model_hash: str = Field(max_length=66)
    runtime_hash: str = Field(max_length=66)
    #: the receipt's bytes32 GPU class, hex (``contracts.types.gpu_class_bytes`` encodes names)
    gpu_class: str = Field(max_length=66)
    payment: int = _u256()
    challenge_end: int = Field(default=0, sa_type=sa.BigInteger)
    block: int = Field(sa_type=sa.BigInteger)
    tx_hash: str = Field(max_length=66)
    timestamp: int = Field(sa_type=sa.BigInteger)


class Challenge(SQLModel, table=True):
    __tablename__ = "challenges"

    job_id: int = _int_key()
    challenger: str = Field(max_length=42, index=True)
    bond: int = _u256()
    #: one address per seat (a member drawn twice appears twice); empty until drawn
    committee: list[str] = Field(default_factory=list, sa_type=JSON)
    commit_end: int = Field(default=0, sa_type=sa.BigInteger)
    reveal_end: int = Field(default=0, sa_type=sa.BigInteger)
    #: the block whose hash seeds the committee draw
    draw_block: int | None = Field(default=None, sa_type=sa.BigInteger)
    #: until when governance may decide an escalated dispute (unix seconds)
    escalation_end: int | None = Field(default=None, sa_type=sa.BigInteger)
    #: a ``contracts.jobstate.ChallengeState``: open (awaiting the draw), voting, no_committee,
    #: escalated, provider_won, challenger_won, neutral
    status: str = Field(default=ChallengeState.OPEN.value, max_length=16)
    agree: int = 0
    disagree: int = 0
    provider_won: bool | None = None
    by_governance: bool | None = None
    slashed: int | None = _u256(None)
    block: int = Field(sa_type=sa.BigInteger)
    tx_hash: str = Field(max_length=66)
    timestamp: int = Field(sa_type=sa.BigInteger)
    resolved_block: int | None = Field(default=None, sa_type=sa.BigInteger)
    resolved_tx: str | None = Field(default=None, max_length=66)
    resolved_at: int | None = Field(default=None, sa_type=sa.BigInteger)


class Vote(SQLModel, table=True):
    __tablename__ = "votes"

    job_id: int = _int_key()
    voter: str = Field(primary_key=True, max_length=42)
    commitment: str = Field(max_length=66)
    committed_block: int = Field(sa_type=sa.BigInteger)
    committed_tx: str = Field(max_length=66)
    committed_at: int = Field(sa_type=sa.BigInteger)
    output_hash: str | None = Field(default=None, max_length=66)
    #: the revealed units (the vote is on output and units)
    units: int | None = _u256(None)
    #: staking-token wei locked as the member's bond at commit
    bond: int | None = _u256(None)
    #: whether the revealed output and units match the receipt's
    agrees: bool | None = None
    revealed_block: int | None = Field(default=None, sa_type=sa.BigInteger)
    revealed_tx: str | None = Field(default=None, max_length=66)
    revealed_at: int | None = Field(default=None, sa_type=sa.BigInteger)


class Balance(SQLModel, table=True):
    __tablename__ = "balances"

    account: str = Field(primary_key=True, max_length=42)
    credited: int = _u256()
    withdrawn: int = _u256()
    balance: int = _u256()
    updated_block: int = Field(default=0, sa_type=sa.BigInteger)


class Withdrawal(SQLModel, table=True):
    __tablename__ = "withdrawals"

    tx_hash: str = Field(primary_key=True, max_length=66)
    log_index: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    account: str = Field(max_length=42, index=True)
    to: str = Field(max_length=42)
    amount: int = _u256()
    block: int = Field(sa_type=sa.BigInteger)
    timestamp: int = Field(sa_type=sa.BigInteger)


class Slash(SQLModel, table=True):
    __tablename__ = "slashes"

    tx_hash: str = Field(primary_key=True, max_length=66)
    log_index: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    provider: str = Field(max_length=42, index=True)
    recipient: str = Field(max_length=42)
    amount: int = _u256()
    from_staked: int = _u256()
    jailed_until: int = Field(default=0, sa_type=sa.BigInteger)
    job_id: int | None = Field(default=None, sa_type=sa.BigInteger)
    block: int = Field(sa_type=sa.BigInteger)
    timestamp: int = Field(sa_type=sa.BigInteger)


class Param(SQLModel, table=True):
    __tablename__ = "params"

    key: str = Field(primary_key=True, max_length=64)
    value: str
    updated_block: int = Field(default=0, sa_type=sa.BigInteger)


# ---------------------------------------------------------------------------- bookkeeping


class RawEvent(SQLModel, table=True):
    __tablename__ = "raw_events"
    __table_args__ = (
        sa.UniqueConstraint("chain_id", "tx_hash", "log_index", name="uq_raw_events_chain_tx_log"),
        sa.Index("ix_raw_events_block", "chain_id", "block_number", "log_index"),
        sa.Index("ix_raw_events_name", "event_name"),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=_ID)
    chain_id: int = Field(sa_type=sa.BigInteger)
    block_number: int = Field(sa_type=sa.BigInteger)
    block_hash: str = Field(max_length=66)
    block_timestamp: int = Field(sa_type=sa.BigInteger)
    tx_hash: str = Field(max_length=66)
    tx_index: int
    log_index: int
    address: str = Field(max_length=42)
    #: the emitting contract's name in the manifest (JobMarket, Staking, ModelRegistry)
    contract: str = Field(max_length=32)
    event_name: str = Field(max_length=64)
    #: decoded arguments: ints as JSON numbers (exact), bytes as 0x hex, addresses checksummed
    args: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)


class Block(SQLModel, table=True):
    __tablename__ = "blocks"

    number: int = _int_key()
    hash: str = Field(max_length=66)
    parent_hash: str = Field(max_length=66)
    timestamp: int = Field(sa_type=sa.BigInteger)


class Checkpoint(SQLModel, table=True):
    __tablename__ = "checkpoints"

    id: int = Field(default=1, primary_key=True, sa_column_kwargs={"autoincrement": False})
    chain_id: int = Field(sa_type=sa.BigInteger)
    #: the JobMarket address: a new deployment on the same chain starts a new index
    deployment: str = Field(max_length=42)
    start_block: int = Field(sa_type=sa.BigInteger)
    block_number: int = Field(sa_type=sa.BigInteger)
    block_hash: str = Field(max_length=66)
    updated_at: float = 0.0


class UndoEntry(SQLModel, table=True):
    """The image of a projection row before the first change to it in ``block_number``
    (``None``: the row did not exist). Kept for the blocks a reorg may still remove."""

    __tablename__ = "undo_log"

    id: int | None = Field(default=None, primary_key=True, sa_type=_ID)
    block_number: int = Field(sa_type=sa.BigInteger, index=True)
    table_name: str = Field(max_length=32)
    #: primary key values, in the table's primary key column order
    key: list[Any] = Field(sa_type=JSON)
    before: dict[str, Any] | None = Field(default=None, sa_type=JSON)


# ---------------------------------------------------------------------------- batched settlement
# PaymentEscrow and BatchSettlement (migration 0002).


class EscrowDeposit(SQLModel, table=True):
    """A payer's unallocated escrow deposit (equals ``PaymentEscrow.depositOf``)."""

    __tablename__ = "escrow_deposits"

    payer: str = Field(primary_key=True, max_length=42)
    deposit: int = _u256()
    deposited_total: int = _u256()
    updated_block: int = Field(default=0, sa_type=sa.BigInteger)


class EscrowLane(SQLModel, table=True):
    """A payer's lane to a provider (``getLane``) and its totals."""

    __tablename__ = "escrow_lanes"

    payer: str = Field(primary_key=True, max_length=42)
    provider: str = Field(primary_key=True, max_length=42)
    balance: int = _u256()
    collected: int = _u256()
    thawing: int = _u256()
    thaw_end: int = Field(default=0, sa_type=sa.BigInteger)
    allocated: int = _u256()
    withdrawn: int = _u256()
    updated_block: int = Field(default=0, sa_type=sa.BigInteger)


class EscrowSigner(SQLModel, table=True):
    __tablename__ = "escrow_signers"

    payer: str = Field(primary_key=True, max_length=42)
    signer: str = Field(primary_key=True, max_length=42)
    expiry: int = Field(default=0, sa_type=sa.BigInteger)
    thaw_end: int = Field(default=0, sa_type=sa.BigInteger)
    can_allocate: bool = False
    revoked: bool = False
    updated_block: int = Field(default=0, sa_type=sa.BigInteger)


class ProviderBond(SQLModel, table=True):
    __tablename__ = "provider_bonds"

    provider: str = Field(primary_key=True, max_length=42)
    amount: int = _u256()
    thawing: int = _u256()
    thaw_end: int = Field(default=0, sa_type=sa.BigInteger)
    seized_total: int = _u256()
    updated_block: int = Field(default=0, sa_type=sa.BigInteger)


class Collection(SQLModel, table=True):
    """Every ``Collected`` event (one voucher redeemed)."""

    __tablename__ = "escrow_collections"

    tx_hash: str = Field(primary_key=True, max_length=66)
    log_index: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    payer: str = Field(max_length=42, index=True)
    provider: str = Field(max_length=42, index=True)
    amount: int = _u256()
    collected: int = _u256()
    cumulative_value: int = _u256()
    lane_balance: int = _u256()
    block: int = Field(sa_type=sa.BigInteger)
    timestamp: int = Field(sa_type=sa.BigInteger)


class SettlementBatch(SQLModel, table=True):
    """A committed batch: the full record its stored word commits to."""

    __tablename__ = "batches"

    batch_id: int = _int_key()
    provider: str = Field(max_length=42, index=True)
    root: str = Field(max_length=66)
    count: int = Field(sa_type=sa.BigInteger)
    units: int = _u256()
    value: int = _u256()
    committed_at: int = Field(sa_type=sa.BigInteger)
    challenge_end: int = Field(sa_type=sa.BigInteger)
    block: int = Field(sa_type=sa.BigInteger)
    tx_hash: str = Field(max_length=66)


class LeafCase(SQLModel, table=True):
    """A questioned leaf: status demanded, revealed, disputed, upheld or fraud."""

    __tablename__ = "leaf_cases"

    batch_id: int = Field(primary_key=True, sa_type=sa.BigInteger, sa_column_kwargs={"autoincrement": False})
    leaf_index: int = Field(primary_key=True, sa_type=sa.BigInteger, sa_column_kwargs={"autoincrement": False})
    status: str = Field(default="", max_length=16)
    challenger: str = Field(default="", max_length=42)
    payer: str = Field(default="", max_length=42)
    value: int = _u256()
    output_hash: str = Field(default="", max_length=66)
    bond: int = _u256()
    deadline: int = Field(default=0, sa_type=sa.BigInteger)
    withheld: bool = False
    by_default: bool = False
    slashed: int = _u256()
    refunded: int = _u256()
    challenger_reward: int = _u256()
    updated_block: int = Field(default=0, sa_type=sa.BigInteger)


class ProviderPrice(SQLModel, table=True):
    __tablename__ = "provider_prices"

    provider: str = Field(primary_key=True, max_length=42)
    model_id: str = Field(primary_key=True, max_length=66)
    price: int = _u256()
    updated_block: int = Field(default=0, sa_type=sa.BigInteger)


class PriceCeiling(SQLModel, table=True):
    __tablename__ = "price_ceilings"

    model_id: str = Field(primary_key=True, max_length=66)
    ceiling: int = _u256()
    updated_block: int = Field(default=0, sa_type=sa.BigInteger)


#: The tables folded from events, in dependency-free order; the undo log covers these.
PROJECTION_TABLES: tuple[type[SQLModel], ...] = (
    Provider, ProviderModel, Model, Job, Receipt, Challenge, Vote, Balance, Withdrawal, Slash,
    Param,
    EscrowDeposit, EscrowLane, EscrowSigner, ProviderBond, Collection, SettlementBatch, LeafCase,
    ProviderPrice, PriceCeiling,
)
