"""A challenged batch leaf goes through the shared dispute game (the `DisputeGame` library that
`JobMarket` runs): a committee drawn after the challenge, bonded commit and reveal on (output,
units), the verdict mapped onto the leaf (fraud: slash, payer refund, shares of the slash;
upheld: the bond to the provider less the committee's share), governance only on escalation and
the neutral default past it. Money is followed to the wei through the settlement's credits."""

from __future__ import annotations

from dataclasses import replace

import pytest
from contract_kit import deploy, reverts
from eth_utils import keccak
from settlement_kit import BPS, USD, Settle

from contracts.errors import ChainError
from contracts.settlement import Batch, WorkBatch, WorkReceipt
from contracts.types import Phase

NONE, DEMANDED, REVEALED, DISPUTED, UPHELD, FRAUD = range(6)
HONEST = keccak(text="the honest output")


def with_wrong_leaf(settle: Settle, index: int, n: int = 4) -> tuple[int, Batch, WorkBatch, WorkReceipt]:
    """A batch whose leaf ``index`` claims an output the model does not produce."""
    receipts = settle.work(n)
    receipts[index] = replace(receipts[index], output_hash=keccak(text="a made-up output"))
    batch_id, batch, wb, _ = settle.commit("provider", receipts)
    return batch_id, batch, wb, wb.receipts[index]


def credits(settle: Settle, roles: list[str]) -> tuple[dict[str, int], dict[str, int]]:
    """(payment-token, staking-token) credits in the settlement by role (and the treasury)."""
    b = settle.batches.functions
    who = {r: settle.m.addr(r) for r in roles} | {"treasury": settle.params.treasury}
    return ({r: int(b.balanceOf(a).call()) for r, a in who.items()},
            {r: int(b.rewardOf(a).call()) for r, a in who.items()})


def seats_of(settle: Settle, batch_id: int, index: int, role: str) -> int:
    return int(settle.batches.functions.leafMember(batch_id, index, settle.m.addr(role)).call()[0])


def committee_bps(settle: Settle) -> int:
    return min(settle.m.params.committee_reward_bps, BPS - settle.params.challenger_reward_bps)


def withdraw_all(settle: Settle, roles: list[str]) -> None:
    """Every role withdraws its credits; the settlement is left holding nothing."""
    b = settle.batches.functions
    for role in roles:
        usd, hst = settle.m.usd(role), settle.m.hst(role)
        owed_usd, owed_hst = int(b.balanceOf(settle.m.addr(role)).call()), int(b.rewardOf(settle.m.addr(role)).call())
        if owed_usd:
            rcpt = settle.m.send(role, b.withdraw(settle.m.addr(role)))
            assert settle.m.event(rcpt, "Withdrawn") == {"account": settle.m.addr(role), "to": settle.m.addr(role),
                                                         "amount": owed_usd}
        if owed_hst:
            rcpt = settle.m.send(role, b.withdrawRewards(settle.m.addr(role)))
            assert settle.m.event(rcpt, "RewardsWithdrawn") == {
                "account": settle.m.addr(role), "to": settle.m.addr(role), "amount": owed_hst}
        assert (settle.m.usd(role), settle.m.hst(role)) == (usd + owed_usd, hst + owed_hst)
        with reverts("NothingToWithdraw", settle.m.addr(role)):
            settle.m.send(role, b.withdraw(settle.m.addr(role)))


