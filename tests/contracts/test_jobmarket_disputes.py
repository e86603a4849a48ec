"""JobMarket's dispute game: challenge, drawCommittee, commit-reveal votes on (output, units),
resolveDispute (every outcome), resolveEscalated, the money of each outcome and the views.

On the devnet four providers are staked 500 HST each; with `provider` delivering and
`verifier` challenging, the committee's three seats are drawn, weighted by stake, from
`verifier2` and `cheater` (one of them holds two seats)."""

from __future__ import annotations

from contract_kit import (
    BPS,
    OUTPUT,
    USD,
    WRONG_OUTPUT,
    Market,
    reverts,
)

from contracts.bindings import vote_commitment
from contracts.types import Job, Outcome, Phase, Status

SALT = b"\x5a" * 32
MEMBERS = {"verifier2", "cheater"}


def challenged(market: Market, output: bytes = OUTPUT, units: int = 1000) -> tuple[int, Job]:
    job_id, job = market.delivered(units=units, output=output)
    return job_id, market.challenge(job_id, job).job


def drawn(market: Market, output: bytes = OUTPUT, units: int = 1000) -> tuple[int, Job, list[str]]:
    job_id, job = challenged(market, output, units)
    market.draw(job_id)
    return job_id, job, market.seats(job_id)


def seats_of(seats: list[str], role: str) -> int:
    return seats.count(role)


# ---------------------------------------------------------------- challenge


def test_challenge_records_the_dispute_and_takes_the_bond_without_drawing(market: Market) -> None:
    job_id, job = market.delivered()
    market.approve("verifier", market.params.challenge_bond)
    usd_before = market.usd("verifier")
    step = market.challenge(job_id, job, approve=False)
    draw_block = step.rcpt["blockNumber"] + 2
    assert market.event(step.rcpt, "JobChallenged") == {
        "jobId": job_id, "challenger": market.addr("verifier"), "bond": market.params.challenge_bond,
        "drawBlock": draw_block,
    }
    assert step.job == job.with_(status=Status.CHALLENGED)
    assert market.usd("verifier") == usd_before - market.params.challenge_bond
    assert market.market.functions.committee(job_id).call() == []
    d = market.dispute(job_id)
    assert (d["phase"], d["drawBlock"], d["challenger"], d["provider"], d["units"], d["outputHash"]) == (
        Phase.AWAITING_DRAW, draw_block, market.addr("verifier"), market.addr("provider"), 1000, OUTPUT)


def test_challenge_reverts_once_the_window_has_closed(market: Market) -> None:
    job_id, job = market.delivered()
    market.clock.warp(job.challenge_end)
    with reverts("ChallengeWindowClosed", job_id):
        market.challenge(job_id, job)


def test_challenge_reverts_when_the_provider_challenges_its_own_job(market: Market) -> None:
    job_id, job = market.delivered()
    with reverts("ChallengerNotEligible", market.addr("provider")):
        market.challenge(job_id, job, role="provider")


def test_challenge_reverts_when_the_challenger_is_not_an_eligible_provider(market: Market) -> None:
    job_id, job = market.delivered()
    with reverts("ChallengerNotEligible", market.addr("client")):
        market.challenge(job_id, job, role="client")


def test_challenge_reverts_for_a_job_not_yet_delivered(market: Market) -> None:
    p = market.post()
    with reverts("WrongStatus", p.job_id, Status.POSTED):
        market.challenge(p.job_id, p.job)


def test_a_second_challenge_of_the_same_receipt_reverts(market: Market) -> None:
    job_id, job = challenged(market)
    with reverts("WrongStatus", job_id, Status.CHALLENGED):
        market.challenge(job_id, job, role="verifier2")


# ---------------------------------------------------------------- drawCommittee


def test_draw_reverts_until_the_draw_block_has_been_mined(market: Market) -> None:
    job_id, _ = challenged(market)
    draw_block = market.dispute(job_id)["drawBlock"]
    # A transaction sent now is mined in the next block (the sender estimates on that pending
    # block): it reverts while that block is at or before drawBlock.
    while market.w3.eth.block_number + 1 <= draw_block:
        with reverts("DrawNotReady", job_id, draw_block):
            market.send("relayer", market.market.functions.drawCommittee(job_id))
        market.clock.rpc("anvil_mine", ["0x1"])
    market.send("relayer", market.market.functions.drawCommittee(job_id))


