"""The indexer mirrors PaymentEscrow and BatchSettlement: deposits, lanes, thaws, signers, bonds,
collections, batches, prices and leaf cases; after reorgs it equals a fresh index of the chain."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from eth_utils import keccak
from indexer_checks import assert_index_matches_chain, db_tables
from indexer_protocol import ReorgChain

from contracts.bindings import vote_commitment
from contracts.settlement import (
    Settlement,
    Voucher,
    WorkReceipt,
    sign_signer_authorization,
    sign_voucher,
)
from indexer.sync import Indexer

MakeIndexer = Callable[..., Indexer]
USD = 10**6
NUMERICS = b"cpu-fp32".ljust(32, b"\x00")


class SettlementActions:
    """Settlement transactions on the indexer tests' devnet, by role."""

    def __init__(self, devnet: Any, chain: ReorgChain) -> None:
        self.dn = devnet
        self.h = devnet.hearth
        self.s = Settlement(self.h)
        self.chain = chain
        self.model_id = bytes.fromhex(devnet.manifest.models[0].model_id[2:])
        self.requests = 0
        self.cumulative: dict[tuple[str, str], int] = {}

    def key(self, role: str) -> str:
        return str(self.dn.accounts[role].key)

    def addr(self, role: str) -> str:
        return str(self.dn.accounts[role].address)

    def fund(self, payer: str, lanes: dict[str, int]) -> None:
        total = sum(lanes.values())
        self.s.approve(self.key(payer), total)
        self.h.sender(self.key(payer)).send(self.s.escrow.functions.depositAndAllocate(
            [self.addr(p) for p in lanes], list(lanes.values())))

    def authorize(self, payer: str, signer: str) -> None:
        expiry = self.chain.timestamp() + 86400
        proof = sign_signer_authorization(self.key(signer), self.addr(payer), expiry, self.h.chain_id,
                                          self.s.escrow.address)
        self.h.sender(self.key(payer)).send(self.s.escrow.functions.authorizeSigner(
            self.addr(signer), expiry, True, proof))

    def pay(self, payer: str, provider: str, value: int) -> None:
        k = (payer, provider)
        self.cumulative[k] = self.cumulative.get(k, 0) + value
        v = Voucher(self.addr(payer), self.addr(provider), self.cumulative[k], self.chain.timestamp())
        self.s.collect(self.key(provider), [sign_voucher(self.key(payer), v, self.h.chain_id, self.s.escrow.address)])

    def commit(self, provider: str, n: int, payer: str = "client") -> tuple[int, Any, Any]:
        receipts = []
        for _ in range(n):
            self.requests += 1
            r = self.requests
            receipts.append(WorkReceipt(keccak(text=f"ix request {r}"), self.addr(payer), self.model_id,
                                        keccak(text=f"in {r}"), keccak(text=f"out {r}"), 10, 1000, b"\x01" * 32,
                                        NUMERICS))
        wb = self.s.work_batch(receipts)
        batch_id, batch, _ = self.s.commit(self.key(provider), wb)
        return batch_id, batch, wb

    def leaf_fraud(self, batch_id: int, batch: Any, wb: Any, index: int, challenger: str = "verifier") -> None:
        bond = self.s.params().demand_bond
        self.h.sender(self.key(challenger)).send(self.h.usd.functions.approve(self.s.batches.address, bond))
        self.s.challenge_leaf(self.key(challenger), batch_id, batch, index, wb.receipts[index], wb.proof(index))
        # The shared dispute game: a committee drawn after the challenge votes another output.
        b = self.s.batches.functions
        self.chain.mine(3)
        self.h.sender(self.key("relayer")).send(b.drawLeafCommittee(batch_id, index))
        by_addr = {str(a.address).lower(): r for r, a in self.dn.accounts.items()}
        members = list(dict.fromkeys(by_addr[a.lower()] for a in b.leafCommittee(batch_id, index).call()))
        assert members, "no committee drawn"
        did, honest, units = batch_id << 32 | index, keccak(text="honest output"), wb.receipts[index].units
        salt = keccak(text="salt")
        for r in members:
            self.h.sender(self.key(r)).send(b.commitLeafVote(batch_id, index, vote_commitment(
                did, self.addr(r), honest, units, salt)))
        d = b.leafDispute(batch_id, index).call()
        self.chain.advance(int(d[6]) - self.chain.timestamp())
        for r in members:
            self.h.sender(self.key(r)).send(b.revealLeafVote(batch_id, index, honest, units, salt))
        self.chain.advance(int(d[7]) - self.chain.timestamp())
        self.h.sender(self.key("relayer")).send(b.resolveLeafDispute(batch_id, batch.as_tuple(), index))

    def demand_and_reveal(self, batch_id: int, batch: Any, wb: Any, index: int) -> None:
        bond = self.s.params().demand_bond
        self.h.sender(self.key("verifier2")).send(self.h.usd.functions.approve(self.s.batches.address, bond))
        self.s.demand_leaf(self.key("verifier2"), batch_id, batch, index)
        self.s.reveal_leaf(self.key("provider"), batch_id, batch, index, wb.receipts[index], wb.proof(index))

    def everything(self) -> int:
        """One of each settlement event; returns the batch with a fraud."""
        self.fund("client", {"provider": 5 * USD, "verifier": 2 * USD})
        self.fund("client2", {"provider": 3 * USD})
        self.authorize("client", "relayer")
        e = self.s.escrow.functions
        self.h.sender(self.key("relayer")).send(self.h.usd.functions.transfer(self.addr("client"), 0))
        self.s.thaw(self.key("client"), self.addr("verifier"), USD)
        self.h.sender(self.key("client")).send(e.cancelThaw(self.addr("verifier")))
        self.s.thaw(self.key("client2"), self.addr("provider"), USD)
        self.h.sender(self.key("provider")).send(self.h.usd.functions.approve(self.s.escrow.address, 4 * USD))
        self.h.sender(self.key("provider")).send(e.depositBond(4 * USD))
        self.s.quote_price(self.key("provider"), self.model_id, 120)
        batch_id, batch, wb = self.commit("provider", 6)
        self.pay("client", "provider", 2 * USD)
        self.pay("client2", "provider", USD)
        self.demand_and_reveal(batch_id, batch, wb, 2)
        self.leaf_fraud(batch_id, batch, wb, 4)
        self.h.sender(self.key("client")).send(e.thawSigner(self.addr("relayer")))
        return batch_id