def test_a_wrong_leaf_challenged_by_an_honest_verifier_is_convicted_by_an_honest_committee(settle: Settle) -> None:
    m, b = settle.m, settle.batches.functions
    p = settle.params
    settle.bond("provider", 10 * USD)
    batch_id, batch, wb, leaf = with_wrong_leaf(settle, 2)
    did = settle.dispute_id(batch_id, 2)
    assert b.leafDisputeId(batch_id, 2).call() == did
    hst_staking, usd_escrow = m.hst(m.staking.address), m.usd(settle.escrow.address)
    usd_verifier = m.usd("verifier")
    rcpt = settle.challenge("verifier", batch_id, batch, 2, leaf, wb.proof(2))
    assert m.usd("verifier") == usd_verifier - p.demand_bond
    assert m.event(rcpt, "JobChallenged") == {"jobId": did, "challenger": m.addr("verifier"),
                                              "bond": p.demand_bond, "drawBlock": rcpt["blockNumber"] + 2}
    d = settle.leaf_dispute(batch_id, 2)
    assert (d["phase"], d["provider"], d["outputHash"], d["units"]) == (
        Phase.AWAITING_DRAW, m.addr("provider"), leaf.output_hash, leaf.units)
    assert b.leafCommittee(batch_id, 2).call() == []
    rcpt = settle.draw_leaf(batch_id, 2)
    members = settle.leaf_committee(batch_id, 2)
    assert members and set(members) <= {"verifier2", "cheater"}  # never the parties
    assert m.event(rcpt, "CommitteeDrawn")["seats"] == b.leafCommittee(batch_id, 2).call()
    locked = {r: m.provider_info(r)["locked"] for r in members}
    settle.leaf_vote(batch_id, 2, dict.fromkeys(members, (HONEST, leaf.units)))
    staked = m.provider_info("provider")["staked"]
    deposit, bond = settle.deposit_of("client"), settle.bond_of("provider")

    rcpt = settle.resolve_dispute(batch_id, batch, 2)

    slash = p.leaf_slash
    reward = slash * p.challenger_reward_bps // BPS
    pot = slash * committee_bps(settle) // BPS
    total_seats = sum(seats_of(settle, batch_id, 2, r) for r in members)
    shares = {r: pot * seats_of(settle, batch_id, 2, r) // total_seats for r in members}
    refund = leaf.value + leaf.value * p.penalty_bps // BPS
    assert m.event(rcpt, "LeafFraudProven") == {
        "batchId": batch_id, "index": 2, "provider": m.addr("provider"), "challenger": m.addr("verifier"),
        "payer": m.addr("client"), "refunded": refund, "slashed": slash, "challengerReward": reward,
        "withheld": False,
    }
    assert m.event(rcpt, "DisputeSettled") == {
        "jobId": did, "challengerReward": reward, "committeeRewardUsd": 0,
        "committeeRewardStake": sum(shares.values()), "treasuryStake": slash - reward - sum(shares.values()),
    }
    assert settle.case(batch_id, 2)["status"] == FRAUD
    assert settle.leaf_dispute(batch_id, 2)["phase"] == Phase.SETTLED
    info = m.provider_info("provider")
    assert info["staked"] == staked - slash
    assert info["jailed_until"] == m.clock.now() + m.jail_period
    assert settle.deposit_of("client") == deposit + refund  # into the payer's lane-side deposit
    assert settle.bond_of("provider") == bond - refund
    assert m.usd(settle.escrow.address) == usd_escrow  # the refund moved inside the escrow
    for r in members:
        assert m.provider_info(r)["locked"] == locked[r]  # member bonds released
    usd_credits, hst_credits = credits(settle, ["verifier", *members, "provider"])
    assert usd_credits == {"verifier": p.demand_bond, **dict.fromkeys(members, 0), "provider": 0, "treasury": 0}
    assert hst_credits == {"verifier": reward, **shares, "provider": 0,
                           "treasury": slash - reward - sum(shares.values())}
    # Conserved to the wei: the slash left staking and sits whole in the settlement's credits,
    # and the bond likewise.
    assert m.hst(m.staking.address) == hst_staking - slash
    assert m.hst(settle.batches.address) == sum(hst_credits.values()) == slash
    assert m.usd(settle.batches.address) == sum(usd_credits.values()) == p.demand_bond
    withdraw_all(settle, ["verifier", *members])
    assert m.usd(settle.batches.address) == 0
    assert m.hst(settle.batches.address) == hst_credits["treasury"]
    with reverts("WrongLeafStatus", batch_id, 2, FRAUD):
        settle.resolve_dispute(batch_id, batch, 2)


def test_an_honest_leaf_challenged_is_upheld_and_the_challenger_loses_its_bond(settle: Settle) -> None:
    m = settle.m
    p = settle.params
    batch_id, batch, wb, _ = settle.commit("provider", settle.work(3))
    leaf = wb.receipts[1]
    settle.challenge("verifier", batch_id, batch, 1, leaf, wb.proof(1))
    staked, hst_staking = m.provider_info("provider")["staked"], m.hst(m.staking.address)

    rcpt = settle.decide_by_committee(batch_id, batch, 1, leaf, fraud=False)

    members = settle.leaf_committee(batch_id, 1)
    pot = p.demand_bond * committee_bps(settle) // BPS
    total_seats = sum(seats_of(settle, batch_id, 1, r) for r in members)
    shares = {r: pot * seats_of(settle, batch_id, 1, r) // total_seats for r in members}
    assert m.event(rcpt, "LeafUpheld") == {"batchId": batch_id, "index": 1, "provider": m.addr("provider"),
                                           "bondToProvider": p.demand_bond - pot, "byDefault": False}
    assert settle.case(batch_id, 1)["status"] == UPHELD
    usd_credits, hst_credits = credits(settle, ["verifier", "provider", *members])
    assert usd_credits == {"verifier": 0, "provider": p.demand_bond - pot, **shares,
                           "treasury": pot - sum(shares.values())}
    assert set(hst_credits.values()) == {0}
    assert m.provider_info("provider")["staked"] == staked  # nobody slashed
    assert m.hst(m.staking.address) == hst_staking
    assert m.usd(settle.batches.address) == sum(usd_credits.values()) == p.demand_bond
    withdraw_all(settle, ["provider", *members])
    with reverts("NothingToWithdraw", m.addr("verifier")):
        m.send("verifier", settle.batches.functions.withdraw(m.addr("verifier")))


def test_a_leaf_dispute_with_too_few_eligible_providers_ends_with_the_neutral_default(settle: Settle) -> None:
    m = settle.m
    for r in ("verifier2", "cheater"):
        m.send(r, m.staking.functions.setServing(m.model_id, False))
    batch_id, batch, wb, leaf = with_wrong_leaf(settle, 0, 2)
    settle.challenge("verifier", batch_id, batch, 0, leaf, wb.proof(0))
    staked = m.provider_info("provider")["staked"]
    rcpt = settle.draw_leaf(batch_id, 0)
    assert m.event(rcpt, "CommitteeDrawn")["seats"] == []
    assert settle.leaf_dispute(batch_id, 0)["phase"] == Phase.NO_COMMITTEE
    rcpt = settle.resolve_dispute(batch_id, batch, 0)
    assert m.event(rcpt, "LeafUpheld") == {"batchId": batch_id, "index": 0, "provider": m.addr("provider"),
                                           "bondToProvider": 0, "byDefault": True}
    assert m.event(rcpt, "DisputeSettled") == {"jobId": settle.dispute_id(batch_id, 0), "challengerReward": 0,
                                               "committeeRewardUsd": 0, "committeeRewardStake": 0,
                                               "treasuryStake": 0}
    assert m.provider_info("provider")["staked"] == staked
    usd_credits, hst_credits = credits(settle, ["verifier", "provider"])
    assert usd_credits == {"verifier": settle.params.demand_bond, "provider": 0, "treasury": 0}
    assert m.usd(settle.batches.address) == settle.params.demand_bond
    assert set(hst_credits.values()) == {0}


def test_a_leaf_dispute_without_a_quorum_escalates_and_governance_decides_before_the_deadline(
    settle: Settle,
) -> None:
    m = settle.m
    settle.bond("provider", 10 * USD)
    batch_id, batch, wb, leaf = with_wrong_leaf(settle, 1)
    settle.challenge("verifier", batch_id, batch, 1, leaf, wb.proof(1))
    with reverts("DisputeNotEscalated", settle.dispute_id(batch_id, 1)):
        settle.resolve(batch_id, batch, 1, True)
    rcpt = settle.escalate(batch_id, batch, 1)
    end = m.clock.now() + m.params.escalation_period
    assert m.event(rcpt, "LeafDisputeEscalated") == {"batchId": batch_id, "index": 1, "escalationEnd": end}
    with reverts("DisputeStillOpen", settle.dispute_id(batch_id, 1), end):
        settle.resolve_dispute(batch_id, batch, 1)
    with reverts("OwnableUnauthorizedAccount", m.addr("verifier")):
        settle.resolve(batch_id, batch, 1, True, role="verifier")
    deposit = settle.deposit_of("client")
    rcpt = settle.resolve(batch_id, batch, 1, True)
    refund = leaf.value + leaf.value * settle.params.penalty_bps // BPS
    ev = m.event(rcpt, "LeafFraudProven")
    assert (ev["refunded"], ev["slashed"]) == (refund, settle.params.leaf_slash)
    assert settle.deposit_of("client") == deposit + refund
    # Members who never voted were penalized: their penalties join the pot, and the settlement
    # holds exactly what it credited.
    _, hst_credits = credits(settle, ["verifier", "verifier2", "cheater"])
    assert m.hst(settle.batches.address) == sum(hst_credits.values())


def test_an_escalated_leaf_dispute_nobody_decides_ends_with_the_neutral_default(settle: Settle) -> None:
    m = settle.m
    batch_id, batch, wb = settle.commit("provider", settle.work(2))[:3]
    settle.challenge("verifier", batch_id, batch, 0, wb.receipts[0], wb.proof(0))
    settle.escalate(batch_id, batch, 0)
    end = int(settle.leaf_dispute(batch_id, 0)["escalationEnd"])
    m.clock.warp(end)
    with reverts("EscalationClosed", settle.dispute_id(batch_id, 0), end):
        settle.resolve(batch_id, batch, 0, True)
    rcpt = settle.resolve_dispute(batch_id, batch, 0)
    assert m.event(rcpt, "LeafUpheld")["byDefault"] is True
    assert int(settle.batches.functions.balanceOf(m.addr("verifier")).call()) == settle.params.demand_bond
    with reverts("WrongLeafStatus", batch_id, 0, UPHELD):
        settle.resolve_dispute(batch_id, batch, 0)


def test_a_committee_drawn_too_late_for_the_settlement_horizon_is_refused_and_the_default_follows(
    settle: Settle,
) -> None:
    """Attack: wait with the draw so that the verdict comes after the provider's stake lock and
    the payers' thaws have run out. Vulnerable version: a draw at any time within the block
    horizon. Now the draw closes early enough for the whole vote and the escalation to fit in
    the dispute's deadline, which the settlement horizon covers."""
    m = settle.m
    p = settle.params
    batch_id, batch, wb, leaf = with_wrong_leaf(settle, 0, 2)
    settle.challenge("verifier", batch_id, batch, 0, leaf, wb.proof(0))
    case = settle.case(batch_id, 0)
    assert case["deadline"] == m.clock.now() + p.resolve_window + m.params.escalation_period
    last = int(settle.batches.functions.drawDeadline(batch_id, 0).call())
    assert last == case["deadline"] - m.params.escalation_period - m.params.commit_period - m.params.reveal_period
    assert settle.horizon == p.challenge_window + 2 * p.reveal_window + p.resolve_window + m.params.escalation_period
    m.clock.warp(last + 1)
    with reverts("DrawWindowClosed", batch_id, 0, last):
        settle.draw_leaf(batch_id, 0)
    draw_block = int(settle.leaf_dispute(batch_id, 0)["drawBlock"])
    with reverts("DisputeStillOpen", settle.dispute_id(batch_id, 0), draw_block + 256):
        settle.resolve_dispute(batch_id, batch, 0)
    m.clock.rpc("anvil_mine", [hex(draw_block + 256 - m.w3.eth.block_number)])
    rcpt = settle.resolve_dispute(batch_id, batch, 0)
    assert m.event(rcpt, "LeafUpheld")["byDefault"] is True
    assert settle.batches.functions.drawDeadline(batch_id, 0).call() == 0


def test_a_contract_challenger_cannot_see_or_draw_the_leaf_committee_in_its_challenge_transaction(
    settle: Settle,
) -> None:
    """Attack: a staked contract challenges a leaf and reads the committee in the same
    transaction, reverting until its sybils hold the seats. Vulnerable version: a committee
    drawn inside `challengeLeaf`. Now nothing is drawn yet, and drawing in the same transaction
    reverts: the seed is the hash of a block mined after the challenge."""
    m = settle.m
    grinder = deploy(m, "Grinder", role="spare")
    g = grinder.functions
    m.send("deployer", m.h.hst.functions.mint(grinder.address, m.min_stake))
    m.send("deployer", m.h.usd.functions.mint(grinder.address, 100 * USD))
    hst, usd, staking = m.h.hst.functions, m.h.usd.functions, m.staking.functions
    for target, fn in [
        (m.h.hst.address, hst.approve(m.staking.address, m.min_stake)),
        (m.staking.address, staking.register("http://g", "x", "cpu", m.min_stake)),
        (m.staking.address, staking.setServing(m.model_id, True)),
        (m.h.usd.address, usd.approve(settle.batches.address, 100 * USD)),
    ]:
        m.send("spare", g.execute(target, fn._encode_transaction_data()))
    batch_id, batch, wb, leaf = with_wrong_leaf(settle, 1)
    args = (settle.batches.address, batch_id, batch.as_tuple(), 1, leaf.as_tuple(), wb.proof(1))
    assert g.challengeLeafAndInspect(*args).call({"from": m.addr("spare")}) == 0
    mined = m.w3.eth.block_number
    with pytest.raises(ChainError) as caught:
        m.send("spare", g.challengeLeafAndDraw(*args))
    # The seed's block lies ahead of every block mined so far (its hash is unknown to the challenger).
    assert caught.value.error_name == "DrawNotReady"
    assert caught.value.error_args[0] == settle.dispute_id(batch_id, 1) and caught.value.error_args[1] > mined + 1
    assert settle.case(batch_id, 1)["status"] == NONE
