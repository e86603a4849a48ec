"""Verifier sampling with the protocol's randomness, and a dispute the provider wins."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from eth_hash.auto import keccak

from contracts.types import MarketParams, Outcome, Status
from tests.worker_node.conftest import job_logs
from worker.node.state import CheckRow, DisputeRow, JobRow, Phase


def _set_sample_rate(fresh: Any, rate_bps: int) -> None:
    h = fresh.hearth
    p = h.market.functions.params().call()
    params = replace(MarketParams(*p), sample_rate_bps=rate_bps)
    owner = h.sender(fresh.accounts["deployer"].key)
    owner.send(h.market.functions.proposeParams(params.as_tuple()))
    h.w3.provider.make_request("evm_increaseTime", [int(h.market.functions.PARAMS_DELAY().call())])
    h.w3.provider.make_request("anvil_mine", ["0x1"])
    owner.send(h.market.functions.applyParams(params.as_tuple()))


@pytest.mark.parametrize("rate_bps", [0, 10_000])
def test_verifier_samples_receipts_by_the_hash_of_the_block_after_them(
    fresh: Any, chain: Any, make_node: Any, post_job: Any, rate_bps: int
) -> None:
    _set_sample_rate(fresh, rate_bps)
    h = fresh.hearth
    cheater = make_node("cheater", cheat=True)
    verifier = make_node("verifier", role="verifier")
    job_id, _ = post_job(["sampled or not"])
    assert cheater.tick().delivered == [job_id]

    # The block after the receipt does not exist yet: the draw cannot be made, nothing happens.
    rep = verifier.tick()
    assert rep.verified == [] and rep.challenged == []
    assert verifier.state.get(CheckRow, job_id).verdict == "pending"  # type: ignore[union-attr]

    chain.mine()
    rep = verifier.tick()
    row = verifier.state.get(CheckRow, job_id)
    assert row is not None
    if rate_bps == 0:
        assert row.verdict == "unsampled" and rep.challenged == []
        assert h.status(job_id) == Status.DELIVERED
    else:
        assert rep.verified == [job_id] and rep.challenged == [job_id]
        assert row.verdict == "challenged"
        assert h.status(job_id) == Status.CHALLENGED


def test_sample_draw_is_keccak_of_a_private_secret_the_next_block_hash_and_the_job_id(
    fresh: Any, chain: Any, make_node: Any
) -> None:
    verifier = make_node("verifier", role="verifier").verifier
    other = make_node("verifier2", role="verifier").verifier
    chain.mine(3)
    block = fresh.hearth.w3.eth.block_number - 2
    nxt = bytes(fresh.hearth.w3.eth.get_block(block + 1)["hash"])
    secret = keccak(b"hearth verifier sampling" + bytes.fromhex(fresh.accounts["verifier"].key.removeprefix("0x")))
    public, differs = 0, 0
    for job_id in range(1, 40):
        draw = int.from_bytes(keccak(secret + nxt + job_id.to_bytes(32, "big")), "big") % 10_000
        assert verifier.sampled(job_id, block, 5000) == (draw < 5000)
        assert verifier.sampled(job_id, block, draw + 1) and not verifier.sampled(job_id, block, draw)
        # Without the secret (what a provider can compute) the draw says nothing.
        public += int.from_bytes(keccak(nxt + job_id.to_bytes(32, "big")), "big") % 10_000 == draw
        differs += verifier.sampled(job_id, block, 5000) != other.sampled(job_id, block, 5000)
    assert public == 0 and differs > 0  # each verifier's sample is its own


def test_wrong_challenge_is_voted_down_and_the_provider_gets_the_bond(
    fresh: Any, chain: Any, make_node: Any, post_job: Any
) -> None:
    h, acc = fresh.hearth, fresh.accounts
    honest = make_node("provider")
    bad_verifier = make_node("verifier", role="verifier", sample_all=True, cheat=True)  # recomputes wrongly
    others = [make_node("verifier2", role="verifier"), make_node("cheater")]  # honest committee members
    job_id, _ = post_job(["an honest receipt"])
    assert honest.tick().delivered == [job_id]
    assert bad_verifier.tick().challenged == [job_id]
    chain.mine(3)
    bad_verifier.tick()  # the challenger draws the committee once the draw block is past
    for n in (honest, *others):
        n.tick()
    chain.advance(300)
    for n in (honest, *others):
        n.tick()
    chain.advance(300)
    reports = {n.config.name: n.tick() for n in (bad_verifier, honest, *others)}
    assert [j for r in reports.values() for j in r.resolved] == [job_id]
    res = job_logs(h, "DisputeResolved", job_id)[0].args
    assert (res["outcome"], res["slashed"]) == (Outcome.PROVIDER_WON, 0)
    # The receipt stood and its window closed at the resolution: the provider, looking after
    # the verifier resolved it, finalizes in the same pass and withdraws.
    rep = reports["provider"]
    assert rep.finalized == [job_id]
    pay = job_logs(h, "ReceiptSubmitted", job_id)[0].args["payment"]
    p = MarketParams(*h.market.functions.params().call())
    bond_rest = p.challenge_bond - p.challenge_bond * p.committee_reward_bps // 10_000
    assert rep.withdrawn == pay - pay * 500 // 10_000 + bond_rest  # earnings + the bond less the committee's share
    assert h.status(job_id) == Status.FINALIZED
    assert honest.state.get(JobRow, job_id).phase == Phase.FINALIZED  # type: ignore[union-attr]
    assert bad_verifier.state.get(DisputeRow, job_id).outcome == "provider won"  # type: ignore[union-attr]
    assert h.staking.functions.isActive(acc["provider"].address).call() is True
