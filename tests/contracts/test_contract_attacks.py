"""One test per attack class. Each docstring names the vulnerable version the test would fail
on: the test is only worth having if it goes red when the defence is taken out."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from contract_kit import (
    BPS,
    HST,
    USD,
    Market,
    deploy,
    deploy_market,
    reverts,
    selector,
    stake,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from web3.contract import Contract

from contracts.bindings import Hearth
from contracts.types import Permit, Status
from deploy.devnet import Anvil, deploy_contracts, free_port, register_model

# ---------------------------------------------------------------- reentrancy on payout


@pytest.fixture
def hooked(market: Market) -> tuple[Market, Contract, Contract]:
    """A market paying in CallbackToken, a staked provider on it, an honest client's 5-token
    escrow in it, and the attacker contract (owned by `client2`) holding a 1-token credit."""
    token = deploy(market, "CallbackToken")
    m = deploy_market(market, token)
    stake(m, "provider", 200 * HST)
    for role in ("client", "verifier"):
        market.send(role, token.functions.mint(market.addr(role), 100 * USD))
    m.post("client", max_payment=5 * USD)
    attacker = deploy(market, "Reenterer", role="client2")
    market.send("client2", token.functions.mint(attacker.address, USD))
    as_attacker(m, attacker, token, "approve", m.market.address, USD)
    deadline = m.clock.now() + 100
    as_attacker(m, attacker, m.market, "postJob", m.model_id, b"\x01" * 32, USD, deadline)
    job_id = m.market.functions.jobCount().call()
    m.clock.warp(deadline + 1)
    m.refund(job_id, m.h.job(job_id))
    assert m.credit(attacker.address) == USD
    as_attacker(m, attacker, token, "setHook", True)
    return m, token, attacker


def as_attacker(m: Market, attacker: Contract, target: Contract, fn: str, *args: Any) -> Any:
    data = target.encode_abi(fn, args=list(args))
    return m.send("client2", attacker.functions.execute(target.address, data))


def test_withdraw_cannot_be_reentered_from_a_token_callback_to_pay_twice(
    hooked: tuple[Market, Contract, Contract],
) -> None:
    """The attacker's `withdraw` payout hands it control (token callback) and it calls
    `withdraw` again. Vulnerable version: `withdraw` without `nonReentrant` that pays before it
    zeroes the balance; the inner call then pays the credit a second time out of the honest
    client's escrow. With only the zeroing (no guard) the inner call fails differently and the
    assertion on the guard's error catches that the guard is gone."""
    m, token, attacker = hooked
    reentry = m.market.encode_abi("withdraw", args=[attacker.address])
    m.send("client2", attacker.functions.arm(m.market.address, reentry))
    rcpt = as_attacker(m, attacker, m.market, "withdraw", attacker.address)
    reentered, succeeded, error = attacker.functions.outcome().call()
    assert (reentered, succeeded, error) == (True, False, selector("ReentrancyGuardReentrantCall()"))
    assert [e["amount"] for e in m.events(rcpt, "Withdrawn")] == [USD]
    assert token.functions.balanceOf(attacker.address).call() == USD
    assert token.functions.balanceOf(m.market.address).call() == 5 * USD  # the honest escrow
    assert m.credit(attacker.address) == 0


def test_finalize_cannot_be_reentered_from_a_payout_callback(hooked: tuple[Market, Contract, Contract]) -> None:
    """During its payout the attacker calls `finalize` on a job whose window has passed.
    Every function that moves value shares one lock, so no settlement runs while a payout is
    on the stack (the state a callback sees mid-payout is never one another payout relies on).
    Vulnerable version: `finalize` without `nonReentrant`; the inner call then succeeds."""
    m, _, attacker = hooked
    job_id, job = m.delivered(units=1000, max_payment=2 * USD)
    m.clock.warp(job.challenge_end)
    reentry = m.market.encode_abi("finalize", args=[job_id, job.as_tuple()])
    m.send("client2", attacker.functions.arm(m.market.address, reentry))
    as_attacker(m, attacker, m.market, "withdraw", attacker.address)
    assert attacker.functions.outcome().call() == [True, False, selector("ReentrancyGuardReentrantCall()")]
    assert m.status(job_id) == Status.DELIVERED
    assert m.finalize(job_id, job).job.status == Status.FINALIZED  # and it still settles normally


