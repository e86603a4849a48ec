"""JobMarket's provider path and settlement: claimJob, submitReceipt, finalize, refund, withdraw."""

from __future__ import annotations

from dataclasses import replace

from contract_kit import (
    BPS,
    HST,
    OUTPUT,
    USD,
    Market,
    reverts,
)

from contracts.types import Status

# ---------------------------------------------------------------- claimJob


def test_claim_locks_collateral_and_emits_job_claimed(market: Market) -> None:
    p = market.post()
    step = market.claim(p.job_id, p.job)
    collateral = market.params.claim_collateral + USD * market.params.collateral_per_payment_wei
    expiry = min(market.clock.now() + market.params.claim_timeout, p.job.deadline)
    assert market.event(step.rcpt, "JobClaimed") == {
        "jobId": p.job_id, "provider": market.addr("provider"), "collateral": collateral, "claimExpiry": expiry,
    }
    assert step.job == p.job.with_(provider=market.addr("provider"), collateral=collateral,
                                   claim_expiry=expiry, status=Status.CLAIMED)
    assert market.status(p.job_id) == Status.CLAIMED
    assert market.provider_info("provider")["locked"] == collateral
    assert market.h.job(p.job_id) == step.job


def test_claim_reverts_for_an_unknown_job_id(market: Market) -> None:
    p = market.post()
    with reverts("UnknownJob", 0):
        market.claim(0, p.job)
    with reverts("UnknownJob", p.job_id + 1):
        market.claim(p.job_id + 1, p.job)


def test_claim_reverts_when_the_record_does_not_match_the_commitment(market: Market) -> None:
    p = market.post(max_payment=USD)
    with reverts("JobMismatch", p.job_id):
        market.claim(p.job_id, p.job.with_(max_payment=2 * USD))


def test_claim_reverts_when_the_job_is_already_claimed(market: Market) -> None:
    p = market.post()
    claimed = market.claim(p.job_id, p.job).job
    with reverts("WrongStatus", p.job_id, Status.CLAIMED):
        market.claim(p.job_id, claimed, "verifier")
    with reverts("JobMismatch", p.job_id):  # the stale Posted record no longer matches
        market.claim(p.job_id, p.job, "verifier")


def test_claim_reverts_at_the_deadline_and_works_one_second_before(market: Market) -> None:
    p = market.post(ttl=100)
    snap = market.clock.snapshot()
    market.clock.warp(p.job.deadline)
    with reverts("DeadlinePassed", p.job.deadline):
        market.claim(p.job_id, p.job)
    market.clock.revert(snap)
    market.clock.warp(p.job.deadline - 1)
    assert market.claim(p.job_id, p.job).job.status == Status.CLAIMED


def test_claim_reverts_when_the_caller_is_not_a_registered_provider(market: Market) -> None:
    p = market.post()
    with reverts("ModelNotServed", market.addr("client2"), market.model_id):
        market.claim(p.job_id, p.job, "client2")


def test_claim_reverts_when_the_provider_is_below_the_minimum_stake(market: Market) -> None:
    market.send("provider", market.staking.functions.requestUnbond(market.stake0 - 99 * HST))
    p = market.post()
    with reverts("ProviderNotActive", market.addr("provider")):
        market.claim(p.job_id, p.job)


def test_claim_reverts_when_the_provider_does_not_serve_the_model(market: Market) -> None:
    market.send("provider", market.staking.functions.setServing(market.model_id, False))
    p = market.post()
    with reverts("ModelNotServed", market.addr("provider"), market.model_id):
        market.claim(p.job_id, p.job)


def test_claim_reverts_when_free_stake_is_below_the_collateral(market: Market) -> None:
    market.set_params(replace(market.params, claim_collateral=market.stake0 + 1 - market.collateral(USD)
                              + market.params.claim_collateral))
    p = market.post()
    with reverts("InsufficientFreeStake", market.addr("provider"), market.stake0 + 1, market.stake0):
        market.claim(p.job_id, p.job)


# ---------------------------------------------------------------- submitReceipt