def test_draw_seats_a_stake_weighted_committee_without_the_parties(market: Market) -> None:
    job_id, _ = challenged(market)
    rcpt = market.draw(job_id, role="client2")  # anyone may draw
    ev = market.event(rcpt, "CommitteeDrawn")
    now = market.clock.now()
    assert (ev["jobId"], ev["commitEnd"], ev["revealEnd"]) == (
        job_id, now + market.params.commit_period, now + market.params.commit_period + market.params.reveal_period)
    seats = market.seats(job_id)
    assert len(seats) == market.params.committee_size == len(ev["seats"])
    assert set(seats) <= MEMBERS
    d = market.dispute(job_id)
    assert (d["phase"], d["seats"]) == (Phase.VOTING, 3)
    for role in MEMBERS:
        assert market.market.functions.member(job_id, market.addr(role)).call()[0] == seats.count(role)


def test_draw_reverts_once_drawn(market: Market) -> None:
    job_id, _, _ = drawn(market)
    with reverts("WrongPhase", job_id, Phase.VOTING):
        market.send("relayer", market.market.functions.drawCommittee(job_id))


def test_draw_expires_after_256_blocks_and_the_dispute_then_settles_neutrally(market: Market) -> None:
    job_id, job = challenged(market)
    draw_block = market.dispute(job_id)["drawBlock"]
    with reverts("DisputeStillOpen", job_id, draw_block + 256):
        market.resolve(job_id, job)
    market.clock.rpc("anvil_mine", [hex(draw_block + 257 - market.w3.eth.block_number)])
    with reverts("DrawExpired", job_id, draw_block):
        market.send("relayer", market.market.functions.drawCommittee(job_id))
    step = market.resolve(job_id, job)
    assert market.event(step.rcpt, "DisputeResolved")["outcome"] == Outcome.NEUTRAL
    assert step.job.status == Status.REFUNDED


# ---------------------------------------------------------------- commitVote


def test_commit_vote_records_the_commitment_and_locks_the_bond_per_seat(market: Market) -> None:
    job_id, _, seats = drawn(market)
    role = seats[0]
    n = seats.count(role)
    rcpt = market.commit(job_id, role, OUTPUT, SALT)
    bond = market.params.member_bond * n
    assert market.event(rcpt, "VoteCommitted") == {
        "jobId": job_id, "voter": market.addr(role), "commitment": vote_commitment(
            job_id, market.addr(role), OUTPUT, 1000, SALT), "bond": bond,
    }
    assert market.provider_info(role)["locked"] == bond
    assert tuple(market.market.functions.member(job_id, market.addr(role)).call()) == (n, True, False, False, bond)


def test_commit_vote_reverts_before_the_draw(market: Market) -> None:
    job_id, _ = challenged(market)
    with reverts("WrongPhase", job_id, Phase.AWAITING_DRAW):
        market.commit(job_id, "verifier2", OUTPUT, SALT)


def test_commit_vote_reverts_for_a_non_member(market: Market) -> None:
    job_id, _, _ = drawn(market)
    for role in ("provider", "verifier", "client"):
        with reverts("NotCommitteeMember", job_id, market.addr(role)):
            market.commit(job_id, role, OUTPUT, SALT)


def test_commit_vote_reverts_on_a_second_commit(market: Market) -> None:
    job_id, _, seats = drawn(market)
    market.commit(job_id, seats[0], OUTPUT, SALT)
    with reverts("AlreadyCommitted", job_id, market.addr(seats[0])):
        market.commit(job_id, seats[0], WRONG_OUTPUT, SALT)


def test_commit_vote_reverts_once_the_commit_phase_is_over(market: Market) -> None:
    job_id, _, seats = drawn(market)
    commit_end, _ = market.dispute_times(job_id)
    market.clock.warp(commit_end)
    with reverts("CommitPhaseOver", job_id, commit_end):
        market.commit(job_id, seats[0], OUTPUT, SALT)


def test_commit_vote_reverts_without_free_stake_for_the_bond(market: Market) -> None:
    job_id, _, seats = drawn(market)
    role = seats[0]
    free = market.provider_info(role)["staked"]
    market.send(role, market.staking.functions.requestUnbond(free - market.params.member_bond + 1))
    with reverts("InsufficientFreeStake", market.addr(role), market.params.member_bond * seats.count(role),
                 market.params.member_bond - 1):
        market.commit(job_id, role, OUTPUT, SALT)


# ---------------------------------------------------------------- revealVote


def test_reveal_vote_counts_the_members_seats(market: Market) -> None:
    job_id, _, seats = drawn(market)
    role = seats[0]
    market.commit(job_id, role, OUTPUT, SALT)
    market.clock.warp(market.dispute_times(job_id)[0])
    rcpt = market.reveal(job_id, role, OUTPUT, SALT)
    assert market.event(rcpt, "VoteRevealed") == {
        "jobId": job_id, "voter": market.addr(role), "outputHash": OUTPUT, "units": 1000}
    d = market.dispute(job_id)
    assert (d["agreeSeats"], d["disagreeSeats"]) == (seats.count(role), 0)


