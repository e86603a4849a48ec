"""PaymentEscrow collection: cumulative vouchers, partial collection, signers, and the attacks
on them (replay, rollback, revoked signers, thaw races, overcollection)."""

from __future__ import annotations

import pytest
from contract_kit import reverts
from settlement_kit import USD, Settle, signer_address, signer_key

from contracts.settlement import (
    SettlementError,
    Voucher,
    aggregate,
    payment_receipt_digest,
    recover_payment_receipt,
    sign_payment_receipt,
    sign_voucher,
    voucher_digest,
)


def test_collect_pays_the_difference_to_what_was_collected(settle: Settle) -> None:
    m = settle.m
    settle.fund_lane("client", {"provider": 10 * USD})
    before = m.usd("provider")
    rcpt = settle.collect("provider", [settle.voucher("client", "provider", 3 * USD)])
    assert m.event(rcpt, "Collected") == {
        "payer": m.addr("client"), "provider": m.addr("provider"), "amount": 3 * USD, "collected": 3 * USD,
        "cumulativeValue": 3 * USD, "laneBalance": 7 * USD,
    }
    rcpt = settle.collect("provider", [settle.voucher("client", "provider", 5 * USD)])
    assert m.event(rcpt, "Collected")["amount"] == 2 * USD
    assert m.usd("provider") == before + 5 * USD
    lane = settle.lane("client", "provider")
    assert (lane.balance, lane.collected) == (5 * USD, 5 * USD)


def test_a_short_lane_pays_what_it_holds_and_the_same_voucher_collects_the_rest_later(settle: Settle) -> None:
    m = settle.m
    settle.fund_lane("client", {"provider": 2 * USD})
    v = settle.voucher("client", "provider", 5 * USD)
    rcpt = settle.collect("provider", [v])
    assert m.event(rcpt, "Collected")["amount"] == 2 * USD
    with reverts("NothingCollected"):
        settle.collect("provider", [v])
    settle.fund_lane("client", {"provider": 10 * USD})
    rcpt = settle.collect("provider", [v])
    assert m.event(rcpt, "Collected") == {
        "payer": m.addr("client"), "provider": m.addr("provider"), "amount": 3 * USD, "collected": 5 * USD,
        "cumulativeValue": 5 * USD, "laneBalance": 7 * USD,
    }


def test_many_vouchers_from_many_payers_are_collected_in_one_transfer(settle: Settle) -> None:
    m = settle.m
    settle.fund_lane("client", {"provider": 4 * USD})
    settle.fund_lane("client2", {"provider": 4 * USD})
    before = m.usd("provider")
    rcpt = settle.collect("provider", [settle.voucher("client", "provider", USD),
                                       settle.voucher("client2", "provider", 2 * USD)])
    assert [e["amount"] for e in m.events(rcpt, "Collected")] == [USD, 2 * USD]
    assert m.usd("provider") == before + 3 * USD
    assert len(m.events(rcpt, "Transfer")) == 1


def test_replaying_a_voucher_pays_nothing(settle: Settle) -> None:
    """Vulnerable version: pay `cumulativeValue` (not the difference) on every redemption."""
    m = settle.m
    settle.fund_lane("client", {"provider": 10 * USD})
    v = settle.voucher("client", "provider", 3 * USD)
    settle.collect("provider", [v])
    with reverts("VoucherNotNewer", m.addr("client"), m.addr("provider"), 3 * USD, 3 * USD):
        settle.collect("provider", [v])
    with reverts("VoucherNotNewer", m.addr("client"), m.addr("provider"), 3 * USD, 3 * USD):
        settle.collect("provider", [v, v])  # twice in one transaction, too
    assert settle.lane("client", "provider").collected == 3 * USD


def test_a_lower_cumulative_after_a_higher_one_pays_nothing(settle: Settle) -> None:
    """Vulnerable version: track the last voucher and pay its value when it changes."""
    m = settle.m
    settle.fund_lane("client", {"provider": 10 * USD})
    low, high = settle.voucher("client", "provider", 2 * USD), settle.voucher("client", "provider", 5 * USD)
    settle.collect("provider", [high])
    with reverts("VoucherNotNewer", m.addr("client"), m.addr("provider"), 2 * USD, 5 * USD):
        settle.collect("provider", [low])
    assert settle.lane("client", "provider").balance == 5 * USD


def test_a_provider_cannot_collect_more_than_was_signed(settle: Settle) -> None:
    """A voucher whose value the provider raised, or one signed for another provider, pays
    nothing. Vulnerable version: trust the voucher's fields without the signature over them."""
    m = settle.m
    settle.fund_lane("client", {"provider": 10 * USD})
    v = settle.voucher("client", "provider", 2 * USD)
    forged = v.__class__(Voucher(v.voucher.payer, v.voucher.provider, 9 * USD, v.voucher.timestamp), v.signature)
    with reverts("InvalidVoucherSignature", m.addr("client"), m.addr("provider")):
        settle.collect("provider", [forged])
    theirs = settle.voucher("client", "verifier", 2 * USD)
    with reverts("NotVoucherProvider", m.addr("provider"), m.addr("verifier")):
        settle.collect("provider", [theirs])
    # A voucher signed for another escrow (or chain) does not verify here.
    elsewhere = sign_voucher(m.key("client"), v.voucher, settle.chain_id, m.addr("spare"))
    with reverts("InvalidVoucherSignature", m.addr("client"), m.addr("provider")):
        settle.collect("provider", [elsewhere])
    with reverts("InvalidVoucherSignature", m.addr("client"), m.addr("provider")):
        settle.collect("provider", [v.__class__(v.voucher, b"\x01" * 65)])
    with reverts("LengthMismatch"):
        m.send("provider", settle.escrow.functions.collect([v.voucher.as_tuple()], []))
    assert settle.lane("client", "provider").collected == 0


