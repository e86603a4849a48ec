"""JobMarket's disputes: challenge, commit-reveal votes, resolveDispute and resolveEscalated.

On the devnet four providers are staked; with `provider` delivering and `verifier`
challenging, the committee is `verifier2` and `cheater` (the other two active providers)."""

from __future__ import annotations

from contract_kit import (
    OUTPUT,
    USD,
    WRONG_OUTPUT,
    Market,
    reverts,
)

from contracts.bindings import vote_commitment
from contracts.types import Job, Status

SALT = b"\x5a" * 32


def challenged(market: Market, units: int = 1000) -> tuple[int, Job]:
    job_id, job = market.delivered(units=units)
    return job_id, market.challenge(job_id, job).job


# ---------------------------------------------------------------- challenge


def test_challenge_takes_the_bond_and_draws_a_committee_of_other_providers(market: Market) -> None:
    job_id, job = market.delivered()
    before = market.usd("verifier")
    step = market.challenge(job_id, job)
    now = market.clock.now()
    ev = market.event(step.rcpt, "JobChallenged")
    assert sorted(ev.pop("committee")) == sorted([market.addr("verifier2"), market.addr("cheater")])
    assert ev == {
        "jobId": job_id, "challenger": market.addr("verifier"), "bond": market.params.challenge_bond,
        "commitEnd": now + market.params.commit_period,
        "revealEnd": now + market.params.commit_period + market.params.reveal_period,
    }
    assert sorted(market.committee_roles(job_id)) == ["cheater", "verifier2"]
    assert market.usd("verifier") == before - market.params.challenge_bond
    assert step.job.status == Status.CHALLENGED
    assert market.status(job_id) == Status.CHALLENGED


def test_challenge_reverts_once_the_window_has_closed(market: Market) -> None:
    job_id, job = market.delivered()
    market.clock.warp(job.challenge_end)
    with reverts("ChallengeWindowClosed", job_id):
        market.challenge(job_id, job)


def test_challenge_reverts_when_the_provider_challenges_its_own_job(market: Market) -> None:
    job_id, job = market.delivered()
    with reverts("ChallengerNotEligible", market.addr("provider")):
        market.challenge(job_id, job, "provider")


def test_challenge_reverts_when_the_challenger_is_not_a_staked_provider(market: Market) -> None:
    job_id, job = market.delivered()
    with reverts("ChallengerNotEligible", market.addr("client2")):
        market.challenge(job_id, job, "client2")


def test_challenge_reverts_for_a_job_not_yet_delivered(market: Market) -> None:
    p = market.post()
    claimed = market.claim(p.job_id, p.job).job
    with reverts("WrongStatus", p.job_id, Status.CLAIMED):
        market.challenge(p.job_id, claimed)


# ---------------------------------------------------------------- commitVote / revealVote


def test_commit_vote_records_the_commitment(market: Market) -> None:
    job_id, _ = challenged(market)
    rcpt = market.commit(job_id, "verifier2", OUTPUT, SALT)
    assert market.event(rcpt, "VoteCommitted") == {
        "jobId": job_id, "voter": market.addr("verifier2"),
        "commitment": vote_commitment(job_id, market.addr("verifier2"), OUTPUT, SALT),
    }


def test_commit_vote_reverts_for_a_non_member(market: Market) -> None:
    job_id, _ = challenged(market)
    for role in ("client", "provider", "verifier"):  # outsider, accused, accuser
        with reverts("NotCommitteeMember", job_id, market.addr(role)):
            market.commit(job_id, role, OUTPUT, SALT)


def test_commit_vote_reverts_on_a_second_commit(market: Market) -> None:
    job_id, _ = challenged(market)
    market.commit(job_id, "verifier2", OUTPUT, SALT)
    with reverts("AlreadyCommitted", job_id, market.addr("verifier2")):
        market.commit(job_id, "verifier2", WRONG_OUTPUT, SALT)


def test_commit_vote_reverts_once_the_commit_phase_is_over(market: Market) -> None:
    job_id, _ = challenged(market)
    commit_end, _ = market.dispute_times(job_id)
    market.clock.warp(commit_end)
    with reverts("CommitPhaseOver", job_id):
        market.commit(job_id, "verifier2", OUTPUT, SALT)


