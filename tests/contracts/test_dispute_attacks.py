"""The twelve attacks of issue 8, one test each, written to fail on the contracts before it.

1 committee capture by retrying the draw, 2 capture by junk registrations, 3 an unbounded walk
in the draw, 4 self-reported units, 5 free-text runtime and GPU class, 6 a slash returning to
the cheater, 7 escalations that strand funds, 8 an unpaid, unpunished committee, 9 a pause
that favours cheaters, 10 unbonding before delivering, 11 cheap claim griefing, 12 parameters
read at settlement."""

from __future__ import annotations

from dataclasses import replace

from contract_kit import (
    BPS,
    GPU,
    HST,
    OUTPUT,
    USD,
    WRONG_OUTPUT,
    Market,
    deploy,
    reverts,
    stake,
)
from eth_utils import keccak

from contracts.types import Outcome, Phase, Status

MEMBERS = ("verifier2", "cheater")


def _vote_all(market: Market, job_id: int, output: bytes, units: int = 1000) -> None:
    seats = market.seats(job_id)
    market.vote(job_id, {r: (output, units) for r in MEMBERS if r in seats})


# 1 ---------------------------------------------------------------- retrying the draw


def test_1_a_contract_challenger_cannot_see_or_draw_the_committee_in_its_challenge_transaction(
    market: Market,
) -> None:
    """Vulnerable version: `challenge` drew the committee from prevrandao in the challenger's
    transaction, so a contract challenger read `committee(jobId)` and reverted until its sybils
    held a majority. Now the committee does not exist yet, and drawing in the same transaction
    (or the next block) reverts: the seed is the hash of a block mined after the challenge."""
    grinder = deploy(market, "Grinder", role="spare")
    g = grinder.functions
    market.send("deployer", market.h.hst.functions.mint(grinder.address, market.min_stake))
    market.send("deployer", market.h.usd.functions.mint(grinder.address, 100 * USD))
    hst, usd, staking = market.h.hst.functions, market.h.usd.functions, market.staking.functions
    calls = [
        (market.h.hst.address, hst.approve(market.staking.address, market.min_stake)),
        (market.staking.address, staking.register("http://g", "x", "cpu", market.min_stake)),
        (market.staking.address, staking.setServing(market.model_id, True)),
        (market.h.usd.address, usd.approve(market.market.address, 100 * USD)),
    ]
    for target, fn in calls:
        market.send("spare", g.execute(target, fn._encode_transaction_data()))
    job_id, job = market.delivered()
    # What the grinder sees inside its challenge transaction: no seat at all.
    assert g.challengeAndInspect(market.market.address, job_id, job.as_tuple()).call(
        {"from": market.addr("spare")}) == 0
    # The sender estimates on the pending block, the one the transaction would be mined in.
    draw_block = market.w3.eth.block_number + 1 + 2
    with reverts("DrawNotReady", job_id, draw_block):
        market.send("spare", g.challengeAndDraw(market.market.address, job_id, job.as_tuple()))


# 2 and 3 ---------------------------------------------------------------- junk registrations


def test_2_registration_needs_the_minimum_stake_and_providers_outside_the_set_never_sit(market: Market) -> None:
    """Vulnerable version: `register` was free and the draw walked every provider ever
    registered from a random start. Now registering costs the minimum stake, and only the
    model's eligible set (a stake-weighted tree) is drawn from: 12 staked sybils that serve
    another model or class never sit, and the draw's gas does not change."""
    with reverts("StakeBelowMinimum", 0, market.min_stake):
        market.send("spare", market.staking.functions.register("junk", "x", "cpu", 0))
    job_id, job = market.delivered()
    market.challenge(job_id, job)
    draw_block = market.dispute(job_id)["drawBlock"]
    market.clock.rpc("anvil_mine", [hex(draw_block + 1 - market.w3.eth.block_number)])  # the seed is fixed now
    snap = market.clock.snapshot()
    gas_before = market.draw(job_id)["gasUsed"]
    seats_before = market.seats(job_id)
    market.revert(snap)
    from eth_account import Account

    for i in range(12):
        acct = Account.from_key(keccak(text=f"sybil {i}"))
        market.send("deployer", market.h.hst.functions.mint(acct.address, market.min_stake))
        market.clock.rpc("anvil_setBalance", [acct.address, hex(10**18)])
        sender = market.h.sender("0x" + bytes(acct.key).hex())
        sender.send(market.h.hst.functions.approve(market.staking.address, market.min_stake))
        sender.send(market.staking.functions.register("junk", "x", "h100" if i % 2 else "cpu", market.min_stake))
        if i % 2:  # same model, another class
            sender.send(market.staking.functions.setServing(market.model_id, True))
        else:  # same class, another model
            sender.send(market.staking.functions.setServing(keccak(text="other model"), True))
    assert market.staking.functions.eligibleSet(market.model_id, GPU).call() == [4, 4 * market.stake0]
    rcpt = market.draw(job_id)
    assert market.seats(job_id) == seats_before  # same seed, same set: same committee
    assert rcpt["gasUsed"] == gas_before