def test_an_authorized_signers_vouchers_pay_until_it_is_revoked(settle: Settle) -> None:
    """Vulnerable version: accept any signer ever authorized."""
    m, e = settle.m, settle.escrow
    settle.fund_lane("client", {"provider": 10 * USD})
    stranger = settle.voucher("client", "provider", USD, key=signer_key("gateway"))
    with reverts("InvalidVoucherSignature", m.addr("client"), m.addr("provider")):
        settle.collect("provider", [stranger])
    settle.authorize("client", "gateway")
    settle.collect("provider", [stranger])
    m.send("client", e.functions.thawSigner(signer_address("gateway")))
    # During the signer's thaw its vouchers still pay: that is the providers' notice.
    settle.collect("provider", [settle.voucher("client", "provider", 2 * USD, key=signer_key("gateway"))])
    m.clock.advance(settle.thaw_delay)
    m.send("client", e.functions.revokeSigner(signer_address("gateway")))
    late = settle.voucher("client", "provider", 3 * USD, key=signer_key("gateway"))
    with reverts("InvalidVoucherSignature", m.addr("client"), m.addr("provider")):
        settle.collect("provider", [late])
    assert settle.lane("client", "provider").collected == 2 * USD


def test_an_expired_signers_vouchers_are_refused(settle: Settle) -> None:
    m = settle.m
    settle.fund_lane("client", {"provider": 10 * USD})
    expiry = m.clock.now() + 600
    settle.authorize("client", "api-key", expiry=expiry)
    v = settle.voucher("client", "provider", USD, key=signer_key("api-key"))
    m.clock.warp(expiry)
    with reverts("InvalidVoucherSignature", m.addr("client"), m.addr("provider")):
        settle.collect("provider", [v])


def test_a_payer_thawing_its_lane_cannot_take_money_a_voucher_already_claimed(settle: Settle) -> None:
    """Attack: the payer gets service, thaws the whole lane and withdraws it before the provider
    redeems. The provider collects inside the delay and the withdrawal gets only what is left.
    Vulnerable version: move thawing money out of the lane at `thaw` (or let `withdrawThawed`
    pay the announced amount regardless of collections)."""
    m, e = settle.m, settle.escrow
    settle.fund_lane("client", {"provider": 10 * USD})
    v = settle.voucher("client", "provider", 8 * USD)
    m.send("client", e.functions.thaw(m.addr("provider"), 10 * USD))
    m.clock.advance(settle.thaw_delay - 1)
    rcpt = settle.collect("provider", [v])
    assert m.event(rcpt, "Collected")["amount"] == 8 * USD
    m.clock.advance(1)
    before = m.usd("client")
    rcpt = m.send("client", e.functions.withdrawThawed(m.addr("provider")))
    assert m.event(rcpt, "ThawWithdrawn")["amount"] == 2 * USD
    assert m.usd("client") == before + 2 * USD
    assert settle.lane("client", "provider").balance == 0
    assert m.usd(e.address) == 0


def test_nothing_is_collected_from_an_empty_lane(settle: Settle) -> None:
    with reverts("NothingCollected"):
        settle.collect("provider", [settle.voucher("client", "provider", USD)])


def test_three_receipts_aggregate_into_one_voucher_that_the_contract_redeems(settle: Settle) -> None:
    m, e = settle.m, settle.escrow
    settle.fund_lane("client", {"provider": 10 * USD})
    settle.authorize("client", "gateway")
    receipts = [settle.payment_receipt("client", "provider", i, (i + 1) * 1000) for i in range(3)]
    sigs = [sign_payment_receipt(signer_key("gateway"), r, settle.chain_id, e.address) for r in receipts]
    for r, s in zip(receipts, sigs, strict=True):
        signer = recover_payment_receipt(r, s, settle.chain_id, e.address)
        assert e.functions.isValidSigner(m.addr("client"), signer).call() is True
        assert e.functions.hashPaymentReceipt(r.as_tuple()).call() == payment_receipt_digest(
            r, settle.chain_id, e.address)
    v = aggregate(receipts)
    assert v.cumulative_value == 6000
    assert e.functions.hashVoucher(v.as_tuple()).call() == voucher_digest(v, settle.chain_id, e.address)
    rcpt = settle.collect("provider", [sign_voucher(signer_key("gateway"), v, settle.chain_id, e.address)])
    assert m.event(rcpt, "Collected")["amount"] == 6000
    more = aggregate([settle.payment_receipt("client", "provider", 3, 500)], previous=v)
    assert more.cumulative_value == 6500
    rcpt = settle.collect("provider", [sign_voucher(signer_key("gateway"), more, settle.chain_id, e.address)])
    assert m.event(rcpt, "Collected")["amount"] == 500


def test_aggregation_refuses_mixed_lanes_and_duplicate_receipts(settle: Settle) -> None:
    a = settle.payment_receipt("client", "provider", 1, 10)
    with pytest.raises(SettlementError):
        aggregate([a, settle.payment_receipt("client2", "provider", 2, 10)])
    with pytest.raises(SettlementError):
        aggregate([a, a])
    with pytest.raises(SettlementError):
        aggregate([])