@pytest.fixture
def actions(idevnet: Any, ichain: ReorgChain) -> SettlementActions:
    return SettlementActions(idevnet, ichain)


def test_settlement_events_are_mirrored_and_agree_with_the_contracts(
    make_indexer: MakeIndexer, actions: SettlementActions,
) -> None:
    ix = make_indexer()
    batch_id = actions.everything()
    ix.sync()
    assert_index_matches_chain(ix)
    t = db_tables(ix.engine)
    s, a = actions.s, actions.addr
    for payer, provider in (("client", "provider"), ("client", "verifier"), ("client2", "provider")):
        row = t["escrow_lanes"][(a(payer), a(provider))]
        lane = s.lane(a(payer), a(provider))
        assert (row["balance"], row["collected"], row["thawing"], row["thaw_end"]) == (
            lane.balance, lane.collected, lane.thawing, lane.thaw_end)
    for payer in ("client", "client2"):
        assert t["escrow_deposits"][(a(payer),)]["deposit"] == s.deposit_of(a(payer))
    bond = s.escrow.functions.getBond(a("provider")).call()
    assert t["provider_bonds"][(a("provider"),)]["amount"] == bond[0] > 0
    assert t["escrow_signers"][(a("client"), a("relayer"))]["thaw_end"] > 0
    assert len(t["escrow_collections"]) == 2
    assert t["batches"][(batch_id,)]["count"] == 6
    assert t["leaf_cases"][(batch_id, 2)]["status"] == "revealed"
    fraud = t["leaf_cases"][(batch_id, 4)]
    assert fraud["status"] == "fraud" and fraud["refunded"] > 0 and fraud["slashed"] > 0
    model = "0x" + actions.model_id.hex()
    assert t["provider_prices"][(a("provider"), model)]["price"] == 120
    assert t["price_ceilings"][(model,)]["ceiling"] == s.batches.functions.priceCeiling(actions.model_id).call()
    params = {k[0]: v["value"] for k, v in t["params"].items()}
    assert params["escrow.settlement"] == params["staking.settlement"] == s.batches.address
    assert params["settlement.challengeWindow"] == str(s.params().challenge_window)


@pytest.mark.parametrize("depth", [1, 4])
def test_a_reorg_removes_settlement_state_and_a_different_history_replaces_it(
    make_indexer: MakeIndexer, actions: SettlementActions, ichain: ReorgChain, depth: int,
) -> None:
    ix = make_indexer()
    actions.fund("client", {"provider": 5 * USD})
    snap = ichain.snapshot()
    ix.sync()
    batch_id, _, _ = actions.commit("provider", 3)
    actions.pay("client", "provider", USD)
    for _ in range(depth):
        actions.s.thaw(actions.key("client"), actions.addr("provider"), USD)
    ix.sync()
    assert (batch_id,) in db_tables(ix.engine)["batches"]
    ichain.revert(snap)
    actions.cumulative.clear()
    actions.fund("client2", {"verifier": USD})
    actions.pay("client", "provider", 2 * USD)
    ix.sync()
    assert_index_matches_chain(ix)
    t = db_tables(ix.engine)
    assert t["batches"] == {}
    assert t["escrow_lanes"][(actions.addr("client"), actions.addr("provider"))]["collected"] == 2 * USD


def test_an_anvil_reorg_of_settlement_blocks_is_rolled_back(
    make_indexer: MakeIndexer, actions: SettlementActions, ichain: ReorgChain,
) -> None:
    ix = make_indexer()
    actions.fund("client", {"provider": 5 * USD})
    ix.sync()
    actions.commit("provider", 2)
    actions.pay("client", "provider", USD)
    ix.sync()
    ichain.reorg(2)
    ix.sync()
    assert ix.reorgs == 1
    assert_index_matches_chain(ix)
    assert db_tables(ix.engine)["escrow_collections"] == {}