def test_3_the_draw_reads_a_logarithmic_number_of_tree_nodes_whatever_was_ever_registered(market: Market) -> None:
    """Vulnerable version: about 7,000 gas per list entry, unbounded. Now a stake-weighted draw
    over 4 members costs the same after 12 others joined and left the set (their slots are
    reused), so the walk-length attack has nothing to walk."""
    job_id, job = market.delivered()
    market.challenge(job_id, job)
    draw_block = market.dispute(job_id)["drawBlock"]
    market.clock.rpc("anvil_mine", [hex(draw_block + 1 - market.w3.eth.block_number)])  # the seed is fixed now
    snap = market.clock.snapshot()
    gas_before = market.draw(job_id)["gasUsed"]
    market.revert(snap)
    for i in range(3):  # three providers join and leave repeatedly: no slot is ever added twice
        role = ("client2", "relayer", "spare")[i]
        stake(market, role, market.min_stake, mint=True)
        market.send(role, market.staking.functions.setServing(market.model_id, False))
    members, _ = market.staking.functions.eligibleSet(market.model_id, GPU).call()
    assert members == 4
    assert abs(market.draw(job_id)["gasUsed"] - gas_before) < 2_500  # one more tree level at most


# 4 ---------------------------------------------------------------- inflated units


def test_4_a_receipt_with_inflated_units_loses_its_dispute(market: Market) -> None:
    """Vulnerable version: the committee voted on the output hash only, so a provider that
    reported units = 2^64 - 1 with the right output took the whole escrow and the challenger lost
    its bond. Units are part of the vote now."""
    job_id, job = market.delivered(units=2**64 - 1, max_payment=USD)
    assert job.payment == USD
    job = market.challenge(job_id, job).job
    market.draw(job_id)
    _vote_all(market, job_id, OUTPUT, units=1000)  # the right output, the true units
    step = market.resolve(job_id, job)
    assert market.event(step.rcpt, "DisputeResolved")["outcome"] == Outcome.PROVIDER_LOST
    assert market.credit("client") == USD
    assert market.credit("verifier") == market.params.challenge_bond


# 5 ---------------------------------------------------------------- runtime and class


def test_5_a_receipt_naming_an_unlisted_runtime_or_numerics_class_is_refused(market: Market) -> None:
    """Vulnerable version: runtime hash and GPU class were free text, so a provider naming an
    unusual class was never re-executed. Now both must be listed by governance, and committees
    are drawn from the receipt's class."""
    p = market.post()
    claimed = market.claim(p.job_id, p.job).job
    bad_runtime = keccak(text="a runtime nobody verifies")
    rec = replace(market.receipt(p.job_id), runtime_hash=bad_runtime)
    with reverts("RuntimeNotListed", market.model_id, bad_runtime):
        market.submit(claimed, rec, market.sign_receipt("provider", rec))
    odd = b"tpu-v9".ljust(32, b"\x00")
    rec = replace(market.receipt(p.job_id), gpu_class=odd)
    with reverts("NumericsClassNotListed", odd):
        market.submit(claimed, rec, market.sign_receipt("provider", rec))
    reg = market.h.registry.functions
    rcpt = market.send("deployer", reg.setRuntime(market.model_id, bad_runtime, True))
    assert market.event(rcpt, "RuntimeListed") == {
        "modelId": market.model_id, "runtimeHash": bad_runtime, "listed": True}
    rcpt = market.send("deployer", reg.setNumericsClass(odd, True))
    assert market.event(rcpt, "NumericsClassListed") == {"gpuClass": odd, "listed": True}
    assert reg.isRuntimeListed(market.model_id, bad_runtime).call() and reg.isNumericsClass(odd).call()
    rec = replace(market.receipt(p.job_id), runtime_hash=bad_runtime, gpu_class=odd)
    job = market.submit(claimed, rec, market.sign_receipt("provider", rec)).job
    assert job.gpu_class == odd
    # Nobody else runs that class: the dispute has no committee and settles neutrally.
    market.challenge(p.job_id, job)
    rcpt = market.draw(p.job_id)
    assert market.event(rcpt, "CommitteeDrawn")["seats"] == []


