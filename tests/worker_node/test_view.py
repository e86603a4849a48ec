"""The market view of a tick: job records folded from one incremental, chunked log scan, equal
to the chain's after every tick, and folded again after a reorg."""

from __future__ import annotations

from typing import Any

import pytest

from contracts.types import Status
from worker.node.view import MarketView


def _count_get_logs(h: Any, monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    calls: list[tuple[int, int]] = []
    real = h.w3.eth.get_logs

    def counting(params: Any) -> Any:
        calls.append((int(params["fromBlock"]), int(params["toBlock"])))
        return real(params)

    monkeypatch.setattr(h.w3.eth, "get_logs", counting)
    return calls


def _refresh(view: MarketView, h: Any) -> None:
    head = h.w3.eth.get_block("latest")
    view.refresh(int(head["number"]), bytes(head["hash"]))


def test_the_view_reads_each_block_once_in_chunks_and_holds_the_chains_records(
    fresh: Any, chain: Any, post_job: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = fresh.hearth
    jobs = [post_job([f"job {i}"])[0] for i in range(3)]
    h.claim(fresh.accounts["provider"].key, jobs[0])
    calls = _count_get_logs(h, monkeypatch)
    view = MarketView(h, max_span=7)
    _refresh(view, h)
    head = h.w3.eth.block_number
    start = h.manifest.deployment_block
    assert calls[0][0] == start and calls[-1][1] == head
    assert all(b - a + 1 <= 7 for a, b in calls)  # chunks of at most max_span blocks
    assert len(calls) == -(-(head - start + 1) // 7)  # each block read exactly once
    assert [view.job(j) for j in jobs] == [h.job(j) for j in jobs]
    assert view.status(jobs[0]) == Status.CLAIMED and view.status(10**6) is None

    calls.clear()
    _refresh(view, h)
    assert calls == []  # nothing new: no log read at all
    chain.mine(2)
    h.claim(fresh.accounts["provider"].key, jobs[1])
    calls.clear()
    _refresh(view, h)
    assert calls[0][0] == head + 1  # from the block after the last one read
    assert view.job(jobs[1]) == h.job(jobs[1])


def test_a_reorg_under_the_view_makes_it_fold_the_canonical_chain_again(
    fresh: Any, chain: Any, post_job: Any
) -> None:
    h = fresh.hearth
    job_id, _ = post_job(["claimed on a fork that disappears"])
    view = MarketView(h)
    snap = chain.snapshot()
    rcpt = h.claim(fresh.accounts["provider"].key, job_id)
    view.apply(rcpt)  # the node folds its own mined claim at once
    _refresh(view, h)
    assert view.status(job_id) == Status.CLAIMED

    chain.revert(snap)  # the claim's block is gone ...
    h.sender(fresh.accounts["provider"].key).resync()
    chain.mine(3)  # ... and the chain is longer than before on another branch
    _refresh(view, h)
    assert view.status(job_id) == Status.POSTED
    assert view.job(job_id) == h.job(job_id)


def test_after_every_tick_the_nodes_view_equals_the_chain(
    fresh: Any, chain: Any, make_node: Any, post_job: Any
) -> None:
    h = fresh.hearth
    node = make_node("provider")
    jobs = [post_job([f"job {i}"])[0] for i in range(2)]
    node.tick()
    chain.advance(600)
    node.tick()
    assert [node.market.job(j) for j in jobs] == [h.job(j) for j in jobs]
    assert {node.market.status(j) for j in jobs} == {Status.FINALIZED}