# ---------------------------------------------------------------- signature replay


def test_a_job_request_signed_for_one_chain_is_rejected_on_another(market: Market, devnet: Any) -> None:
    """Same mnemonic, same deployer nonces: the second chain's market has the very same address,
    so only the chain id tells the two domains apart. Vulnerable version: an EIP-712 domain
    without `chainId` (or one cached at deployment and not rebuilt on a fork): the signature
    for chain A posts a job, and spends the client's money, on chain B."""
    other_chain = market.h.chain_id + 1
    anvil = Anvil(port=free_port(), chain_id=other_chain, mnemonic=devnet.anvil.mnemonic).start()
    try:
        manifest = deploy_contracts(anvil.rpc_url, market.key("deployer"), market.addr("treasury"))
        assert manifest.address("JobMarket") == market.market.address
        h = Hearth(manifest)
        register_model(h, market.key("deployer"), market.model_id, market.runtime_hash, market.price, "MiniLM")
        h.sender(market.key("deployer")).send(h.usd.functions.mint(market.addr("client"), 10 * USD))
        h.approve_usd(market.key("client"), 10 * USD)
        deadline = max(market.clock.now(), int(h.w3.eth.get_block("latest")["timestamp"])) + 3600
        req = replace(market.job_request("client"), deadline=deadline)
        assert h.market.functions.nonces(req.client).call() == req.nonce == 0
        for_a = market.sign_request("client", req)
        with reverts("InvalidSignature"):
            h.post_job_with_sig(market.key("relayer"), req, for_a)
        for_b = market.sign_request("client", req, chain_id=other_chain)
        job_id, _ = h.post_job_with_sig(market.key("relayer"), req, for_b)
        assert h.status(job_id) == Status.POSTED
        market.approve("client", USD)
        assert market.post_with_sig(req, for_a).job.status == Status.POSTED  # valid where it was signed
    finally:
        anvil.stop()


def test_a_job_request_signed_for_one_market_is_rejected_by_another(market: Market) -> None:
    """A second market on the same chain (same token, registry and staking). Vulnerable
    version: a domain without `verifyingContract`, or a digest without the domain at all:
    a request signed for market A is replayable on market B."""
    b = deploy(market, "JobMarket", market.addr("deployer"), market.h.usd.address, market.staking.address,
               market.h.registry.address, market.params.as_tuple())
    market.send("client", market.h.usd.functions.approve(b.address, USD))
    market.approve("client", USD)
    req = market.job_request("client")
    for_a = market.sign_request("client", req)
    permit = Permit().as_tuple()
    with reverts("InvalidSignature"):
        market.send("relayer", b.functions.postJobWithSig(req.as_tuple(), for_a, permit))
    for_b = market.sign_request("client", req, market=b.address)
    market.send("relayer", b.functions.postJobWithSig(req.as_tuple(), for_b, permit))
    assert b.functions.jobCount().call() == 1
    assert market.post_with_sig(req, for_a).job.status == Status.POSTED


# ---------------------------------------------------------------- front-running a receipt


def test_a_copied_receipt_still_pays_the_provider_and_a_forged_one_is_rejected(market: Market) -> None:
    """A third party copies the provider's signed receipt from the mempool and submits it first.
    Vulnerable version: paying `msg.sender` (or whoever submits) instead of `job.provider`, or
    checking the signature against the submitter; the copier would collect the payment."""
    p = market.post(max_payment=USD)
    claimed = market.claim(p.job_id, p.job).job
    rec = market.receipt(p.job_id, units=1000)
    sig = market.sign_receipt("provider", rec)
    with reverts("InvalidSignature"):  # the copier signs the same receipt itself
        market.submit(claimed, rec, market.sign_receipt("cheater", rec), relayer="cheater")
    with reverts("InvalidSignature"):  # or edits the signed one
        market.submit(claimed, replace(rec, units=999_999), sig, relayer="cheater")
    other = market.post()
    other_claimed = market.claim(other.job_id, other.job).job
    with reverts("InvalidSignature"):  # or replays it on another job of the same provider
        market.submit(other_claimed, replace(rec, job_id=other.job_id), sig, relayer="cheater")
    step = market.submit(claimed, rec, sig, relayer="cheater")
    assert market.event(step.rcpt, "ReceiptSubmitted")["provider"] == market.addr("provider")
    market.clock.warp(step.job.challenge_end)
    market.finalize(p.job_id, step.job)
    payment = market.due(1000, USD)
    assert market.credit("provider") == payment - market.fee(payment)
    assert market.credit("cheater") == 0


