"""Drivers shared by the batched-settlement tests: :class:`Settle` runs ``PaymentEscrow`` and
``BatchSettlement`` of the session devnet through :class:`contracts.settlement.Settlement`, on
top of :class:`contract_kit.Market` (frozen clock, decoded events, custom-error assertions)."""

from __future__ import annotations

from typing import Any

from contract_kit import Market
from eth_account import Account
from eth_utils import keccak
from web3.contract import Contract
from web3.types import TxReceipt

from contracts.settlement import (
    Batch,
    Lane,
    PaymentReceipt,
    Settlement,
    SettlementParams,
    SignedVoucher,
    Voucher,
    WorkBatch,
    WorkReceipt,
    sign_signer_authorization,
    sign_voucher,
)

USD = 10**6
BPS = 10_000
NUMERICS = b"cpu-fp32".ljust(32, b"\x00")


def signer_key(name: str) -> str:
    """A deterministic key for an off-chain signer (a gateway key, a key per API key)."""
    return "0x" + keccak(text=f"hearth test signer {name}").hex()


def signer_address(name: str) -> str:
    return str(Account.from_key(signer_key(name)).address)


class Settle:
    """The devnet's escrow and batch settlement, driven by the devnet's named accounts."""

    def __init__(self, m: Market) -> None:
        self.m = m
        self.s = Settlement(m.h)
        self.escrow: Contract = self.s.escrow
        self.batches: Contract = self.s.batches
        m._by_address[self.escrow.address.lower()] = self.escrow
        m._by_address[self.batches.address.lower()] = self.batches
        self.reload()

    def reload(self) -> None:
        self.params = SettlementParams(*self.batches.functions.params().call())
        self.thaw_delay = int(self.escrow.functions.thawDelay().call())
        self.horizon = int(self.batches.functions.settlementHorizon().call())

    @property
    def chain_id(self) -> int:
        return self.m.h.chain_id

    # ------------------------------------------------------------ money

    def fund_lane(self, payer: str, lanes: dict[str, int], extra: int = 0) -> TxReceipt:
        """Approves, deposits the lanes' sum plus ``extra`` and allocates them (roles)."""
        total = sum(lanes.values()) + extra
        self.m.send(payer, self.m.h.usd.functions.approve(self.escrow.address, total))
        self.m.send(payer, self.escrow.functions.deposit(total))
        return self.m.send(payer, self.escrow.functions.allocate(
            self.m.addr(payer), [self.m.addr(p) for p in lanes], list(lanes.values())))

    def lane(self, payer: str, provider: str) -> Lane:
        return self.s.lane(self.m.addr(payer), self.m.addr(provider))

    def deposit_of(self, payer: str) -> int:
        return self.s.deposit_of(self.m.addr(payer))

    def voucher(self, payer: str, provider: str, cumulative: int, key: str | None = None,
                timestamp: int | None = None) -> SignedVoucher:
        """A voucher of ``payer`` to ``provider`` signed by ``key`` (the payer's own by default)."""
        v = Voucher(self.m.addr(payer), self.m.addr(provider), cumulative,
                    self.m.clock.now() if timestamp is None else timestamp)
        return sign_voucher(key or self.m.key(payer), v, self.chain_id, self.escrow.address)

    def collect(self, provider: str, vouchers: list[SignedVoucher]) -> TxReceipt:
        return self.m.send(provider, self.escrow.functions.collect(
            [v.voucher.as_tuple() for v in vouchers], [v.signature for v in vouchers]))

    def authorize(self, payer: str, signer: str, expiry: int | None = None, can_allocate: bool = False,
                  proof_key: str | None = None) -> TxReceipt:
        """Authorizes the off-chain signer ``signer`` (a name for :func:`signer_key`)."""
        expiry = expiry if expiry is not None else self.m.clock.now() + 30 * 86400
        proof = sign_signer_authorization(proof_key or signer_key(signer), self.m.addr(payer), expiry,
                                          self.chain_id, self.escrow.address)
        return self.m.send(payer, self.escrow.functions.authorizeSigner(
            signer_address(signer), expiry, can_allocate, proof))

    def bond(self, provider: str, amount: int) -> TxReceipt:
        self.m.send(provider, self.m.h.usd.functions.approve(self.escrow.address, amount))
        return self.m.send(provider, self.escrow.functions.depositBond(amount))

    def bond_of(self, provider: str) -> int:
        return int(self.escrow.functions.getBond(self.m.addr(provider)).call()[0])

    def payment_receipt(self, payer: str, provider: str, n: int, value: int) -> PaymentReceipt:
        return PaymentReceipt(self.m.addr(payer), self.m.addr(provider), keccak(text=f"request {n}"), value,
                              self.m.clock.now())

    # ------------------------------------------------------------ work

    def work(self, n: int, payer: str = "client", units: int = 100, price: int | None = None,
             start: int = 0) -> list[WorkReceipt]:
        price = self.m.price if price is None else price
        return [
            WorkReceipt(keccak(text=f"request {start + i}"), self.m.addr(payer), self.m.model_id,
                        keccak(text=f"input {start + i}"), keccak(text=f"output {start + i}"), units, units * price,
                        self.m.runtime_hash, NUMERICS)
            for i in range(n)
        ]

    def commit(self, provider: str, receipts: list[WorkReceipt]) -> tuple[int, Batch, WorkBatch, TxReceipt]:
        wb = self.s.work_batch(receipts)
        batch_id, batch, rcpt = self.s.commit(self.m.key(provider), wb)
        return batch_id, batch, wb, rcpt

    def approve_bond(self, role: str, amount: int | None = None) -> None:
        self.m.send(role, self.m.h.usd.functions.approve(self.batches.address,
                                                          self.params.demand_bond if amount is None else amount))

    def demand(self, role: str, batch_id: int, batch: Batch, index: int, approve: bool = True) -> TxReceipt:
        if approve:
            self.approve_bond(role)
        return self.m.send(role, self.batches.functions.demandLeaf(batch_id, batch.as_tuple(), index))

    def reveal(self, role: str, batch_id: int, batch: Batch, index: int, wb: WorkBatch,
               proof_index: int | None = None) -> TxReceipt:
        leaf = wb.receipts[index]
        proof = wb.proof(index if proof_index is None else proof_index)
        return self.m.send(role, self.batches.functions.revealLeaf(batch_id, batch.as_tuple(), index,
                                                                   leaf.as_tuple(), proof))

    def challenge(self, role: str, batch_id: int, batch: Batch, index: int, leaf: WorkReceipt,
                  proof: list[bytes], approve: bool = True) -> TxReceipt:
        if approve:
            self.approve_bond(role)
        return self.m.send(role, self.batches.functions.challengeLeaf(batch_id, batch.as_tuple(), index,
                                                                      leaf.as_tuple(), proof))

    def resolve(self, batch_id: int, batch: Batch, index: int, fraud: bool, role: str = "deployer") -> TxReceipt:
        return self.m.send(role, self.batches.functions.resolveLeaf(batch_id, batch.as_tuple(), index, fraud))

    def case(self, batch_id: int, index: int) -> dict[str, Any]:
        raw = self.batches.functions.leafCase(batch_id, index).call()
        return dict(zip(("status", "challenger", "deadline", "bond", "payer", "value"), raw, strict=True))
