"""JobMarket's posting path: postJob and postJobWithSig (EIP-712 JobRequest, EIP-2612 permit)."""

from __future__ import annotations

from dataclasses import replace

from contract_kit import INPUT, USD, Market, reverts

from contracts.types import Job, Permit, Status


def test_post_job_escrows_max_payment_and_emits_job_posted(market: Market) -> None:
    client_before, market_before = market.usd("client"), market.usd(market.market.address)
    p = market.post(max_payment=3 * USD, ttl=3600)
    deadline = market.clock.now() + 3600
    assert market.event(p.rcpt, "JobPosted") == {
        "jobId": p.job_id, "client": market.addr("client"), "modelId": market.model_id,
        "inputHash": INPUT, "maxPayment": 3 * USD, "pricePerUnit": market.price, "deadline": deadline,
        "relayer": market.addr("client"), "treasury": market.params.treasury, "feeBps": market.params.fee_bps,
        "challengeWindow": market.params.challenge_window,
    }
    assert p.job_id == market.market.functions.jobCount().call() == 1
    assert p.job == Job(
        client=market.addr("client"), provider="0x" + "00" * 20, model_id=market.model_id,
        input_hash=INPUT, max_payment=3 * USD, price_per_unit=market.price, payment=0, collateral=0,
        deadline=deadline, challenge_end=market.params.challenge_window, status=Status.POSTED,
        output_hash=b"\x00" * 32, treasury=market.params.treasury, fee_bps=market.params.fee_bps,
    )
    assert market.status(p.job_id) == Status.POSTED
    assert market.h.job(p.job_id) == p.job
    assert market.usd("client") == client_before - 3 * USD
    assert market.usd(market.market.address) == market_before + 3 * USD
    assert market.credit("client") == 0


def test_post_job_commits_to_the_full_record(market: Market) -> None:
    p = market.post()
    commitment = market.market.functions.hashJob(p.job.as_tuple()).call()
    assert commitment[-1] == int(Status.POSTED)
    assert market.market.functions.hashJob(p.job.with_(max_payment=2).as_tuple()).call() != commitment


def test_post_job_reverts_on_zero_payment(market: Market) -> None:
    with reverts("ZeroPayment"):
        market.post(max_payment=0)


def test_post_job_reverts_unless_the_deadline_is_in_the_future(market: Market) -> None:
    now = market.clock.now()
    with reverts("DeadlinePassed", now):
        market.post(ttl=0)
    assert market.post(ttl=1).job.deadline == now + 1


def test_post_job_reverts_for_an_unknown_model(market: Market) -> None:
    market.approve("client", USD)
    unknown = b"\x99" * 32
    with reverts("UnknownModel", unknown):
        market.send("client", market.market.functions.postJob(unknown, INPUT, USD, market.clock.now() + 60))


def test_post_job_reverts_for_a_deactivated_model(market: Market) -> None:
    market.send("deployer", market.h.registry.functions.updateModel(
        market.model_id, market.runtime_hash, market.price, False))
    with reverts("UnknownModel", market.model_id):
        market.post()


def test_post_job_reverts_without_an_allowance(market: Market) -> None:
    with reverts("ERC20InsufficientAllowance", market.market.address, 0, USD):
        market.post(max_payment=USD, approve=False)


def test_post_job_with_sig_posts_for_the_signer_and_pays_from_its_wallet(market: Market) -> None:
    market.approve("client", USD)
    req = market.job_request("client", max_payment=USD)
    before = market.usd("client"), market.usd("relayer")
    p = market.post_with_sig(req, market.sign_request("client", req))
    ev = market.event(p.rcpt, "JobPosted")
    assert (ev["client"], ev["relayer"], ev["maxPayment"], ev["deadline"]) == (
        market.addr("client"), market.addr("relayer"), USD, req.deadline)
    assert p.job.client == market.addr("client")
    assert (market.usd("client"), market.usd("relayer")) == (before[0] - USD, before[1])
    assert market.market.functions.nonces(market.addr("client")).call() == 1


def test_post_job_with_sig_and_permit_needs_no_prior_approval(market: Market) -> None:
    client = market.addr("client")
    assert market.h.usd.functions.allowance(client, market.market.address).call() == 0
    req = market.job_request("client", max_payment=2 * USD)
    permit = market.permit("client", 2 * USD)
    p = market.post_with_sig(req, market.sign_request("client", req), permit)
    assert market.event(p.rcpt, "JobPosted")["maxPayment"] == 2 * USD
    assert market.h.usd.functions.nonces(client).call() == 1  # the permit was used
    assert market.h.usd.functions.allowance(client, market.market.address).call() == 0


def test_post_job_with_sig_tolerates_a_front_run_permit(market: Market) -> None:
    """Someone submits the permit from the mempool first: the allowance is in place, the
    market's own `permit` call fails on the used nonce, and the job is still posted."""
    client = market.addr("client")
    req = market.job_request("client", max_payment=USD)
    permit = market.permit("client", USD)
    market.send("spare", market.h.usd.functions.permit(
        client, market.market.address, permit.value, permit.deadline, permit.v, permit.r, permit.s))
    p = market.post_with_sig(req, market.sign_request("client", req), permit)
    assert p.job.max_payment == USD


def test_post_job_with_sig_reverts_when_the_permit_is_invalid_and_nothing_is_approved(market: Market) -> None:
    req = market.job_request("client", max_payment=USD)
    forged = market.permit("client2", USD)  # signed by another key
    with reverts("ERC20InsufficientAllowance", market.market.address, 0, USD):
        market.post_with_sig(req, market.sign_request("client", req), forged)


def test_post_job_with_sig_reverts_on_a_signature_by_another_key(market: Market) -> None:
    market.approve("client", USD)
    req = market.job_request("client")
    with reverts("InvalidSignature"):
        market.post_with_sig(req, market.sign_request("client2", req))


def test_post_job_with_sig_reverts_when_the_relayer_alters_the_request(market: Market) -> None:
    market.approve("client", 10 * USD)
    req = market.job_request("client", max_payment=USD)
    sig = market.sign_request("client", req)
    for altered in (replace(req, max_payment=10 * USD), replace(req, input_hash=b"\x01" * 32),
                    replace(req, deadline=req.deadline + 1)):
        with reverts("InvalidSignature"):
            market.post_with_sig(altered, sig)


def test_post_job_with_sig_reverts_when_a_request_is_replayed(market: Market) -> None:
    market.approve("client", 2 * USD)
    req = market.job_request("client")
    sig = market.sign_request("client", req)
    market.post_with_sig(req, sig)
    with reverts("InvalidAccountNonce", market.addr("client"), 1):
        market.post_with_sig(req, sig)


def test_post_job_with_sig_reverts_on_an_out_of_order_nonce(market: Market) -> None:
    market.approve("client", USD)
    req = market.job_request("client", nonce=5)
    with reverts("InvalidAccountNonce", market.addr("client"), 0):
        market.post_with_sig(req, market.sign_request("client", req))


def test_post_job_with_sig_reverts_without_allowance_or_permit(market: Market) -> None:
    req = market.job_request("client", max_payment=USD)
    with reverts("ERC20InsufficientAllowance", market.market.address, 0, USD):
        market.post_with_sig(req, market.sign_request("client", req), Permit())
