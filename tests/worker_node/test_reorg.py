"""A provider node whose receipt is reorged out of the chain delivers it again."""

from __future__ import annotations

from typing import Any

from contracts.types import Status
from tests.worker_node.conftest import job_logs
from worker.node.state import JobRow, Phase


def test_node_resubmits_a_receipt_that_a_reorg_dropped(fresh: Any, chain: Any, make_node: Any, post_job: Any) -> None:
    h = fresh.hearth
    job_id, _ = post_job(["a receipt that disappears in a reorg"])
    snaps: dict[str, str] = {}

    def checkpoint(name: str, ids: list[int]) -> None:
        if name == "after_claim":
            snaps["claimed"] = chain.snapshot()

    node = make_node("provider", checkpoint=checkpoint)
    assert node.tick().delivered == [job_id]
    assert h.job(job_id).status == Status.DELIVERED

    # The chain goes back to just after the claim: the receipt transaction is gone.
    chain.revert(snaps["claimed"])
    h.sender(fresh.accounts["provider"].key).resync()
    assert h.job(job_id).status == Status.CLAIMED

    node.tick()  # notices the dropped receipt
    node.tick()  # and delivers it again
    job = h.job(job_id)
    assert job.status == Status.DELIVERED and job.provider == fresh.accounts["provider"].address
    assert len(job_logs(h, "ReceiptSubmitted", job_id)) == 1
    row = node.state.get(JobRow, job_id)
    assert row is not None and row.phase == Phase.DELIVERED


def test_a_claim_that_a_reorg_dropped_is_claimed_again(fresh: Any, chain: Any, make_node: Any, post_job: Any) -> None:
    h = fresh.hearth
    job_id, _ = post_job(["a claim that disappears in a reorg"])
    before = chain.snapshot()
    node = make_node("provider")
    assert node.tick().delivered == [job_id]

    chain.revert(before)  # claim and receipt are gone: the job is posted again
    h.sender(fresh.accounts["provider"].key).resync()
    chain.mine(5)  # the new branch is longer than the one the node saw
    assert h.job(job_id).status == Status.POSTED

    rep = node.tick()  # the reconciler sends the record back to the candidates; the provider claims again
    assert rep.claimed == [job_id] and rep.delivered == [job_id]
    assert len(job_logs(h, "JobClaimed", job_id)) == 1
    assert h.job(job_id).status == Status.DELIVERED
    row = node.state.get(JobRow, job_id)
    assert row is not None and row.phase == Phase.DELIVERED