def test_a_vote_for_the_right_output_with_other_units_counts_against_the_receipt(market: Market) -> None:
    job_id, _, seats = drawn(market)
    market.commit(job_id, seats[0], OUTPUT, SALT, units=999)
    market.clock.warp(market.dispute_times(job_id)[0])
    market.reveal(job_id, seats[0], OUTPUT, SALT, units=999)
    d = market.dispute(job_id)
    assert (d["agreeSeats"], d["disagreeSeats"]) == (0, seats.count(seats[0]))


def test_reveal_vote_reverts_outside_the_reveal_phase(market: Market) -> None:
    job_id, _, seats = drawn(market)
    market.commit(job_id, seats[0], OUTPUT, SALT)
    commit_end, reveal_end = market.dispute_times(job_id)
    market.clock.warp(commit_end - 1)
    with reverts("RevealPhaseNotOpen", job_id, commit_end, reveal_end):
        market.reveal(job_id, seats[0], OUTPUT, SALT)
    market.clock.warp(reveal_end)
    with reverts("RevealPhaseNotOpen", job_id, commit_end, reveal_end):
        market.reveal(job_id, seats[0], OUTPUT, SALT)


def test_reveal_vote_reverts_when_it_does_not_match_the_commit(market: Market) -> None:
    job_id, _, seats = drawn(market)
    market.commit(job_id, seats[0], OUTPUT, SALT)
    other = next(r for r in MEMBERS if r != seats[0])
    market.clock.warp(market.dispute_times(job_id)[0])
    for output, units, salt in ((WRONG_OUTPUT, 1000, SALT), (OUTPUT, 1001, SALT), (OUTPUT, 1000, b"\x01" * 32)):
        with reverts("RevealDoesNotMatchCommit", job_id, market.addr(seats[0])):
            market.reveal(job_id, seats[0], output, salt, units)
    if other in seats:  # a member that never committed
        with reverts("RevealDoesNotMatchCommit", job_id, market.addr(other)):
            market.reveal(job_id, other, OUTPUT, SALT)


def test_reveal_vote_reverts_on_a_second_reveal(market: Market) -> None:
    job_id, _, seats = drawn(market)
    market.commit(job_id, seats[0], OUTPUT, SALT)
    market.clock.warp(market.dispute_times(job_id)[0])
    market.reveal(job_id, seats[0], OUTPUT, SALT)
    with reverts("AlreadyRevealed", job_id, market.addr(seats[0])):
        market.reveal(job_id, seats[0], OUTPUT, SALT)


def test_reveal_vote_reverts_for_a_non_member(market: Market) -> None:
    job_id, _, _ = drawn(market)
    market.clock.warp(market.dispute_times(job_id)[0])
    with reverts("NotCommitteeMember", job_id, market.addr("client")):
        market.reveal(job_id, "client", OUTPUT, SALT)


# ---------------------------------------------------------------- resolveDispute: decided


def test_resolve_reverts_while_the_reveal_phase_is_open(market: Market) -> None:
    job_id, job, _ = drawn(market)
    reveal_end = market.dispute_times(job_id)[1]
    market.clock.warp(reveal_end - 1)
    with reverts("DisputeStillOpen", job_id, reveal_end):
        market.resolve(job_id, job)


def test_provider_wins_gets_the_bond_less_the_committee_share_and_may_finalize_now(market: Market) -> None:
    job_id, job, seats = drawn(market)
    market.vote(job_id, {r: OUTPUT for r in MEMBERS if r in seats})
    step = market.resolve(job_id, job, role="client2")
    now = market.clock.now()
    assert market.event(step.rcpt, "DisputeResolved") == {
        "jobId": job_id, "outcome": Outcome.PROVIDER_WON, "byGovernance": False, "slashed": 0,
        "challengeEnd": now, "escalationEnd": 0,
    }
    assert step.job == job.with_(status=Status.DELIVERED, challenge_end=now)
    bond = market.params.challenge_bond
    share = bond * market.params.committee_reward_bps // BPS
    assert market.credit("provider") == bond - share
    paid = 0
    for role in set(seats):
        got = market.credit(role)
        assert got == share * seats.count(role) // 3
        paid += got
    assert market.event(step.rcpt, "DisputeSettled") == {
        "jobId": job_id, "challengerReward": 0, "committeeRewardUsd": paid, "committeeRewardStake": 0,
        "treasuryStake": 0,
    }
    assert market.credit("treasury") == share - paid  # rounding dust
    credited = {(e["account"], e["amount"]) for e in market.events(step.rcpt, "BalanceCredited")}
    assert (market.addr("provider"), bond - share) in credited
    for role in set(seats):
        assert market.provider_info(role)["locked"] == 0  # bonds released
    assert market.finalize(job_id, step.job).job.status == Status.FINALIZED


