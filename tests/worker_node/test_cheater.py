"""An honest node and a cheating node take jobs; a verifier re-executing every receipt catches
the cheater, the challenger draws the committee from a later block hash, the members (the other
staked providers) vote on (output, units) by commit-reveal, and resolveDispute slashes and jails
the cheater while the honest node is paid and the majority is rewarded."""

from __future__ import annotations

from typing import Any

from contracts.types import MarketParams, Outcome, Status
from tests.worker_node.conftest import USD, job_logs
from worker.model import output_hash
from worker.node.state import CheckRow, DisputeRow, JobRow, Phase

BOND = 5 * USD


def _snapshot(h: Any, acc: Any) -> dict[str, dict[str, int]]:
    out = {}
    for role in ("client", "provider", "cheater", "verifier", "verifier2", "treasury"):
        a = acc[role].address
        out[role] = {
            "usd": h.usd.functions.balanceOf(a).call(),
            "hst": h.hst.functions.balanceOf(a).call(),
            "staked": h.staking.functions.getProvider(a).call()[0],
            "credit": h.market.functions.balanceOf(a).call(),
            "reward": h.market.functions.rewardOf(a).call(),
        }
    return out


def test_cheater_is_caught_by_a_verifier_voted_down_slashed_and_jailed(
    fresh: Any, chain: Any, make_node: Any, post_job: Any, encoder: Any
) -> None:
    h, acc = fresh.hearth, fresh.accounts
    honest = make_node("provider")
    cheater = make_node("cheater", cheat=True)
    verifier = make_node("verifier", role="verifier", sample_all=True)
    verifier2 = make_node("verifier2", role="verifier")
    everyone = (honest, cheater, verifier, verifier2)
    before = _snapshot(h, acc)

    job_a, _ = post_job(["An honest answer.", "Another honest answer."])
    assert honest.tick().delivered == [job_a]
    job_b, _ = post_job(["A cheated answer."])
    assert cheater.tick().delivered == [job_b]
    assert h.job(job_b).provider == acc["cheater"].address

    # The verifier re-executes both receipts: job A matches, job B does not and is challenged.
    rep = verifier.tick()
    assert sorted(rep.verified) == [job_a, job_b]
    assert rep.challenged == [job_b]
    assert verifier.state.get(CheckRow, job_a).verdict == "match"  # type: ignore[union-attr]
    assert job_logs(h, "JobChallenged", job_b)[0].args["challenger"] == acc["verifier"].address
    assert h.status(job_b) == Status.CHALLENGED
    assert h.market.functions.committee(job_b).call() == []  # not drawn in the challenge

    # The draw needs the hash of a later block: the challenger draws once it exists.
    chain.mine(3)
    verifier.tick()
    seats = h.market.functions.committee(job_b).call()
    members = {a.lower() for a in seats}
    # Only two other eligible providers serve the model: the seats are theirs.
    assert members <= {acc["provider"].address.lower(), acc["verifier2"].address.lower()} and len(seats) == 3

    def expect(job: int) -> dict[str, list[int]]:
        return {n.config.name: [job] if n.address.lower() in members else [] for n in everyone}

    # Commit phase: the committee members re-execute and commit; nobody else votes.
    committed = {n.config.name: n.tick().committed for n in everyone}
    assert committed == expect(job_b)
    vote = verifier2.state.get(DisputeRow, job_b) or honest.state.get(DisputeRow, job_b)
    assert vote is not None and vote.vote == "committed" and vote.salt and vote.units
    # A second pass in the same phase does nothing more.
    assert all(n.tick().committed == [] for n in everyone)

    chain.advance(300)  # reveal phase
    revealed = {n.config.name: n.tick().revealed for n in everyone}
    assert revealed == expect(job_b)
    # They voted the honest output of job B (and its true units), which is not the cheater's.
    honest_b = output_hash(encoder.encode(["A cheated answer."]))
    reveals = {
        str(ev["args"]["voter"]).lower(): (bytes(ev["args"]["outputHash"]), ev["args"]["units"])
        for ev in honest.reader.logs(["VoteRevealed"], h.manifest.deployment_block, h.w3.eth.block_number)
    }
    units_b = job_logs(h, "ReceiptSubmitted", job_b)[0].args["units"]
    assert reveals == {a: (honest_b, units_b) for a in members}
    assert h.job(job_b).output_hash != honest_b

    chain.advance(300)  # dispute over: the first node to look resolves it, the others see it done
    resolved = [j for n in everyone for j in n.tick().resolved]
    assert resolved == [job_b]
    res = job_logs(h, "DisputeResolved", job_b)[0].args
    slash = h.job(job_b).collateral
    assert (res["outcome"], res["slashed"]) == (Outcome.PROVIDER_LOST, slash)
    assert h.status(job_b) == Status.REFUNDED
    assert cheater.state.get(JobRow, job_b).phase == Phase.REFUNDED  # type: ignore[union-attr]

    chain.advance(600)  # job A's window (and more) has passed
    for n in everyone:
        n.tick(final=True)
    assert h.status(job_a) == Status.FINALIZED
    after = _snapshot(h, acc)

    rec_a = job_logs(h, "ReceiptSubmitted", job_a)[0].args
    pay_a = rec_a["payment"]
    fee_a = pay_a * 500 // 10_000
    cheater_info = h.staking.functions.getProvider(acc["cheater"].address).call()
    now = chain.timestamp()

    def delta(role: str, k: str) -> int:
        return after[role][k] - before[role][k]

    # Honest provider: paid for job A (withdrawn), stake intact.
    assert delta("provider", "usd") == pay_a - fee_a
    assert after["provider"]["credit"] == 0
    p = MarketParams(*h.market.functions.params().call())
    reward = min(slash * p.challenger_reward_bps // 10_000, p.max_challenger_reward)
    committee = slash * p.committee_reward_bps // 10_000
    # Cheater: slashed its job's whole collateral, jailed, paid nothing.
    assert delta("cheater", "staked") == -slash
    assert delta("cheater", "usd") == 0 and after["cheater"]["credit"] == 0
    assert cheater_info[1] == 0  # collateral unlocked
    assert cheater_info[4] > now  # jailedUntil
    assert h.staking.functions.isActive(acc["cheater"].address).call() is False
    # Verifier: the bounded challenger reward (withdrawn in HST); its bond came back.
    assert delta("verifier", "hst") == reward
    assert delta("verifier", "usd") == 0 and after["verifier"]["credit"] == 0
    assert delta("verifier", "staked") == 0
    # Committee members: their share of the slash by seats, withdrawn; their bonds released.
    for role in ("provider", "verifier2"):
        n_seats = sum(1 for a in seats if a == acc[role].address)
        assert delta(role, "hst") == committee * n_seats // 3
        assert delta(role, "staked") == 0 and after[role]["reward"] == 0
    # The treasury keeps the rest of the slash.
    paid = sum(committee * sum(1 for a in seats if a == acc[r].address) // 3 for r in ("provider", "verifier2"))
    assert after["treasury"]["reward"] == slash - reward - paid
    # Client: paid job A only; job B's escrow came back in full (credited in the market).
    assert delta("client", "usd") == -2 * USD
    assert after["client"]["credit"] == (USD - pay_a) + USD
    assert delta("treasury", "credit") == fee_a

    # A jailed cheater can take no more jobs.
    job_c, _ = post_job(["After the slash."])
    assert cheater.tick().claimed == []
    assert h.status(job_c) == Status.POSTED
    assert MarketParams(*h.market.functions.params().call()).challenge_bond == BOND
