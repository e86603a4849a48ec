"""Drivers shared by the batched-settlement tests: :class:`Settle` runs ``PaymentEscrow`` and
``BatchSettlement`` of the session devnet through :class:`contracts.settlement.Settlement`, on
top of :class:`contract_kit.Market` (frozen clock, decoded events, custom-error assertions)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from contract_kit import Market, _salt
from eth_account import Account
from eth_utils import keccak
from web3.contract import Contract
from web3.types import TxReceipt

from contracts.bindings import vote_commitment
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
        """Governance's decision of an escalated leaf dispute."""
        return self.m.send(role, self.batches.functions.resolveLeaf(batch_id, batch.as_tuple(), index, fraud))

    # ------------------------------------------------------------ leaf disputes (the shared game)

    @staticmethod
    def dispute_id(batch_id: int, index: int) -> int:
        return batch_id << 32 | index

    def leaf_dispute(self, batch_id: int, index: int) -> dict[str, Any]:
        names = ("challenger", "provider", "phase", "bond", "drawBlock", "challengedAt", "commitEnd", "revealEnd",
                 "escalationEnd", "seats", "agreeSeats", "disagreeSeats", "modelId", "gpuClass", "outputHash", "units")
        return dict(zip(names, self.batches.functions.leafDispute(batch_id, index).call(), strict=True))

    def draw_leaf(self, batch_id: int, index: int, role: str = "relayer") -> TxReceipt:
        """Mines past the leaf dispute's draw block and draws its committee."""
        behind = int(self.leaf_dispute(batch_id, index)["drawBlock"]) + 1 - self.m.w3.eth.block_number
        if behind > 0:
            self.m.clock.rpc("anvil_mine", [hex(behind)])
        return self.m.send(role, self.batches.functions.drawLeafCommittee(batch_id, index))

    def leaf_committee(self, batch_id: int, index: int) -> list[str]:
        """The committee's distinct members as roles, in seat order."""
        by_addr = {a.address.lower(): r for r, a in self.m.accounts.items()}
        seats = self.batches.functions.leafCommittee(batch_id, index).call()
        return list(dict.fromkeys(by_addr.get(a.lower(), a) for a in seats))

    def leaf_vote(self, batch_id: int, index: int, votes: dict[str, tuple[bytes, int]],
                  warp: Callable[[int], None] | None = None) -> None:
        """Commits and reveals ``votes`` (member -> (output hash, units)), ending past the reveal phase."""
        warp = warp or self.m.clock.warp
        did = self.dispute_id(batch_id, index)
        f = self.batches.functions
        for role, (output, units) in votes.items():
            self.m.send(role, f.commitLeafVote(batch_id, index, vote_commitment(
                did, self.m.addr(role), output, units, _salt(role))))
        d = self.leaf_dispute(batch_id, index)
        warp(int(d["commitEnd"]))
        for role, (output, units) in votes.items():
            self.m.send(role, f.revealLeafVote(batch_id, index, output, units, _salt(role)))
        warp(int(d["revealEnd"]))

    def resolve_dispute(self, batch_id: int, batch: Batch, index: int, role: str = "relayer") -> TxReceipt:
        return self.m.send(role, self.batches.functions.resolveLeafDispute(batch_id, batch.as_tuple(), index))

    def decide_by_committee(self, batch_id: int, batch: Batch, index: int, leaf: WorkReceipt, fraud: bool,
                            warp: Callable[[int], None] | None = None) -> TxReceipt:
        """Draws the committee, has every member vote the truth (the leaf's own output and units,
        or another output when ``fraud``) and resolves. With no committee drawn it resolves at once
        (the neutral default)."""
        self.draw_leaf(batch_id, index)
        members = self.leaf_committee(batch_id, index)
        vote = (keccak(text="the honest output"), leaf.units) if fraud else (leaf.output_hash, leaf.units)
        if members:
            self.leaf_vote(batch_id, index, dict.fromkeys(members, vote), warp)
        return self.resolve_dispute(batch_id, batch, index)

    def escalate(self, batch_id: int, batch: Batch, index: int,
                 warp: Callable[[int], None] | None = None) -> TxReceipt:
        """Draws the committee, lets nobody vote and resolves: the dispute escalates to governance."""
        self.draw_leaf(batch_id, index)
        (warp or self.m.clock.warp)(int(self.leaf_dispute(batch_id, index)["revealEnd"]))
        return self.resolve_dispute(batch_id, batch, index)

    def case(self, batch_id: int, index: int) -> dict[str, Any]:
        raw = self.batches.functions.leafCase(batch_id, index).call()
        return dict(zip(("status", "challenger", "deadline", "bond", "payer", "value"), raw, strict=True))
