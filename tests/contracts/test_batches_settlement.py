"""BatchSettlement: commits, prices, leaf demands and reveals, leaf disputes, fraud, and the
attacks on them (proofs for other batches or past count, withheld leaves)."""

from __future__ import annotations

from dataclasses import replace

from contract_kit import reverts
from eth_abi import encode
from eth_utils import keccak
from settlement_kit import BPS, USD, Settle

from contracts.merkle import MerkleTree
from contracts.settlement import Batch, SettlementParams, WorkBatch, receipt_value

NONE, DEMANDED, REVEALED, DISPUTED, UPHELD, FRAUD = range(6)


def committed(settle: Settle, n: int = 5, provider: str = "provider", start: int = 0) -> tuple[int, Batch, WorkBatch]:
    batch_id, batch, wb, _ = settle.commit(provider, settle.work(n, start=start))
    return batch_id, batch, wb


def test_commit_stores_one_word_and_emits_the_whole_batch(settle: Settle) -> None:
    m, b = settle.m, settle.batches
    wb = settle.s.work_batch(settle.work(3))
    rcpt = m.send("provider", b.functions.commitBatch(wb.root, wb.count, wb.units, wb.value))
    now = m.clock.now()
    assert m.event(rcpt, "BatchCommitted") == {
        "batchId": 1, "provider": m.addr("provider"), "root": wb.root, "count": 3, "units": wb.units,
        "value": wb.value, "committedAt": now, "challengeEnd": now + settle.params.challenge_window,
    }
    batch = Batch(m.addr("provider"), wb.root, 3, wb.units, wb.value, now)
    types = ["address", "bytes32", "uint32", "uint64", "uint96", "uint40"]
    assert b.functions.batchHash(1).call() == b.functions.hashBatch(batch.as_tuple()).call() == keccak(
        encode(types, list(batch.as_tuple())))
    assert b.functions.batchCount().call() == 1
    assert int(m.staking.functions.lockedUntil(m.addr("provider")).call()) == now + settle.horizon


def test_commit_refuses_empty_batches_and_inactive_providers(settle: Settle) -> None:
    m, b = settle.m, settle.batches
    with reverts("EmptyBatch"):
        m.send("provider", b.functions.commitBatch(b"\x00" * 32, 1, 1, 1))
    with reverts("EmptyBatch"):
        m.send("provider", b.functions.commitBatch(keccak(b"root"), 0, 1, 1))
    with reverts("ProviderNotActive", m.addr("client")):
        m.send("client", b.functions.commitBatch(keccak(b"root"), 1, 1, 1))