def test_provider_loses_is_slashed_its_collateral_split_between_challenger_committee_and_treasury(
    market: Market,
) -> None:
    job_id, job, seats = drawn(market, output=WRONG_OUTPUT)
    market.vote(job_id, {r: OUTPUT for r in MEMBERS if r in seats})
    step = market.resolve(job_id, job)
    collateral = job.collateral
    assert market.event(step.rcpt, "DisputeResolved") == {
        "jobId": job_id, "outcome": Outcome.PROVIDER_LOST, "byGovernance": False, "slashed": collateral,
        "challengeEnd": 0, "escalationEnd": 0,
    }
    assert market.event(step.rcpt, "JobRefunded") == {
        "jobId": job_id, "client": market.addr("client"), "amount": USD, "penalty": 0}
    slashed = market.event(step.rcpt, "Slashed")
    assert (slashed["provider"], slashed["amount"], slashed["jailedUntil"]) == (
        market.addr("provider"), collateral, market.clock.now() + market.jail_period)
    assert step.job.status == Status.REFUNDED
    p = market.params
    reward = min(collateral * p.challenger_reward_bps // BPS, p.max_challenger_reward)
    committee = collateral * p.committee_reward_bps // BPS
    assert market.reward("verifier") == reward
    assert {"account": market.addr("verifier"), "amount": reward, "jobId": job_id} in market.events(
        step.rcpt, "RewardCredited")
    assert market.credit("verifier") == p.challenge_bond  # the bond comes back
    paid = sum(market.reward(r) for r in set(seats))
    assert paid == sum(committee * seats.count(r) // 3 for r in set(seats))
    assert market.reward("treasury") == collateral - reward - paid
    settled = market.event(step.rcpt, "DisputeSettled")
    assert settled == {"jobId": job_id, "challengerReward": reward, "committeeRewardUsd": 0,
                       "committeeRewardStake": paid, "treasuryStake": collateral - reward - paid}
    info = market.provider_info("provider")
    assert (info["staked"], info["locked"]) == (market.stake0 - collateral, 0)
    assert not market.staking.functions.isEligible(market.addr("provider"), market.model_id).call()
    assert market.credit("client") == USD
    # Rewards are withdrawn in the staking token.
    before = market.hst("verifier")
    rcpt = market.send("verifier", market.market.functions.withdrawRewards(market.addr("verifier")))
    assert market.event(rcpt, "RewardsWithdrawn") == {
        "account": market.addr("verifier"), "to": market.addr("verifier"), "amount": reward}
    assert market.hst("verifier") == before + reward
    with reverts("NothingToWithdraw", market.addr("verifier")):
        market.send("verifier", market.market.functions.withdrawRewards(market.addr("verifier")))


def test_members_that_do_not_reveal_or_vote_with_the_minority_lose_part_of_their_bond(market: Market) -> None:
    job_id, job, seats = drawn(market, output=WRONG_OUTPUT)
    major = max(MEMBERS, key=seats.count)
    minor = next(r for r in MEMBERS if r != major)
    p = market.params
    penalty_per_seat = p.member_bond * p.member_penalty_bps // BPS
    if minor in seats:  # the 1-seat member votes for the wrong receipt and is outvoted
        market.vote(job_id, {major: OUTPUT, minor: WRONG_OUTPUT})
    else:  # the only member reveals; nothing else to test the minority with
        market.vote(job_id, {major: OUTPUT})
    step = market.resolve(job_id, job)
    settled = {e["member"]: e for e in market.events(step.rcpt, "MemberSettled")}
    if minor in seats:
        ev = settled[market.addr(minor)]
        assert (ev["seats"], ev["penalty"], ev["rewardStake"]) == (1, penalty_per_seat, 0)
        assert market.provider_info(minor)["staked"] == market.stake0 - penalty_per_seat
        assert market.provider_info(minor)["strikes"] == 1
    ev = settled[market.addr(major)]
    assert ev["penalty"] == 0 and ev["rewardStake"] > 0


def test_a_member_that_never_commits_is_penalized_from_its_stake(market: Market) -> None:
    job_id, job, seats = drawn(market, output=WRONG_OUTPUT)
    major = max(MEMBERS, key=seats.count)
    minor = next(r for r in MEMBERS if r != major)
    market.vote(job_id, {major: OUTPUT})
    step = market.resolve(job_id, job)
    assert market.event(step.rcpt, "DisputeResolved")["outcome"] == Outcome.PROVIDER_LOST
    if minor in seats:
        p = market.params
        penalty = p.member_bond * p.member_penalty_bps // BPS
        ev = next(e for e in market.events(step.rcpt, "MemberSettled") if e["member"] == market.addr(minor))
        assert ev["penalty"] == penalty
        assert market.provider_info(minor)["staked"] == market.stake0 - penalty


# ---------------------------------------------------------------- escalation and neutral outcomes


def test_without_a_quorum_of_reveals_the_dispute_escalates_with_a_deadline(market: Market) -> None:
    job_id, job, _ = drawn(market)
    market.clock.warp(market.dispute_times(job_id)[1])
    step = market.resolve(job_id, job)
    end = market.clock.now() + market.params.escalation_period
    assert market.event(step.rcpt, "DisputeResolved") == {
        "jobId": job_id, "outcome": Outcome.ESCALATED, "byGovernance": False, "slashed": 0, "challengeEnd": 0,
        "escalationEnd": end,
    }
    assert step.job == job
    assert (market.dispute(job_id)["phase"], market.dispute(job_id)["escalationEnd"]) == (Phase.ESCALATED, end)
    with reverts("DisputeStillOpen", job_id, end):
        market.resolve(job_id, job)


def test_resolve_escalated_by_the_owner_can_uphold_the_receipt(market: Market) -> None:
    job_id, job, _ = drawn(market)
    market.clock.warp(market.dispute_times(job_id)[1])
    job = market.resolve(job_id, job).job
    step = market.resolve_escalated(job_id, job, provider_won=True)
    ev = market.event(step.rcpt, "DisputeResolved")
    assert (ev["outcome"], ev["byGovernance"]) == (Outcome.PROVIDER_WON, True)
    assert step.job.status == Status.DELIVERED


def test_resolve_escalated_by_the_owner_can_reject_the_receipt(market: Market) -> None:
    job_id, job, _ = drawn(market, output=WRONG_OUTPUT)
    market.clock.warp(market.dispute_times(job_id)[1])
    job = market.resolve(job_id, job).job
    step = market.resolve_escalated(job_id, job, provider_won=False)
    ev = market.event(step.rcpt, "DisputeResolved")
    assert (ev["outcome"], ev["byGovernance"], ev["slashed"]) == (Outcome.PROVIDER_LOST, True, job.collateral)


def test_resolve_escalated_reverts_for_a_dispute_that_was_not_escalated_or_is_past_its_deadline(
    market: Market,
) -> None:
    job_id, job, _ = drawn(market)
    with reverts("DisputeNotEscalated", job_id):
        market.resolve_escalated(job_id, job, provider_won=True)
    with reverts("OwnableUnauthorizedAccount", market.addr("client")):
        market.resolve_escalated(job_id, job, provider_won=True, role="client")
    market.clock.warp(market.dispute_times(job_id)[1])
    job = market.resolve(job_id, job).job
    end = market.dispute(job_id)["escalationEnd"]
    market.clock.warp(end)
    with reverts("EscalationClosed", job_id, end):
        market.resolve_escalated(job_id, job, provider_won=True)


def test_past_the_escalation_deadline_anyone_settles_neutrally(market: Market) -> None:
    job_id, job, seats = drawn(market)
    market.clock.warp(market.dispute_times(job_id)[1])
    job = market.resolve(job_id, job).job
    market.clock.warp(market.dispute(job_id)["escalationEnd"])
    step = market.resolve(job_id, job, role="client2")
    assert market.event(step.rcpt, "DisputeResolved")["outcome"] == Outcome.NEUTRAL
    assert step.job.status == Status.REFUNDED
    assert market.credit("client") == USD
    assert market.credit("verifier") == market.params.challenge_bond
    info = market.provider_info("provider")
    assert (info["staked"], info["locked"]) == (market.stake0, 0)  # no slash, collateral released
    p = market.params
    penalties = sum(p.member_bond * p.member_penalty_bps // BPS * seats.count(r) for r in set(seats))
    assert market.reward("treasury") == penalties  # the members that never revealed
    assert market.dispute(job_id)["phase"] == Phase.SETTLED
    with reverts("WrongStatus", job_id, Status.REFUNDED):
        market.resolve(job_id, step.job)
