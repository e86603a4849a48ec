"""Batched settlement, Python side: EIP-712 types of the escrow and the batch settlement,
payment receipts aggregated into cumulative vouchers, work-receipt batches with their Merkle
tree, and typed bindings over ``PaymentEscrow`` and ``BatchSettlement``.

Domains: ``("Hearth PaymentEscrow", "1", chainId, escrow)`` for ``PaymentReceipt``,
``ReceiptAggregateVoucher`` and ``SignerAuthorization``; ``("Hearth BatchSettlement", "1",
chainId, settlement)`` for ``WorkReceipt`` (the provider signs it; its digest is the leaf's
preimage, see :mod:`contracts.merkle`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import keccak
from hexbytes import HexBytes
from web3 import Web3
from web3.contract import Contract
from web3.types import BlockIdentifier, TxReceipt

from contracts import typed_digest
from contracts.errors import ChainError, ContractsError
from contracts.merkle import MerkleTree, leaf_hash

ESCROW_DOMAIN = "Hearth PaymentEscrow"
SETTLEMENT_DOMAIN = "Hearth BatchSettlement"
VERSION = "1"


class SettlementError(ContractsError, ValueError):
    """Receipts that cannot be aggregated, a batch that cannot be built."""


PAYMENT_RECEIPT_TYPES = {
    "PaymentReceipt": [
        {"name": "payer", "type": "address"},
        {"name": "provider", "type": "address"},
        {"name": "requestId", "type": "bytes32"},
        {"name": "value", "type": "uint128"},
        {"name": "timestamp", "type": "uint64"},
    ]
}
VOUCHER_TYPES = {
    "ReceiptAggregateVoucher": [
        {"name": "payer", "type": "address"},
        {"name": "provider", "type": "address"},
        {"name": "cumulativeValue", "type": "uint128"},
        {"name": "timestamp", "type": "uint64"},
    ]
}
SIGNER_AUTHORIZATION_TYPES = {
    "SignerAuthorization": [
        {"name": "payer", "type": "address"},
        {"name": "expiry", "type": "uint64"},
    ]
}
WORK_RECEIPT_TYPES = {
    "WorkReceipt": [
        {"name": "requestId", "type": "bytes32"},
        {"name": "payer", "type": "address"},
        {"name": "modelId", "type": "bytes32"},
        {"name": "inputHash", "type": "bytes32"},
        {"name": "outputHash", "type": "bytes32"},
        {"name": "units", "type": "uint64"},
        {"name": "value", "type": "uint96"},
        {"name": "runtimeHash", "type": "bytes32"},
        {"name": "numericsClass", "type": "bytes32"},
    ]
}


def escrow_domain(chain_id: int, escrow: str) -> dict[str, Any]:
    return {"name": ESCROW_DOMAIN, "version": VERSION, "chainId": chain_id, "verifyingContract": escrow}


def settlement_domain(chain_id: int, settlement: str) -> dict[str, Any]:
    return {"name": SETTLEMENT_DOMAIN, "version": VERSION, "chainId": chain_id, "verifyingContract": settlement}


# Each takes the native path (:mod:`contracts.typed_digest`: the struct encoded directly, signed and
# recovered with libsecp256k1, same bytes) and falls back to eth_account for anything else.


def _digest(domain: dict[str, Any], types: dict[str, Any], message: dict[str, Any]) -> bytes:
    fast = typed_digest.digest(domain, types, message)
    if fast is not None:
        return fast
    msg = encode_typed_data(domain, types, message)
    return bytes(keccak(b"\x19" + msg.version + msg.header + msg.body))


def _sign(key: str | bytes, domain: dict[str, Any], types: dict[str, Any], message: dict[str, Any]) -> bytes:
    fast = typed_digest.digest(domain, types, message)
    if fast is not None:
        return typed_digest.sign(key, fast)
    return bytes(Account.sign_typed_data(key, domain, types, message).signature)


def _recover(domain: dict[str, Any], types: dict[str, Any], message: dict[str, Any], signature: bytes) -> str:
    fast = typed_digest.digest(domain, types, message)
    if fast is not None and isinstance(signature, bytes | bytearray):
        signer = typed_digest.recover(fast, bytes(signature))
        if signer is not None:
            return signer
    return str(Account.recover_message(encode_typed_data(domain, types, message), signature=HexBytes(signature)))


# ---------------------------------------------------------------- domain values


@dataclass(frozen=True)
class PaymentReceipt:
    """What the payer (or its signer) signs per request."""

    payer: str
    provider: str
    request_id: bytes
    value: int
    timestamp: int

    def message(self) -> dict[str, Any]:
        return {"payer": self.payer, "provider": self.provider, "requestId": self.request_id,
                "value": self.value, "timestamp": self.timestamp}

    def as_tuple(self) -> tuple[Any, ...]:
        return (self.payer, self.provider, self.request_id, self.value, self.timestamp)


@dataclass(frozen=True)
class Voucher:
    """A ``ReceiptAggregateVoucher``: every receipt of ``payer`` to ``provider`` so far."""

    payer: str
    provider: str
    cumulative_value: int
    timestamp: int

    def message(self) -> dict[str, Any]:
        return {"payer": self.payer, "provider": self.provider, "cumulativeValue": self.cumulative_value,
                "timestamp": self.timestamp}

    def as_tuple(self) -> tuple[Any, ...]:
        return (self.payer, self.provider, self.cumulative_value, self.timestamp)


@dataclass(frozen=True)
class SignedVoucher:
    voucher: Voucher
    signature: bytes


@dataclass(frozen=True)
class WorkReceipt:
    """One leaf: what the provider signs for one request."""

    request_id: bytes
    payer: str
    model_id: bytes
    input_hash: bytes
    output_hash: bytes
    units: int
    value: int
    runtime_hash: bytes
    numerics_class: bytes

    def message(self) -> dict[str, Any]:
        return {"requestId": self.request_id, "payer": self.payer, "modelId": self.model_id,
                "inputHash": self.input_hash, "outputHash": self.output_hash, "units": self.units,
                "value": self.value, "runtimeHash": self.runtime_hash, "numericsClass": self.numerics_class}

    def as_tuple(self) -> tuple[Any, ...]:
        return (self.request_id, self.payer, self.model_id, self.input_hash, self.output_hash, self.units,
                self.value, self.runtime_hash, self.numerics_class)


@dataclass(frozen=True)
class Batch:
    """A committed batch (mirrors ``IBatchSettlement.Batch``); ``committed_at`` from its event."""

    provider: str
    root: bytes
    count: int
    units: int
    value: int
    committed_at: int

    def as_tuple(self) -> tuple[Any, ...]:
        return (self.provider, self.root, self.count, self.units, self.value, self.committed_at)


@dataclass(frozen=True)
class Lane:
    balance: int
    collected: int
    thawing: int
    thaw_end: int


@dataclass(frozen=True)
class SettlementParams:
    """Governance parameters of ``BatchSettlement`` (mirrors ``IBatchSettlement.Params``)."""

    treasury: str
    challenge_window: int = 3600
    reveal_window: int = 600
    resolve_window: int = 1800
    penalty_bps: int = 5000
    challenger_reward_bps: int = 2000
    leaf_slash: int = 50 * 10**18
    demand_bond: int = 1 * 10**6

    def as_tuple(self) -> tuple[Any, ...]:
        return (self.treasury, self.challenge_window, self.reveal_window, self.resolve_window, self.penalty_bps,
                self.challenger_reward_bps, self.leaf_slash, self.demand_bond)


# ---------------------------------------------------------------- hashing and signing


def sign_payment_receipt(key: str | bytes, r: PaymentReceipt, chain_id: int, escrow: str) -> bytes:
    return _sign(key, escrow_domain(chain_id, escrow), PAYMENT_RECEIPT_TYPES, r.message())


def recover_payment_receipt(r: PaymentReceipt, signature: bytes, chain_id: int, escrow: str) -> str:
    return _recover(escrow_domain(chain_id, escrow), PAYMENT_RECEIPT_TYPES, r.message(), signature)


def payment_receipt_digest(r: PaymentReceipt, chain_id: int, escrow: str) -> bytes:
    return _digest(escrow_domain(chain_id, escrow), PAYMENT_RECEIPT_TYPES, r.message())


def sign_voucher(key: str | bytes, v: Voucher, chain_id: int, escrow: str) -> SignedVoucher:
    return SignedVoucher(v, _sign(key, escrow_domain(chain_id, escrow), VOUCHER_TYPES, v.message()))


def voucher_digest(v: Voucher, chain_id: int, escrow: str) -> bytes:
    return _digest(escrow_domain(chain_id, escrow), VOUCHER_TYPES, v.message())


def sign_signer_authorization(signer_key: str | bytes, payer: str, expiry: int, chain_id: int, escrow: str) -> bytes:
    """The signer's proof of possession: it signs ``SignerAuthorization(payer, expiry)``."""
    return _sign(signer_key, escrow_domain(chain_id, escrow), SIGNER_AUTHORIZATION_TYPES,
                 {"payer": payer, "expiry": expiry})