def test_providers_quote_prices_up_to_the_ceiling_and_receipts_are_valued_at_the_quote(settle: Settle) -> None:
    m, b = settle.m, settle.batches
    ceiling = int(b.functions.priceCeiling(m.model_id).call())
    assert ceiling > 0
    rcpt = m.send("provider", b.functions.quotePrice(m.model_id, ceiling // 2))
    assert m.event(rcpt, "PriceQuoted") == {"provider": m.addr("provider"), "modelId": m.model_id,
                                            "price": ceiling // 2}
    assert settle.s.price_of(m.addr("provider"), m.model_id) == ceiling // 2
    assert receipt_value(1000, settle.s.price_of(m.addr("provider"), m.model_id)) == 1000 * (ceiling // 2)
    with reverts("PriceAboveCeiling", m.model_id, ceiling + 1, ceiling):
        m.send("provider", b.functions.quotePrice(m.model_id, ceiling + 1))
    with reverts("ModelNotServed", m.addr("client"), m.model_id):
        m.send("client", b.functions.quotePrice(m.model_id, 1))
    rcpt = m.send("deployer", b.functions.setPriceCeiling(m.model_id, ceiling // 4))
    assert m.event(rcpt, "PriceCeilingSet") == {"modelId": m.model_id, "ceiling": ceiling // 4}
    assert settle.s.price_of(m.addr("provider"), m.model_id) == ceiling // 4  # capped by the new ceiling
    with reverts("OwnableUnauthorizedAccount", m.addr("provider")):
        m.send("provider", b.functions.setPriceCeiling(m.model_id, 10**9))
    # The per-job path keeps its terms: the registry price, not the quote.
    assert m.post().job.price_per_unit == m.price


def test_a_demanded_leaf_revealed_in_time_pays_the_bond_to_the_provider(settle: Settle) -> None:
    m = settle.m
    batch_id, batch, wb = committed(settle)
    before = m.usd("provider")
    rcpt = settle.demand("verifier", batch_id, batch, 2)
    deadline = m.clock.now() + settle.params.reveal_window
    assert m.event(rcpt, "LeafDemanded") == {"batchId": batch_id, "index": 2, "challenger": m.addr("verifier"),
                                             "bond": settle.params.demand_bond, "deadline": deadline}
    with reverts("WrongLeafStatus", batch_id, 2, DEMANDED):
        settle.demand("verifier2", batch_id, batch, 2)
    with reverts("InvalidProof", batch_id, 2):
        settle.reveal("provider", batch_id, batch, 2, wb, proof_index=3)
    with reverts("RevealWindowOpen", batch_id, 2, deadline):
        m.send("relayer", settle.batches.functions.settleWithheldLeaf(batch_id, batch.as_tuple(), 2))
    rcpt = settle.reveal("provider", batch_id, batch, 2, wb)
    ev = m.event(rcpt, "LeafRevealed")
    assert (ev["batchId"], ev["index"], tuple(ev["leaf"].values())) == (batch_id, 2, wb.receipts[2].as_tuple())
    assert ev["challengeDeadline"] == m.clock.now() + settle.params.reveal_window
    assert m.usd("provider") == before + settle.params.demand_bond
    assert settle.case(batch_id, 2)["status"] == REVEALED
    with reverts("WrongLeafStatus", batch_id, 2, REVEALED):
        settle.reveal("provider", batch_id, batch, 2, wb)


def test_a_withheld_leaf_is_fraud_slashes_the_provider_and_pays_the_challenger(settle: Settle) -> None:
    """Attack: commit a root over garbage and never reveal what a verifier asks for.
    Vulnerable version: a demand that goes unanswered has no consequence."""
    m = settle.m
    batch_id, batch, wb = committed(settle)
    settle.demand("verifier", batch_id, batch, 4)
    deadline = m.clock.now() + settle.params.reveal_window
    m.clock.warp(deadline)
    with reverts("RevealWindowClosed", batch_id, 4, deadline):
        settle.reveal("provider", batch_id, batch, 4, wb)
    staked, hst_v, hst_t, usd_v = (m.provider_info("provider")["staked"], m.hst("verifier"), m.hst("treasury"),
                                   m.usd("verifier"))
    rcpt = m.send("relayer", settle.batches.functions.settleWithheldLeaf(batch_id, batch.as_tuple(), 4))
    slash = settle.params.leaf_slash
    reward = slash * settle.params.challenger_reward_bps // BPS
    assert m.event(rcpt, "LeafFraudProven") == {
        "batchId": batch_id, "index": 4, "provider": m.addr("provider"), "challenger": m.addr("verifier"),
        "payer": "0x" + "00" * 20, "refunded": 0, "slashed": slash, "challengerReward": reward, "withheld": True,
    }
    info = m.provider_info("provider")
    assert info["staked"] == staked - slash
    assert info["jailed_until"] == m.clock.now() + m.jail_period
    assert m.hst("verifier") == hst_v + reward
    assert m.hst("treasury") == hst_t + slash - reward
    assert m.usd("verifier") == usd_v + settle.params.demand_bond
    assert settle.case(batch_id, 4)["status"] == FRAUD
    # A jailed provider commits nothing more.
    with reverts("ProviderNotActive", m.addr("provider")):
        settle.commit("provider", settle.work(1))


def test_a_disputed_leaf_found_fraudulent_refunds_value_and_penalty_into_the_payers_deposit(settle: Settle) -> None:
    m, e = settle.m, settle.escrow
    settle.bond("provider", 10 * USD)
    batch_id, batch, wb = committed(settle)
    leaf = wb.receipts[1]
    rcpt = settle.challenge("verifier", batch_id, batch, 1, leaf, wb.proof(1))
    deadline = m.clock.now() + settle.params.resolve_window + m.params.escalation_period
    assert m.event(rcpt, "LeafChallenged") == {
        "batchId": batch_id, "index": 1, "challenger": m.addr("verifier"), "payer": m.addr("client"),
        "value": leaf.value, "outputHash": leaf.output_hash, "bond": settle.params.demand_bond, "deadline": deadline,
    }
    with reverts("WrongLeafStatus", batch_id, 1, DISPUTED):
        settle.challenge("verifier2", batch_id, batch, 1, leaf, wb.proof(1))
    with reverts("OwnableUnauthorizedAccount", m.addr("verifier")):
        settle.resolve(batch_id, batch, 1, True, role="verifier")
    deposit = settle.deposit_of("client")
    rcpt = settle.decide_by_committee(batch_id, batch, 1, leaf, fraud=True)
    refund = leaf.value + leaf.value * settle.params.penalty_bps // BPS
    ev = m.event(rcpt, "LeafFraudProven")
    assert (ev["payer"], ev["refunded"], ev["withheld"]) == (m.addr("client"), refund, False)
    assert m.event(rcpt, "BondSeized") == {"provider": m.addr("provider"), "payer": m.addr("client"),
                                           "amount": refund, "bond": 10 * USD - refund}
    assert settle.deposit_of("client") == deposit + refund
    assert settle.bond_of("provider") == 10 * USD - refund
    assert m.usd(e.address) == settle.deposit_of("client") + settle.bond_of("provider")
    with reverts("WrongLeafStatus", batch_id, 1, FRAUD):
        settle.resolve(batch_id, batch, 1, False)


def test_a_refund_larger_than_the_bond_takes_the_whole_bond(settle: Settle) -> None:
    m = settle.m
    settle.bond("provider", 100)
    batch_id, batch, wb = committed(settle)
    settle.challenge("verifier", batch_id, batch, 0, wb.receipts[0], wb.proof(0))
    rcpt = settle.decide_by_committee(batch_id, batch, 0, wb.receipts[0], fraud=True)
    assert m.event(rcpt, "LeafFraudProven")["refunded"] == 100
    assert settle.bond_of("provider") == 0


def test_an_upheld_leaf_credits_the_challengers_bond_to_the_provider_less_the_committees_share(
    settle: Settle,
) -> None:
    m = settle.m
    batch_id, batch, wb = committed(settle)
    settle.challenge("verifier", batch_id, batch, 3, wb.receipts[3], wb.proof(3))
    before = int(settle.batches.functions.balanceOf(m.addr("provider")).call())
    rcpt = settle.decide_by_committee(batch_id, batch, 3, wb.receipts[3], fraud=False)
    bond = settle.params.demand_bond
    share = bond * min(m.params.committee_reward_bps, BPS - settle.params.challenger_reward_bps) // BPS
    assert m.event(rcpt, "LeafUpheld") == {"batchId": batch_id, "index": 3, "provider": m.addr("provider"),
                                           "bondToProvider": bond - share, "byDefault": False}
    assert int(settle.batches.functions.balanceOf(m.addr("provider")).call()) == before + bond - share
    assert settle.case(batch_id, 3)["status"] == UPHELD


def test_a_revealed_leaf_can_be_challenged_within_its_grace_only(settle: Settle) -> None:
    m = settle.m
    batch_id, batch, wb = committed(settle)
    m.clock.advance(settle.params.challenge_window - 1)
    settle.demand("verifier", batch_id, batch, 1)
    settle.reveal("provider", batch_id, batch, 1, wb)
    grace = m.clock.now() + settle.params.reveal_window
    m.clock.warp(grace - 1)  # the batch's own window is over; the revealed leaf's grace is not
    with reverts("ChallengeWindowClosed", batch_id, batch.committed_at + settle.params.challenge_window):
        settle.challenge("verifier", batch_id, batch, 0, wb.receipts[0], wb.proof(0))
    settle.challenge("verifier", batch_id, batch, 1, wb.receipts[1], wb.proof(1))
    assert settle.case(batch_id, 1)["status"] == DISPUTED


def test_the_revealed_leafs_grace_ends(settle: Settle) -> None:
    m = settle.m
    batch_id, batch, wb = committed(settle)
    settle.demand("verifier", batch_id, batch, 1)
    settle.reveal("provider", batch_id, batch, 1, wb)
    grace = m.clock.now() + settle.params.reveal_window
    m.clock.warp(max(grace, batch.committed_at + settle.params.challenge_window))
    with reverts("ChallengeWindowClosed", batch_id, grace):
        settle.challenge("verifier", batch_id, batch, 1, wb.receipts[1], wb.proof(1))
    with reverts("ChallengeWindowClosed", batch_id, batch.committed_at + settle.params.challenge_window):
        settle.demand("verifier", batch_id, batch, 2)


def test_a_leaf_proof_for_another_batch_is_refused(settle: Settle) -> None:
    """Attack: prove a leaf of batch A against batch B (or the other way). Vulnerable version:
    verify against any committed root."""
    batch_a, a, wa = committed(settle, 4)
    batch_b, b, wb = committed(settle, 4, start=4)
    with reverts("InvalidProof", batch_b, 1):
        settle.challenge("verifier", batch_b, b, 1, wa.receipts[1], wa.proof(1))
    with reverts("BatchMismatch", batch_b):
        settle.challenge("verifier", batch_b, a, 1, wa.receipts[1], wa.proof(1))
    with reverts("UnknownBatch", 99):
        settle.challenge("verifier", 99, a, 1, wa.receipts[1], wa.proof(1))


def test_an_index_past_count_is_refused_even_where_the_padding_would_verify(settle: Settle) -> None:
    """Attack: a batch of 3 is padded to 4 leaves; the zero leaf at index 3 hashes to the root
    with a valid path. Vulnerable version: check the path but not index < count."""
    m = settle.m
    batch_id, batch, wb = committed(settle, 3)
    assert m.clock.now() < batch.committed_at + settle.params.challenge_window
    tree: MerkleTree = wb.tree
    padding_proof = [tree.levels[0][2], tree.levels[1][0]]
    with reverts("IndexOutOfRange", batch_id, 3, 3):
        settle.challenge("verifier", batch_id, batch, 3, wb.receipts[0], padding_proof)
    with reverts("IndexOutOfRange", batch_id, 3, 3):
        settle.demand("verifier", batch_id, batch, 3)
    # A batch record claiming a larger count does not match the commitment.
    with reverts("BatchMismatch", batch_id):
        settle.demand("verifier", batch_id, replace(batch, count=4), 3)


def test_only_other_staked_providers_serving_the_model_can_dispute_a_leaf(settle: Settle) -> None:
    m = settle.m
    batch_id, batch, wb = committed(settle)
    with reverts("NotEligible", m.addr("client")):
        settle.challenge("client", batch_id, batch, 0, wb.receipts[0], wb.proof(0))
    with reverts("NotEligible", m.addr("provider")):
        settle.challenge("provider", batch_id, batch, 0, wb.receipts[0], wb.proof(0))
    with reverts("NotEligible", m.addr("provider")):
        settle.demand("provider", batch_id, batch, 0)


def test_batches_past_their_window_cannot_be_questioned(settle: Settle) -> None:
    m = settle.m
    batch_id, batch, wb = committed(settle)
    end = batch.committed_at + settle.params.challenge_window
    m.clock.warp(end)
    with reverts("ChallengeWindowClosed", batch_id, end):
        settle.demand("verifier", batch_id, batch, 0)
    with reverts("ChallengeWindowClosed", batch_id, end):
        settle.challenge("verifier", batch_id, batch, 0, wb.receipts[0], wb.proof(0))


def test_leaf_disputes_must_outlast_the_markets_committee_game(settle: Settle) -> None:
    m = settle.m
    p = settle.params
    short = replace(p, resolve_window=m.params.commit_period + m.params.reveal_period - 1)
    with reverts("InvalidParameter"):
        m.send("deployer", settle.batches.functions.setParams(short.as_tuple()))
    with reverts("InvalidParameter"):
        m.send("deployer", settle.batches.functions.setParams(replace(p, challenger_reward_bps=BPS + 1).as_tuple()))
    ok = replace(p, resolve_window=m.params.commit_period + m.params.reveal_period)
    rcpt = m.send("deployer", settle.batches.functions.setParams(ok.as_tuple()))
    assert SettlementParams(*m.event(rcpt, "ParamsSet")["params"].values()) == ok
    with reverts("OwnableUnauthorizedAccount", m.addr("client")):
        m.send("client", settle.batches.functions.setParams(ok.as_tuple()))


def test_batch_settlement_names_the_escrow_staking_and_market_it_works_with(settle: Settle) -> None:
    f, m = settle.batches.functions, settle.m
    assert (f.escrow().call(), f.staking().call(), f.market().call()) == (
        settle.escrow.address, m.staking.address, m.market.address)