# ---------------------------------------------------------------- withdrawing before paying


def test_a_client_cannot_withdraw_the_escrow_of_an_open_job(market: Market) -> None:
    """Vulnerable version: escrow counted as the client's withdrawable balance (a deposit
    without a lock), or a refund that does not wait for the deadline; the client would take
    its money back while the provider works."""
    p = market.post(max_payment=3 * USD, ttl=1000)
    escrow = market.usd(market.market.address)
    with reverts("NothingToWithdraw", market.addr("client")):
        market.withdraw("client")
    with reverts("DeadlineNotPassed", p.job_id, p.job.deadline):
        market.refund(p.job_id, p.job, role="client")
    claimed = market.claim(p.job_id, p.job).job
    delivered = market.deliver(p.job_id, claimed).job
    market.clock.warp(p.job.deadline + 1)
    with reverts("WrongStatus", p.job_id, Status.DELIVERED):  # delivered in time: no refund
        market.refund(p.job_id, delivered, role="client")
    assert market.usd(market.market.address) == escrow


# ---------------------------------------------------------------- griefing by never delivering


def test_a_claimer_that_never_delivers_loses_its_penalty_to_the_client(market: Market) -> None:
    """A provider claims (locking the job away from everyone else) and never delivers.
    Vulnerable version: a refund without the penalty, making griefing free."""
    p = market.post(max_payment=USD, ttl=600)
    claimed = market.claim(p.job_id, p.job).job
    rec = market.receipt(p.job_id)
    market.clock.warp(p.job.deadline + 1)
    with reverts("ClaimExpired", p.job_id, claimed.claim_expiry):  # too late to deliver now
        market.submit(claimed, rec, market.sign_receipt("provider", rec))
    hst_before = market.hst("client")
    step = market.refund(p.job_id, claimed, role="spare")
    penalty = claimed.collateral * market.params.refund_penalty_bps // BPS
    assert penalty > 0
    assert market.event(step.rcpt, "JobRefunded")["penalty"] == penalty
    assert market.hst("client") == hst_before + penalty
    assert market.credit("client") == USD
    info = market.provider_info("provider")
    assert (info["staked"], info["locked"]) == (market.stake0 - penalty, 0)


# ---------------------------------------------------------------- slash vs. withdraw


def test_a_provider_cannot_unbond_collateral_that_backs_an_open_job(market: Market) -> None:
    """Vulnerable version: unbonding that ignores `locked`; a provider would claim, unbond
    everything and walk away from the penalty."""
    p = market.post()
    market.claim(p.job_id, p.job)
    free = market.stake0 - market.collateral(USD)
    with reverts("InsufficientFreeStake", market.addr("provider"), market.stake0, free):
        market.send("provider", market.staking.functions.requestUnbond(market.stake0))