def work_receipt_digest(r: WorkReceipt, chain_id: int, settlement: str) -> bytes:
    return _digest(settlement_domain(chain_id, settlement), WORK_RECEIPT_TYPES, r.message())


def sign_work_receipt(key: str | bytes, r: WorkReceipt, chain_id: int, settlement: str) -> bytes:
    return _sign(key, settlement_domain(chain_id, settlement), WORK_RECEIPT_TYPES, r.message())


def recover_work_receipt(r: WorkReceipt, signature: bytes, chain_id: int, settlement: str) -> str:
    """The address that signed a work receipt (the gateway checks it is the serving provider)."""
    return _recover(settlement_domain(chain_id, settlement), WORK_RECEIPT_TYPES, r.message(), signature)


def work_leaf(r: WorkReceipt, chain_id: int, settlement: str) -> bytes:
    """The Merkle leaf of a work receipt."""
    return leaf_hash(work_receipt_digest(r, chain_id, settlement))


def receipt_value(units: int, price_per_unit: int) -> int:
    """What a request of ``units`` costs at a provider's quoted price."""
    if units < 0 or price_per_unit < 0:
        raise SettlementError("units and price are non-negative")
    return units * price_per_unit


# ---------------------------------------------------------------- aggregation


def aggregate(receipts: Sequence[PaymentReceipt], previous: Voucher | None = None,
              timestamp: int | None = None) -> Voucher:
    """The voucher covering ``previous`` plus ``receipts`` (all of one payer to one provider).

    The cumulative value only grows: it is ``previous.cumulative_value`` plus the receipts'
    values, and the timestamp is the latest of them (or ``timestamp``)."""
    if not receipts and previous is None:
        raise SettlementError("nothing to aggregate")
    payer = previous.payer if previous else receipts[0].payer
    provider = previous.provider if previous else receipts[0].provider
    seen: set[bytes] = set()
    total = previous.cumulative_value if previous else 0
    latest = previous.timestamp if previous else 0
    for r in receipts:
        if r.payer.lower() != payer.lower() or r.provider.lower() != provider.lower():
            raise SettlementError(f"receipt {r.request_id.hex()} is not from {payer} to {provider}")
        if r.request_id in seen:
            raise SettlementError(f"receipt {r.request_id.hex()} appears twice")
        seen.add(r.request_id)
        total += r.value
        latest = max(latest, r.timestamp)
    if total >= 2**128:
        raise SettlementError("cumulative value exceeds uint128")
    return Voucher(payer, provider, total, timestamp if timestamp is not None else latest)


