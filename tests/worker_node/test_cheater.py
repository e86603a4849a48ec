"""An honest node and a cheating node take jobs; a verifier re-executing every receipt catches
the cheater, the committee of the other staked providers votes by commit-reveal, and
resolveDispute slashes and jails the cheater while the honest node is paid."""

from __future__ import annotations

from typing import Any

from contracts.types import Status
from tests.worker_node.conftest import HST, USD, job_logs
from worker.model import output_hash
from worker.node.state import CheckRow, DisputeRow, JobRow, Phase

BOND = 5 * USD
SLASH = 50 * HST


def _snapshot(h: Any, acc: Any) -> dict[str, dict[str, int]]:
    out = {}
    for role in ("client", "provider", "cheater", "verifier", "verifier2", "treasury"):
        a = acc[role].address
        out[role] = {
            "usd": h.usd.functions.balanceOf(a).call(),
            "hst": h.hst.functions.balanceOf(a).call(),
            "staked": h.staking.functions.getProvider(a).call()[0],
            "credit": h.market.functions.balanceOf(a).call(),
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
    challenged = job_logs(h, "JobChallenged", job_b)[0].args
    committee = sorted(challenged["committee"])
    # Only two other active providers serve the model: the committee is both of them.
    assert committee == sorted([acc["provider"].address, acc["verifier2"].address])
    assert h.status(job_b) == Status.CHALLENGED

    # Commit phase: both committee members re-execute and commit; nobody else votes.
    committed = {n.config.name: n.tick().committed for n in everyone}
    assert committed == {"provider": [job_b], "cheater": [], "verifier": [], "verifier2": [job_b]}
    vote = honest.state.get(DisputeRow, job_b)
    assert vote is not None and vote.vote == "committed" and vote.salt
    # A second pass in the same phase does nothing more.
    assert all(n.tick().committed == [] for n in everyone)

    chain.advance(300)  # reveal phase
    revealed = {n.config.name: n.tick().revealed for n in everyone}
    assert revealed == {"provider": [job_b], "cheater": [], "verifier": [], "verifier2": [job_b]}
    # Both voted the honest output of job B, which is not the cheater's.
    honest_b = output_hash(encoder.encode(["A cheated answer."]))
    reveals = {
        ev["args"]["voter"]: bytes(ev["args"]["outputHash"])
        for ev in honest.reader.logs(["VoteRevealed"], h.manifest.deployment_block, h.w3.eth.block_number)
    }
    assert reveals == {acc["provider"].address: honest_b, acc["verifier2"].address: honest_b}
    assert h.job(job_b).output_hash != honest_b

    chain.advance(300)  # dispute over: the first node to look resolves it, the others see it done
    resolved = [j for n in everyone for j in n.tick().resolved]
    assert resolved == [job_b]
    res = job_logs(h, "DisputeResolved", job_b)[0].args
    assert res["providerWon"] is False and res["escalated"] is False and res["slashed"] == SLASH
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
    assert delta("provider", "staked") == 0 and after["provider"]["credit"] == 0
    # Cheater: slashed 50 HST from its stake, jailed, paid nothing.
    assert delta("cheater", "staked") == -SLASH
    assert delta("cheater", "usd") == 0 and after["cheater"]["credit"] == 0
    assert cheater_info[1] == 0  # collateral unlocked
    assert cheater_info[4] > now  # jailedUntil
    assert h.staking.functions.isActive(acc["cheater"].address).call() is False
    # Verifier: receives the slashed stake; its bond came back (and was withdrawn).
    assert delta("verifier", "hst") == SLASH
    assert delta("verifier", "usd") == 0 and after["verifier"]["credit"] == 0
    assert delta("verifier", "staked") == 0
    # Committee member verifier2: unchanged.
    assert after["verifier2"] == before["verifier2"]
    # Client: paid job A only; job B's escrow came back in full (credited in the market).
    assert delta("client", "usd") == -2 * USD
    assert after["client"]["credit"] == (USD - pay_a) + USD
    assert delta("treasury", "credit") == fee_a

    # A jailed cheater can take no more jobs.
    job_c, _ = post_job(["After the slash."])
    assert cheater.tick().claimed == []
    assert h.status(job_c) == Status.POSTED
    assert h.market.functions.params().call()[2] == BOND