def test_receipt_records_payment_and_opens_the_challenge_window(market: Market) -> None:
    p = market.post(max_payment=USD)
    claimed = market.claim(p.job_id, p.job).job
    rec = market.receipt(p.job_id, units=1234)
    step = market.submit(claimed, rec, market.sign_receipt("provider", rec))
    now = market.clock.now()
    assert market.event(step.rcpt, "ReceiptSubmitted") == {
        "jobId": p.job_id, "provider": market.addr("provider"), "outputHash": OUTPUT, "units": 1234,
        "modelHash": market.model_id, "runtimeHash": market.runtime_hash, "gpuClass": rec.gpu_class,
        "payment": 1234 * market.price, "challengeEnd": now + market.params.challenge_window,
    }
    assert step.job.status == Status.DELIVERED
    assert step.job.payment == 1234 * market.price
    assert market.h.job(p.job_id) == step.job


def test_receipt_payment_is_capped_at_max_payment(market: Market) -> None:
    p = market.post(max_payment=500)
    claimed = market.claim(p.job_id, p.job).job
    step = market.deliver(p.job_id, claimed, units=10**12)
    assert step.job.payment == 500


def test_receipt_reverts_for_a_job_that_was_never_claimed(market: Market) -> None:
    p = market.post()
    rec = market.receipt(p.job_id)
    with reverts("WrongStatus", p.job_id, Status.POSTED):
        market.submit(p.job, rec, market.sign_receipt("provider", rec))


def test_receipt_is_accepted_at_the_claim_expiry_and_reverts_after_it(market: Market) -> None:
    p = market.post(ttl=100)
    claimed = market.claim(p.job_id, p.job).job
    assert claimed.claim_expiry == p.job.deadline  # the deadline comes before the claim timeout
    rec = market.receipt(p.job_id)
    sig = market.sign_receipt("provider", rec)
    snap = market.clock.snapshot()
    market.clock.warp(claimed.claim_expiry + 1)
    with reverts("ClaimExpired", p.job_id, claimed.claim_expiry):
        market.submit(claimed, rec, sig)
    market.clock.revert(snap)
    market.clock.warp(claimed.claim_expiry)
    assert market.submit(claimed, rec, sig).job.status == Status.DELIVERED


def test_a_claim_expires_after_the_claim_timeout_before_a_later_deadline(market: Market) -> None:
    p = market.post(ttl=10 * market.params.claim_timeout)
    claimed = market.claim(p.job_id, p.job).job
    assert claimed.claim_expiry == market.clock.now() + market.params.claim_timeout < p.job.deadline


def test_receipt_reverts_when_it_names_another_model(market: Market) -> None:
    p = market.post()
    claimed = market.claim(p.job_id, p.job).job
    other = b"\x42" * 32
    rec = market.receipt(p.job_id, model_hash=other)
    with reverts("ModelMismatch", p.job_id, market.model_id, other):
        market.submit(claimed, rec, market.sign_receipt("provider", rec))


def test_receipt_reverts_on_zero_units(market: Market) -> None:
    p = market.post()
    claimed = market.claim(p.job_id, p.job).job
    rec = market.receipt(p.job_id, units=0)
    with reverts("ZeroUnits", p.job_id):
        market.submit(claimed, rec, market.sign_receipt("provider", rec))


def test_receipt_reverts_when_signed_by_anyone_but_the_job_provider(market: Market) -> None:
    p = market.post()
    claimed = market.claim(p.job_id, p.job).job
    rec = market.receipt(p.job_id)
    with reverts("InvalidSignature"):
        market.submit(claimed, rec, market.sign_receipt("verifier", rec))


# ---------------------------------------------------------------- finalize


def test_finalize_credits_provider_treasury_and_client_and_releases_collateral(market: Market) -> None:
    job_id, job = market.delivered(units=4000, max_payment=USD)
    payment = market.due(4000, USD)
    assert 0 < payment < USD
    market.clock.warp(job.challenge_end)
    step = market.finalize(job_id, job)
    fee = market.fee(payment)
    assert market.event(step.rcpt, "JobFinalized") == {
        "jobId": job_id, "provider": market.addr("provider"), "client": market.addr("client"),
        "providerAmount": payment - fee, "fee": fee, "clientRefund": USD - payment,
        "treasury": market.addr("treasury"),
    }
    assert market.credit("provider") == payment - fee
    assert market.credit("treasury") == fee
    assert market.credit("client") == USD - payment
    assert market.provider_info("provider")["locked"] == 0
    assert market.status(job_id) == Status.FINALIZED
    assert step.job.status == Status.FINALIZED