@dataclass
class WorkBatch:
    """A provider's batch of work receipts and its tree, ready for ``commitBatch``."""

    receipts: list[WorkReceipt]
    chain_id: int
    settlement: str
    tree: MerkleTree = field(init=False)

    def __post_init__(self) -> None:
        if not self.receipts:
            raise SettlementError("a batch has at least one receipt")
        self.tree = MerkleTree.build([work_leaf(r, self.chain_id, self.settlement) for r in self.receipts])

    @property
    def root(self) -> bytes:
        return self.tree.root

    @property
    def count(self) -> int:
        return len(self.receipts)

    @property
    def units(self) -> int:
        return sum(r.units for r in self.receipts)

    @property
    def value(self) -> int:
        return sum(r.value for r in self.receipts)

    def proof(self, index: int) -> list[bytes]:
        return self.tree.proof(index)


# ---------------------------------------------------------------- bindings


class Settlement:
    """Typed calls on ``PaymentEscrow`` and ``BatchSettlement`` through a ``Hearth``'s senders."""

    def __init__(self, hearth: Any) -> None:
        from contracts.bindings import Hearth

        h: Hearth = hearth
        if h.escrow is None or h.settlement is None:
            raise ContractsError("this deployment has no PaymentEscrow/BatchSettlement")
        self.h = h
        self.escrow: Contract = h.escrow
        self.batches: Contract = h.settlement

    @property
    def chain_id(self) -> int:
        return self.h.chain_id

    def params(self) -> SettlementParams:
        """BatchSettlement's current governance parameters, typed."""
        return SettlementParams(*self.batches.functions.params().call())

    # -- payer
    def approve(self, key: str, amount: int = 2**256 - 1) -> TxReceipt:
        return self.h.sender(key).send(self.h.usd.functions.approve(self.escrow.address, amount))

    def deposit(self, key: str, amount: int) -> TxReceipt:
        return self.h.sender(key).send(self.escrow.functions.deposit(amount))

    def allocate(self, key: str, payer: str, lanes: dict[str, int]) -> TxReceipt:
        fn = self.escrow.functions.allocate(payer, list(lanes), list(lanes.values()))
        return self.h.sender(key).send(fn)

    def thaw(self, key: str, provider: str, amount: int) -> TxReceipt:
        return self.h.sender(key).send(self.escrow.functions.thaw(provider, amount))

    def withdraw_thawed(self, key: str, provider: str) -> TxReceipt:
        return self.h.sender(key).send(self.escrow.functions.withdrawThawed(provider))

    def authorize_signer(self, payer_key: str, signer_key: str, expiry: int, can_allocate: bool = False) -> TxReceipt:
        payer = self.h.sender(payer_key).address
        signer = Account.from_key(signer_key).address
        proof = sign_signer_authorization(signer_key, payer, expiry, self.chain_id, self.escrow.address)
        fn = self.escrow.functions.authorizeSigner(signer, expiry, can_allocate, proof)
        return self.h.sender(payer_key).send(fn)

    def sign_receipt(self, key: str, r: PaymentReceipt) -> bytes:
        return sign_payment_receipt(key, r, self.chain_id, self.escrow.address)

    def sign_voucher(self, key: str, v: Voucher) -> SignedVoucher:
        return sign_voucher(key, v, self.chain_id, self.escrow.address)

    # -- provider
    def collect(self, key: str, vouchers: Sequence[SignedVoucher]) -> TxReceipt:
        fn = self.escrow.functions.collect([s.voucher.as_tuple() for s in vouchers], [s.signature for s in vouchers])
        return self.h.sender(key).send(fn)

    def work_batch(self, receipts: list[WorkReceipt]) -> WorkBatch:
        return WorkBatch(receipts, self.chain_id, self.batches.address)

    def commit(self, key: str, batch: WorkBatch) -> tuple[int, Batch, TxReceipt]:
        fn = self.batches.functions.commitBatch(batch.root, batch.count, batch.units, batch.value)
        rcpt = self.h.sender(key).send(fn)
        for lg in rcpt["logs"]:
            if lg["address"] == self.batches.address:
                ev = self.batches.events.BatchCommitted().process_log(lg)
                a = ev["args"]
                return int(a["batchId"]), Batch(a["provider"], bytes(a["root"]), a["count"], a["units"], a["value"],
                                                a["committedAt"]), rcpt
        raise ChainError("transaction committed no batch")

    def quote_price(self, key: str, model_id: bytes, price: int) -> TxReceipt:
        return self.h.sender(key).send(self.batches.functions.quotePrice(model_id, price))

    def price_of(self, provider: str, model_id: bytes) -> int:
        return int(self.batches.functions.priceOf(Web3.to_checksum_address(provider), model_id).call())

    # -- challenger
    def demand_leaf(self, key: str, batch_id: int, batch: Batch, index: int) -> TxReceipt:
        return self.h.sender(key).send(self.batches.functions.demandLeaf(batch_id, batch.as_tuple(), index))

    def reveal_leaf(self, key: str, batch_id: int, batch: Batch, index: int, leaf: WorkReceipt,
                    proof: Sequence[bytes]) -> TxReceipt:
        fn = self.batches.functions.revealLeaf(batch_id, batch.as_tuple(), index, leaf.as_tuple(), list(proof))
        return self.h.sender(key).send(fn)

    def challenge_leaf(self, key: str, batch_id: int, batch: Batch, index: int, leaf: WorkReceipt,
                       proof: Sequence[bytes]) -> TxReceipt:
        fn = self.batches.functions.challengeLeaf(batch_id, batch.as_tuple(), index, leaf.as_tuple(), list(proof))
        return self.h.sender(key).send(fn)

    def settle_withheld(self, key: str, batch_id: int, batch: Batch, index: int) -> TxReceipt:
        return self.h.sender(key).send(self.batches.functions.settleWithheldLeaf(batch_id, batch.as_tuple(), index))

    # -- views
    def lane(self, payer: str, provider: str, block: BlockIdentifier = "latest") -> Lane:
        """The lane as of ``block`` (pin one block to read several views consistently)."""
        raw = self.escrow.functions.getLane(Web3.to_checksum_address(payer), Web3.to_checksum_address(provider)).call(
            block_identifier=block)
        return Lane(*raw)

    def deposit_of(self, payer: str, block: BlockIdentifier = "latest") -> int:
        return int(self.escrow.functions.depositOf(Web3.to_checksum_address(payer)).call(block_identifier=block))