def test_reveal_vote_counts_the_revealed_output(market: Market) -> None:
    job_id, _ = challenged(market)
    market.commit(job_id, "verifier2", OUTPUT, SALT)
    commit_end, _ = market.dispute_times(job_id)
    market.clock.warp(commit_end)
    rcpt = market.reveal(job_id, "verifier2", OUTPUT, SALT)
    assert market.event(rcpt, "VoteRevealed") == {
        "jobId": job_id, "voter": market.addr("verifier2"), "outputHash": OUTPUT,
    }


def test_reveal_vote_reverts_outside_the_reveal_phase(market: Market) -> None:
    job_id, _ = challenged(market)
    market.commit(job_id, "verifier2", OUTPUT, SALT)
    commit_end, reveal_end = market.dispute_times(job_id)
    market.clock.warp(commit_end - 1)
    with reverts("RevealPhaseNotOpen", job_id):
        market.reveal(job_id, "verifier2", OUTPUT, SALT)
    market.clock.warp(reveal_end)
    with reverts("RevealPhaseNotOpen", job_id):
        market.reveal(job_id, "verifier2", OUTPUT, SALT)


def test_reveal_vote_reverts_when_it_does_not_match_the_commit(market: Market) -> None:
    job_id, _ = challenged(market)
    market.commit(job_id, "verifier2", OUTPUT, SALT)
    market.clock.warp(market.dispute_times(job_id)[0])
    with reverts("RevealDoesNotMatchCommit", job_id, market.addr("verifier2")):
        market.reveal(job_id, "verifier2", WRONG_OUTPUT, SALT)
    with reverts("RevealDoesNotMatchCommit", job_id, market.addr("verifier2")):
        market.reveal(job_id, "verifier2", OUTPUT, b"\x00" * 32)


def test_reveal_vote_reverts_on_a_second_reveal(market: Market) -> None:
    job_id, _ = challenged(market)
    market.commit(job_id, "verifier2", OUTPUT, SALT)
    market.clock.warp(market.dispute_times(job_id)[0])
    market.reveal(job_id, "verifier2", OUTPUT, SALT)
    with reverts("AlreadyRevealed", job_id, market.addr("verifier2")):
        market.reveal(job_id, "verifier2", OUTPUT, SALT)


def test_reveal_vote_reverts_for_a_non_member(market: Market) -> None:
    job_id, _ = challenged(market)
    market.clock.warp(market.dispute_times(job_id)[0])
    with reverts("NotCommitteeMember", job_id, market.addr("client")):
        market.reveal(job_id, "client", OUTPUT, SALT)


# ---------------------------------------------------------------- resolveDispute


def test_resolve_reverts_while_the_reveal_phase_is_open(market: Market) -> None:
    job_id, job = challenged(market)
    market.clock.warp(market.dispute_times(job_id)[1] - 1)
    with reverts("DisputeStillOpen", job_id):
        market.resolve(job_id, job)


def test_resolve_when_the_provider_wins_pays_it_the_bond_and_allows_finalizing_now(market: Market) -> None:
    job_id, job = challenged(market, units=1000)
    market.vote(job_id, {"verifier2": OUTPUT, "cheater": OUTPUT})
    step = market.resolve(job_id, job)
    now = market.clock.now()
    assert market.event(step.rcpt, "DisputeResolved") == {
        "jobId": job_id, "providerWon": True, "escalated": False, "byGovernance": False,
        "slashed": 0, "challengeEnd": now,
    }
    assert market.event(step.rcpt, "BalanceCredited") == {
        "account": market.addr("provider"), "amount": market.params.challenge_bond, "jobId": job_id,
    }
    assert step.job.status == Status.DELIVERED
    assert step.job.challenge_end == now
    market.finalize(job_id, step.job)
    payment = market.due(1000, USD)
    assert market.credit("provider") == market.params.challenge_bond + payment - market.fee(payment)
    assert market.provider_info("provider")["locked"] == 0


