"""Governance: pause semantics, setParams, Ownable2Step on every contract, and the views."""

from __future__ import annotations

from dataclasses import replace

import pytest
from contract_kit import OUTPUT, USD, Market, reverts
from eth_abi import encode
from eth_utils import keccak

from contracts import eip712
from contracts.types import Status

# ---------------------------------------------------------------- pause


def test_pause_blocks_posting_only(market: Market) -> None:
    job_id, delivered = market.delivered()
    rcpt = market.send("deployer", market.market.functions.pause())
    assert market.event(rcpt, "Paused") == {"account": market.addr("deployer")}
    assert market.market.functions.paused().call()
    with reverts("EnforcedPause"):
        market.post()
    req = market.job_request("client")
    with reverts("EnforcedPause"):
        market.post_with_sig(req, market.sign_request("client", req))
    # Challenges stay open: a pause never lets a receipt through unchallenged.
    assert market.challenge(job_id, delivered).job.status == Status.CHALLENGED


def test_pause_lets_escrowed_jobs_be_claimed_delivered_settled_and_withdrawn(market: Market) -> None:
    to_claim = market.post()
    claimed = market.post()
    claimed_job = market.claim(claimed.job_id, claimed.job).job
    fin_id, fin_job = market.delivered(units=1000)
    lapsing = market.post(ttl=100)
    market.send("deployer", market.market.functions.pause())

    assert market.claim(to_claim.job_id, to_claim.job).job.status == Status.CLAIMED
    assert market.deliver(claimed.job_id, claimed_job).job.status == Status.DELIVERED
    market.clock.warp(fin_job.challenge_end)
    assert market.finalize(fin_id, fin_job).job.status == Status.FINALIZED
    assert market.refund(lapsing.job_id, lapsing.job).job.status == Status.REFUNDED
    for role in ("provider", "client", "treasury"):
        assert market.event(market.withdraw(role), "Withdrawn")["amount"] > 0


def test_pause_lets_an_open_dispute_be_voted_and_resolved(market: Market) -> None:
    job_id, job = market.delivered()
    job = market.challenge(job_id, job).job
    market.send("deployer", market.market.functions.pause())
    market.draw(job_id)
    # Whoever the seed seated votes: which members sit depends on the draw block's hash.
    market.vote(job_id, dict.fromkeys(set(market.seats(job_id)), OUTPUT))
    assert market.resolve(job_id, job).job.status == Status.DELIVERED


def test_unpause_reopens_posting(market: Market) -> None:
    market.send("deployer", market.market.functions.pause())
    rcpt = market.send("deployer", market.market.functions.unpause())
    assert market.event(rcpt, "Unpaused") == {"account": market.addr("deployer")}
    assert market.post().job.status == Status.POSTED


def test_pause_and_unpause_are_owner_only_and_not_repeatable(market: Market) -> None:
    with reverts("OwnableUnauthorizedAccount", market.addr("client")):
        market.send("client", market.market.functions.pause())
    with reverts("ExpectedPause"):
        market.send("deployer", market.market.functions.unpause())
    market.send("deployer", market.market.functions.pause())
    with reverts("EnforcedPause"):
        market.send("deployer", market.market.functions.pause())
    with reverts("OwnableUnauthorizedAccount", market.addr("client")):
        market.send("client", market.market.functions.unpause())


# ---------------------------------------------------------------- setParams


def test_proposed_params_take_effect_only_after_the_delay(market: Market) -> None:
    params = replace(market.params, treasury=market.addr("spare"), fee_bps=250, challenge_window=1200)
    rcpt = market.send("deployer", market.market.functions.proposeParams(params.as_tuple()))
    delay = int(market.market.functions.PARAMS_DELAY().call())
    effective = market.clock.now() + delay
    ev = market.event(rcpt, "ParamsProposed")
    assert (tuple(ev["params"].values()), ev["effectiveAt"]) == (params.as_tuple(), effective)
    assert market.market.functions.pendingParams().call()[1] == effective
    market.clock.warp(effective - 1)
    with reverts("ParamsNotReady", effective):
        market.send("relayer", market.market.functions.applyParams(params.as_tuple()))
    other = replace(params, fee_bps=251)
    market.clock.warp(effective)
    with reverts("NoPendingParams"):
        market.send("relayer", market.market.functions.applyParams(other.as_tuple()))
    rcpt = market.send("relayer", market.market.functions.applyParams(params.as_tuple()))
    assert tuple(market.event(rcpt, "ParamsSet")["params"].values()) == params.as_tuple()
    with reverts("NoPendingParams"):
        market.send("relayer", market.market.functions.applyParams(params.as_tuple()))
    assert tuple(market.market.functions.params().call()) == params.as_tuple()
    job_id, job = market.delivered(units=1000)
    assert job.challenge_end == market.clock.now() + 1200
    market.clock.warp(job.challenge_end)
    payment = market.due(1000, USD)
    assert market.event(market.finalize(job_id, job).rcpt, "JobFinalized")["fee"] == payment * 250 // 10_000