def test_finalize_reverts_while_the_challenge_window_is_open(market: Market) -> None:
    job_id, job = market.delivered()
    market.clock.warp(job.challenge_end - 1)
    with reverts("ChallengeWindowOpen", job_id, job.challenge_end):
        market.finalize(job_id, job)


def test_finalize_reverts_on_a_finalized_job(market: Market) -> None:
    job_id, job = market.delivered()
    market.clock.warp(job.challenge_end)
    done = market.finalize(job_id, job).job
    with reverts("WrongStatus", job_id, Status.FINALIZED):
        market.finalize(job_id, job)
    with reverts("WrongStatus", job_id, Status.FINALIZED):
        market.refund(job_id, done)


def test_finalize_reverts_for_a_job_not_yet_delivered(market: Market) -> None:
    p = market.post()
    claimed = market.claim(p.job_id, p.job).job
    with reverts("WrongStatus", p.job_id, Status.CLAIMED):
        market.finalize(p.job_id, claimed)


# ---------------------------------------------------------------- refund


def test_refund_of_an_unclaimed_job_returns_the_escrow_without_penalty(market: Market) -> None:
    p = market.post(max_payment=3 * USD, ttl=100)
    market.clock.warp(p.job.deadline + 1)
    step = market.refund(p.job_id, p.job)
    assert market.event(step.rcpt, "JobRefunded") == {
        "jobId": p.job_id, "client": market.addr("client"), "amount": 3 * USD, "penalty": 0,
    }
    assert market.events(step.rcpt, "Slashed") == []
    assert market.credit("client") == 3 * USD
    assert market.status(p.job_id) == Status.REFUNDED


def test_refund_of_a_claimed_job_slashes_the_penalty_to_the_client(market: Market) -> None:
    p = market.post(ttl=100)
    claimed = market.claim(p.job_id, p.job).job
    hst_before = market.hst("client")
    market.clock.warp(p.job.deadline + 1)
    step = market.refund(p.job_id, claimed)
    penalty = claimed.collateral * market.params.refund_penalty_bps // BPS
    assert market.event(step.rcpt, "JobRefunded")["penalty"] == penalty
    assert market.event(step.rcpt, "Slashed") == {
        "provider": market.addr("provider"), "recipient": market.addr("client"), "amount": penalty,
        "fromStaked": penalty, "jailedUntil": 0, "strikes": 1,
    }
    info = market.provider_info("provider")
    assert (info["staked"], info["locked"], info["jailed_until"]) == (market.stake0 - penalty, 0, 0)
    assert market.hst("client") == hst_before + penalty
    assert market.credit("client") == USD


def test_refund_reverts_until_the_deadline_has_passed(market: Market) -> None:
    p = market.post(ttl=100)
    market.clock.warp(p.job.deadline)
    with reverts("DeadlineNotPassed", p.job_id, p.job.deadline):
        market.refund(p.job_id, p.job)


def test_refund_reverts_for_a_delivered_job(market: Market) -> None:
    job_id, job = market.delivered()
    market.clock.warp(job.deadline + 1)
    with reverts("WrongStatus", job_id, Status.DELIVERED):
        market.refund(job_id, job)


def test_refund_reverts_on_a_refunded_job(market: Market) -> None:
    p = market.post(ttl=100)
    market.clock.warp(p.job.deadline + 1)
    refunded = market.refund(p.job_id, p.job).job
    with reverts("WrongStatus", p.job_id, Status.REFUNDED):
        market.refund(p.job_id, refunded)
    with reverts("JobMismatch", p.job_id):  # replaying the record it was refunded with
        market.refund(p.job_id, p.job)


# ---------------------------------------------------------------- withdraw


def test_withdraw_pays_the_whole_credit_to_the_given_address(market: Market) -> None:
    p = market.post(max_payment=2 * USD, ttl=100)
    market.clock.warp(p.job.deadline + 1)
    market.refund(p.job_id, p.job)
    before = market.usd("spare")
    rcpt = market.withdraw("client", to=market.addr("spare"))
    assert market.event(rcpt, "Withdrawn") == {
        "account": market.addr("client"), "to": market.addr("spare"), "amount": 2 * USD,
    }
    assert market.usd("spare") == before + 2 * USD
    assert market.credit("client") == 0


def test_withdraw_reverts_when_nothing_is_credited(market: Market) -> None:
    with reverts("NothingToWithdraw", market.addr("client")):
        market.withdraw("client")