def test_resolve_when_the_provider_loses_refunds_the_client_and_slashes_and_jails_it(market: Market) -> None:
    job_id, job = challenged(market)
    hst_before = market.hst("verifier")
    market.vote(job_id, {"verifier2": WRONG_OUTPUT, "cheater": WRONG_OUTPUT})
    step = market.resolve(job_id, job)
    now = market.clock.now()
    assert market.event(step.rcpt, "DisputeResolved") == {
        "jobId": job_id, "providerWon": False, "escalated": False, "byGovernance": False,
        "slashed": market.params.dispute_slash, "challengeEnd": 0,
    }
    assert market.event(step.rcpt, "JobRefunded") == {
        "jobId": job_id, "client": market.addr("client"), "amount": USD, "penalty": 0,
    }
    assert market.event(step.rcpt, "BalanceCredited") == {
        "account": market.addr("verifier"), "amount": market.params.challenge_bond, "jobId": job_id,
    }
    assert market.event(step.rcpt, "Slashed") == {
        "provider": market.addr("provider"), "recipient": market.addr("verifier"),
        "amount": market.params.dispute_slash, "fromStaked": market.params.dispute_slash,
        "jailedUntil": now + market.jail_period,
    }
    assert step.job.status == Status.REFUNDED
    assert market.credit("client") == USD
    assert market.credit("verifier") == market.params.challenge_bond
    assert market.hst("verifier") == hst_before + market.params.dispute_slash
    info = market.provider_info("provider")
    assert (info["staked"], info["locked"]) == (market.stake0 - market.params.dispute_slash, 0)
    assert not market.staking.functions.isActive(market.addr("provider")).call()


def test_resolve_on_a_tie_escalates_to_governance(market: Market) -> None:
    job_id, job = challenged(market)
    market.vote(job_id, {"verifier2": OUTPUT, "cheater": WRONG_OUTPUT})
    step = market.resolve(job_id, job)
    assert market.event(step.rcpt, "DisputeResolved") == {
        "jobId": job_id, "providerWon": False, "escalated": True, "byGovernance": False,
        "slashed": 0, "challengeEnd": 0,
    }
    assert step.job == job
    assert market.status(job_id) == Status.CHALLENGED
    with reverts("WrongStatus", job_id, Status.CHALLENGED):
        market.resolve(job_id, job)


def test_resolve_without_any_revealed_vote_escalates(market: Market) -> None:
    job_id, job = challenged(market)
    market.clock.warp(market.dispute_times(job_id)[1])
    step = market.resolve(job_id, job)
    assert market.event(step.rcpt, "DisputeResolved")["escalated"] is True


def test_resolve_escalated_by_the_owner_can_uphold_the_receipt(market: Market) -> None:
    job_id, job = challenged(market)
    market.vote(job_id, {"verifier2": OUTPUT, "cheater": WRONG_OUTPUT})
    market.resolve(job_id, job)
    with reverts("OwnableUnauthorizedAccount", market.addr("verifier2")):
        market.resolve_escalated(job_id, job, True, role="verifier2")
    step = market.resolve_escalated(job_id, job, True)
    assert market.event(step.rcpt, "DisputeResolved") == {
        "jobId": job_id, "providerWon": True, "escalated": False, "byGovernance": True,
        "slashed": 0, "challengeEnd": market.clock.now(),
    }
    assert step.job.status == Status.DELIVERED
    market.finalize(job_id, step.job)
    assert market.status(job_id) == Status.FINALIZED


def test_resolve_escalated_by_the_owner_can_reject_the_receipt(market: Market) -> None:
    job_id, job = challenged(market)
    market.vote(job_id, {"verifier2": OUTPUT, "cheater": WRONG_OUTPUT})
    market.resolve(job_id, job)
    step = market.resolve_escalated(job_id, job, False)
    assert market.event(step.rcpt, "DisputeResolved") == {
        "jobId": job_id, "providerWon": False, "escalated": False, "byGovernance": True,
        "slashed": market.params.dispute_slash, "challengeEnd": 0,
    }
    assert market.event(step.rcpt, "Slashed")["amount"] == market.params.dispute_slash
    assert step.job.status == Status.REFUNDED
    assert market.credit("client") == USD


def test_resolve_escalated_reverts_for_a_dispute_that_was_not_escalated(market: Market) -> None:
    job_id, job = challenged(market)
    with reverts("DisputeNotEscalated", job_id):
        market.resolve_escalated(job_id, job, True)