@pytest.mark.parametrize("change", [
    {"fee_bps": 10_001}, {"refund_penalty_bps": 10_001}, {"sample_rate_bps": 10_001},
    {"treasury": "0x" + "00" * 20}, {"challenge_window": 0}, {"commit_period": 0},
    {"reveal_period": 0}, {"committee_size": 0}, {"committee_size": 1}, {"committee_size": 4},
    {"committee_size": 17}, {"claim_timeout": 0}, {"escalation_period": 0}, {"member_penalty_bps": 10_001},
    {"challenger_reward_bps": 5_000, "committee_reward_bps": 5_001},
])
def test_propose_params_reverts_on_an_invalid_parameter(market: Market, change: dict[str, object]) -> None:
    params = replace(market.params, **change)  # type: ignore[arg-type]
    with reverts("InvalidParameter"):
        market.send("deployer", market.market.functions.proposeParams(params.as_tuple()))


def test_propose_params_is_owner_only(market: Market) -> None:
    params = replace(market.params, treasury=market.addr("client"), fee_bps=10_000)
    with reverts("OwnableUnauthorizedAccount", market.addr("client")):
        market.send("client", market.market.functions.proposeParams(params.as_tuple()))


@pytest.mark.parametrize("contract", ["market", "staking", "registry"])
def test_renounce_ownership_reverts_on_every_contract(market: Market, contract: str) -> None:
    c = {"market": market.market, "staking": market.staking, "registry": market.h.registry}[contract]
    with reverts("OwnershipCannotBeRenounced"):
        market.send("deployer", c.functions.renounceOwnership())


# ---------------------------------------------------------------- Ownable2Step


@pytest.mark.parametrize("name", ["market", "staking", "registry"])
def test_ownership_moves_only_when_the_new_owner_accepts(market: Market, name: str) -> None:
    contract = getattr(market.h, name)
    old, new = market.addr("deployer"), market.addr("spare")
    rcpt = market.send("deployer", contract.functions.transferOwnership(new))
    assert market.event(rcpt, "OwnershipTransferStarted") == {"previousOwner": old, "newOwner": new}
    assert contract.functions.owner().call() == old
    assert contract.functions.pendingOwner().call() == new
    with reverts("OwnableUnauthorizedAccount", market.addr("client")):
        market.send("client", contract.functions.acceptOwnership())
    rcpt = market.send("spare", contract.functions.acceptOwnership())
    assert market.event(rcpt, "OwnershipTransferred") == {"previousOwner": old, "newOwner": new}
    assert contract.functions.owner().call() == new
    assert contract.functions.pendingOwner().call() == "0x" + "00" * 20
    with reverts("OwnableUnauthorizedAccount", old):
        market.send("deployer", contract.functions.transferOwnership(old))


def test_the_new_market_owner_governs_and_the_old_one_no_longer_does(market: Market) -> None:
    market.send("deployer", market.market.functions.transferOwnership(market.addr("spare")))
    market.send("spare", market.market.functions.acceptOwnership())
    with reverts("OwnableUnauthorizedAccount", market.addr("deployer")):
        market.send("deployer", market.market.functions.pause())
    market.send("spare", market.market.functions.pause())
    assert market.market.functions.paused().call()


# ---------------------------------------------------------------- views


def test_views_report_the_wiring_and_the_eip712_domain(market: Market) -> None:
    m = market.market.functions
    assert m.paymentToken().call() == market.h.usd.address
    assert m.staking().call() == market.h.staking.address
    assert m.registry().call() == market.h.registry.address
    assert market.staking.functions.market().call() == market.market.address
    assert market.staking.functions.stakingToken().call() == market.h.hst.address
    domain_type = keccak(text="EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)")
    expected = keccak(encode(
        ["bytes32", "bytes32", "bytes32", "uint256", "address"],
        [domain_type, keccak(text=eip712.DOMAIN_NAME), keccak(text=eip712.DOMAIN_VERSION),
         market.h.chain_id, market.market.address],
    ))
    assert m.DOMAIN_SEPARATOR().call() == expected
    assert m.jobStatus(1).call() == Status.NONE
    assert m.committee(1).call() == []
    assert m.balanceOf(market.addr("client")).call() == 0


def test_job_status_reads_finalized_for_a_cleared_job_and_none_beyond_the_count(market: Market) -> None:
    job_id, job = market.delivered(max_payment=USD)
    market.clock.warp(job.challenge_end)
    market.finalize(job_id, job)
    assert market.status(job_id) == Status.FINALIZED
    assert market.status(job_id + 1) == Status.NONE
    assert market.status(0) == Status.NONE