# 6 ---------------------------------------------------------------- self-challenge


def test_6_a_cheater_whose_own_sybil_challenges_first_recovers_only_the_bounded_reward(market: Market) -> None:
    """Vulnerable version: the whole slash went to the (only) challenger, so the cheater's own
    sybil challenged first and got the slash back. Now the challenger's reward is at most
    challengerRewardBps of the slash (and at most maxChallengerReward); the rest goes to the
    committee and the treasury. Here `verifier` is the cheater's sybil."""
    job_id, job = market.delivered(output=WRONG_OUTPUT)
    cheater_hst = market.provider_info("provider")["staked"] + market.hst("provider")
    sybil_hst = market.provider_info("verifier")["staked"] + market.hst("verifier")
    job = market.challenge(job_id, job, role="verifier").job
    market.draw(job_id)
    _vote_all(market, job_id, OUTPUT)
    step = market.resolve(job_id, job)
    slashed = market.event(step.rcpt, "DisputeResolved")["slashed"]
    assert slashed == job.collateral > 0
    market.send("verifier", market.market.functions.withdrawRewards(market.addr("verifier")))
    after = (market.provider_info("provider")["staked"] + market.hst("provider")
             + market.provider_info("verifier")["staked"] + market.hst("verifier"))
    p = market.params
    reward = min(slashed * p.challenger_reward_bps // BPS, p.max_challenger_reward)
    assert after == cheater_hst + sybil_hst - slashed + reward
    assert cheater_hst + sybil_hst - after >= slashed * (BPS - p.challenger_reward_bps) // BPS


# 7 ---------------------------------------------------------------- stranded escalations


def test_7_an_empty_committee_settles_neutrally_and_ownership_cannot_be_renounced(market: Market) -> None:
    """Vulnerable version: a 0-0 tie (here: only the two parties serve the model, so no
    committee) escalated to the owner with no deadline, and after `renounceOwnership` the
    escrow, bond and collateral were locked forever."""
    with reverts("OwnershipCannotBeRenounced"):
        market.send("deployer", market.market.functions.renounceOwnership())
    job_id, job = market.delivered()
    for role in MEMBERS:
        market.send(role, market.staking.functions.setServing(market.model_id, False))
    job = market.challenge(job_id, job).job
    rcpt = market.draw(job_id)
    assert market.event(rcpt, "CommitteeDrawn") == {"jobId": job_id, "seats": [], "commitEnd": 0, "revealEnd": 0}
    assert market.dispute(job_id)["phase"] == Phase.NO_COMMITTEE
    step = market.resolve(job_id, job, role="client2")
    assert market.event(step.rcpt, "DisputeResolved")["outcome"] == Outcome.NEUTRAL
    assert market.credit("client") == USD
    assert market.credit("verifier") == market.params.challenge_bond
    info = market.provider_info("provider")
    assert (info["staked"], info["locked"], info["jailed_until"]) == (market.stake0, 0, 0)


# 8 ---------------------------------------------------------------- committee incentives


def test_8_one_revealer_cannot_decide_and_the_majority_is_paid_from_the_loser(market: Market) -> None:
    """Vulnerable version: no reward, no penalty, and a single revealed vote decided. Now a
    quorum (size / 2 + 1 seats) must reveal, the majority shares the committee's cut of the
    slash, and a member that stays silent pays a penalty."""
    job_id, job = market.delivered(output=WRONG_OUTPUT)
    job = market.challenge(job_id, job).job
    market.draw(job_id)
    seats = market.seats(job_id)
    lone = next((r for r in MEMBERS if seats.count(r) == 1), None)
    if lone is not None:  # a member with one seat reveals alone: no quorum, escalation
        market.vote(job_id, {lone: OUTPUT})
        step = market.resolve(job_id, job)
        assert market.event(step.rcpt, "DisputeResolved")["outcome"] == Outcome.ESCALATED
        return
    _vote_all(market, job_id, OUTPUT)  # one member holds all three seats
    step = market.resolve(job_id, job)
    assert market.reward(seats[0]) == job.collateral * market.params.committee_reward_bps // BPS


# 9 ---------------------------------------------------------------- pause


def test_9_a_pause_across_the_challenge_window_does_not_let_a_wrong_receipt_through(market: Market) -> None:
    """Vulnerable version: `challenge` was paused while delivery and finalize were not, so a
    wrong receipt delivered around a pause was paid unchallenged. Challenges, draws, votes and
    settlement all work while paused now."""
    p = market.post()
    claimed = market.claim(p.job_id, p.job).job
    market.send("deployer", market.market.functions.pause())
    job = market.deliver(p.job_id, claimed, output=WRONG_OUTPUT).job
    job = market.challenge(p.job_id, job).job
    market.draw(p.job_id)
    _vote_all(market, p.job_id, OUTPUT)
    step = market.resolve(p.job_id, job)
    assert market.event(step.rcpt, "DisputeResolved")["outcome"] == Outcome.PROVIDER_LOST
    assert market.market.functions.paused().call()


# 10 ---------------------------------------------------------------- unbond before delivering


def test_10_unbonding_everything_free_before_delivering_still_leaves_the_whole_slash(market: Market) -> None:
    """Vulnerable version: the provider unbonded its free stake and only its 10 HST collateral
    was left to slash while DisputeResolved reported 50. The slash now is the job's locked
    collateral (scaled with the job's value), taken whole, and the events report it exactly."""
    p = market.post(max_payment=3 * USD)
    claimed = market.claim(p.job_id, p.job).job
    assert claimed.collateral == market.params.claim_collateral + 3 * USD * market.params.collateral_per_payment_wei
    market.send("provider", market.staking.functions.requestUnbond(market.stake0 - claimed.collateral))
    job = market.deliver(p.job_id, claimed, output=WRONG_OUTPUT).job
    job = market.challenge(p.job_id, job).job
    market.draw(p.job_id)
    _vote_all(market, p.job_id, OUTPUT)
    step = market.resolve(p.job_id, job)
    resolved = market.event(step.rcpt, "DisputeResolved")
    slashed = market.event(step.rcpt, "Slashed")
    assert resolved["slashed"] == slashed["amount"] == slashed["fromStaked"] == claimed.collateral


# 11 ---------------------------------------------------------------- hostage claims


def test_11_a_claim_held_hostage_is_released_by_anyone_after_the_claim_timeout(market: Market) -> None:
    """Vulnerable version: a flat penalty and no claim timeout, so a week-long job could be held
    for a week. Now anyone releases an undelivered claim after claimTimeout: the penalty
    (a share of a collateral that scales with the job) goes to the client and the job is open
    again."""
    p = market.post(max_payment=5 * USD, ttl=7 * 86400)
    claimed = market.claim(p.job_id, p.job).job
    with reverts("ClaimNotExpired", p.job_id, claimed.claim_expiry):
        market.send("client2", market.market.functions.releaseClaim(p.job_id, claimed.as_tuple()))
    market.clock.warp(claimed.claim_expiry + 1)
    hst_before = market.hst("client")
    rcpt = market.send("client2", market.market.functions.releaseClaim(p.job_id, claimed.as_tuple()))
    penalty = claimed.collateral * market.params.refund_penalty_bps // BPS
    assert market.event(rcpt, "ClaimReleased") == {
        "jobId": p.job_id, "provider": market.addr("provider"), "penalty": penalty}
    assert market.hst("client") == hst_before + penalty
    job = market.fold(p.job_id, claimed, rcpt)
    assert job == p.job and market.status(p.job_id) == Status.POSTED
    assert market.provider_info("provider")["locked"] == 0
    job = market.claim(p.job_id, job, role="verifier2").job
    assert market.deliver(p.job_id, job, role="verifier2").job.status == Status.DELIVERED


# 12 ---------------------------------------------------------------- parameters at settlement


def test_12_raising_the_fee_after_delivery_does_not_change_the_job_s_fee(market: Market) -> None:
    """Vulnerable version: `finalize` read feeBps (and the treasury) at settlement, so raising
    the fee to 100% after delivery took the provider's whole pay. Both are fixed at posting, and
    a change takes effect only PARAMS_DELAY later."""
    job_id, job = market.delivered(units=1000)
    greedy = replace(market.params, fee_bps=BPS, treasury=market.addr("spare"))
    market.send("deployer", market.market.functions.proposeParams(greedy.as_tuple()))
    with reverts("ParamsNotReady", market.clock.now() + int(market.market.functions.PARAMS_DELAY().call())):
        market.send("deployer", market.market.functions.applyParams(greedy.as_tuple()))
    market.clock.advance(int(market.market.functions.PARAMS_DELAY().call()))
    market.send("relayer", market.market.functions.applyParams(greedy.as_tuple()))
    ev = market.event(market.finalize(job_id, job).rcpt, "JobFinalized")
    assert (ev["fee"], ev["treasury"]) == (job.payment * 500 // BPS, market.addr("treasury"))
    assert ev["providerAmount"] == job.payment - ev["fee"]
    assert HST  # the staking token's unit, used by the other attacks