# ---------------------------------------------------------------- fee-split rounding


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    max_payment=st.integers(1, 10**15),
    price=st.integers(1, 10**9),
    units=st.integers(1, 2**40),
    fee_bps=st.one_of(st.sampled_from([0, 1, 9_999, 10_000]), st.integers(0, BPS)),
)
def test_fee_split_adds_up_to_max_payment_exactly(
    market: Market, max_payment: int, price: int, units: int, fee_bps: int,
) -> None:
    """Vulnerable version: provider and fee rounded separately (e.g. provider =
    payment * (10000 - bps) / 10000): a wei is created or lost, and the escrow no longer
    matches the credits."""
    snap = market.clock.snapshot()
    try:
        market.set_params(replace(market.params, fee_bps=fee_bps, collateral_per_payment_wei=0))
        update = market.h.registry.functions.updateModel(market.model_id, market.runtime_hash, price, True)
        market.send("deployer", update)
        market.send("deployer", market.h.usd.functions.mint(market.addr("client"), max_payment))
        p = market.post(max_payment=max_payment)
        claimed = market.claim(p.job_id, p.job).job
        delivered = market.deliver(p.job_id, claimed, units=units).job
        market.clock.warp(delivered.challenge_end)
        ev = market.event(market.finalize(p.job_id, delivered).rcpt, "JobFinalized")
        payment = min(max_payment, units * price)
        assert delivered.payment == payment
        assert ev["fee"] == payment * fee_bps // BPS
        assert ev["providerAmount"] + ev["fee"] == payment
        assert ev["providerAmount"] + ev["fee"] + ev["clientRefund"] == max_payment
        assert market.credit("provider") + market.credit("treasury") + market.credit("client") == max_payment
    finally:
        market.clock.revert(snap)
        for s in market.h._senders.values():
            s.resync()


# ---------------------------------------------------------------- weird ERC-20s


def test_a_fee_on_transfer_payment_token_is_refused_at_posting(market: Market) -> None:
    """The token delivers 1% less than sent. Vulnerable version: crediting the escrow with
    the amount sent instead of the amount received; the market would owe more than it holds
    and the last payee could not be paid."""
    token = deploy(market, "FeeOnTransferToken")
    m = deploy_market(market, token)
    market.send("client", token.functions.mint(market.addr("client"), 10 * USD))
    with reverts("TokenTransferShortfall", USD, USD - USD // 100):
        m.post(max_payment=USD)


def test_a_fee_on_transfer_stake_token_is_refused_at_staking(market: Market) -> None:
    """Vulnerable version: `staked += amount` regardless of what arrived; stake would be
    backed by fewer tokens than recorded and the last withdrawal would fail."""
    token = deploy(market, "FeeOnTransferToken")
    m = deploy_market(market, market.h.usd, stake=token)
    market.send("provider", token.functions.mint(market.addr("provider"), 200 * HST))
    with reverts("InsufficientFreeStake", market.addr("provider"), 200 * HST, 198 * HST):
        stake(m, "provider", 200 * HST)


def test_a_token_without_return_values_works_through_safe_erc20(market: Market) -> None:
    """Payment and stake in a USDT-style token whose transfer functions return nothing.
    Vulnerable version: `require(token.transfer(...))` through the plain IERC20 interface,
    which reverts decoding the missing return value: nothing could be posted or paid out."""
    token = deploy(market, "NoReturnToken")
    approve = token.encode_abi("approve", args=[market.addr("client"), 1])
    assert market.w3.eth.call({"to": token.address, "data": approve}) == b""  # really returns nothing
    m = deploy_market(market, token, stake=token)
    for role in ("client", "provider"):
        market.send(role, token.functions.mint(market.addr(role), 1000 * HST))
    stake(m, "provider", 200 * HST)
    job_id, job = m.delivered(units=1000, max_payment=USD)
    m.clock.warp(job.challenge_end)
    m.finalize(job_id, job)
    lapsed = m.post(max_payment=USD, ttl=10)
    claimed = m.claim(lapsed.job_id, lapsed.job).job
    m.clock.warp(lapsed.job.deadline + 1)
    m.refund(lapsed.job_id, claimed)  # the penalty goes out through Staking's safeTransfer
    payment = m.due(1000, USD)
    before = {r: token.functions.balanceOf(m.addr(r)).call() for r in ("client", "provider", "treasury")}
    for role in ("client", "provider", "treasury"):
        m.withdraw(role)
    after = {r: token.functions.balanceOf(m.addr(r)).call() for r in ("client", "provider", "treasury")}
    assert after["provider"] - before["provider"] == payment - m.fee(payment)
    assert after["treasury"] - before["treasury"] == m.fee(payment)
    assert after["client"] - before["client"] == (USD - payment) + USD
    assert token.functions.balanceOf(m.market.address).call() == 0
    m.send("provider", m.staking.functions.requestUnbond(100 * HST))
    m.clock.advance(market.unbonding_period)
    m.send("provider", m.staking.functions.withdraw())
    assert m.provider_info("provider")["unbonding"] == 0

