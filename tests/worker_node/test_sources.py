"""Where a provider finds posted jobs: the market's ``JobPosted`` logs by default, a gateway's
public job list when one is configured, and the chain again whenever that list cannot be read.
(The gateway source against a real gateway: ``tests/gateway/test_gateway_job_source.py``.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from contracts import jobio
from deploy.devnet import free_port
from worker.node.config import NodeConfig
from worker.node.errors import JobSourceError
from worker.node.node import Node
from worker.node.service import build_node
from worker.node.sources import Candidate, GatewayJobSource
from worker.node.state import CandidateRow, CandidateState
from worker.settings import WorkerSettings


def _node(fresh: Any, tmp_path: Path, store: Any, executor: Any, **settings: Any) -> Any:
    s = WorkerSettings(data_dir=tmp_path, gpu_class="cpu", **settings)
    return build_node(s, fresh.accounts["provider"].key, hearth=fresh.hearth, store=store, executor=executor)


def test_without_a_gateway_the_node_reads_posted_jobs_from_the_chain(
    fresh: Any, tmp_path: Path, store: Any, executor: Any, post_job: Any
) -> None:
    node = _node(fresh, tmp_path, store, executor)
    try:
        assert node.provider.source.name == "chain"
        job_id, _ = post_job(["found in the logs"])
        assert node.tick().delivered == [job_id]
    finally:
        node.close()


def test_a_gateway_that_cannot_be_read_makes_the_node_fall_back_to_the_chain(
    fresh: Any, tmp_path: Path, store: Any, executor: Any, post_job: Any
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    node = _node(fresh, tmp_path, store, executor, gateway_url=dead)
    try:
        assert node.provider.source.name == "gateway"
        job_id, _ = post_job(["the gateway is down"])
        assert node.tick().delivered == [job_id]
        assert node.provider.source.name == "chain"
    finally:
        node.close()


def test_an_unreachable_gateway_is_a_job_source_error_naming_the_url() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    source = GatewayJobSource(url, [b"\x01" * 32], timeout=2)
    with pytest.raises(JobSourceError, match=f"cannot read posted jobs from {url}/v1/jobs"):
        source.poll(0)
    source.close()


class ListedAhead:
    """A job list that names a job before this node's view of the chain holds it (a gateway's
    index can be a block ahead of the tick's read)."""

    name = "ahead"

    def __init__(self, candidate: Candidate) -> None:
        self.candidate = candidate

    def poll(self, safe_block: int) -> list[Candidate]:
        return [self.candidate]


def test_a_job_listed_before_the_node_sees_it_on_chain_is_kept_and_claimed_later(
    fresh: Any, tmp_path: Path, store: Any, executor: Any, post_job: Any
) -> None:
    h = fresh.hearth
    texts = ["listed one block early"]
    next_id = int(h.market.functions.jobCount().call()) + 1
    now = int(h.w3.eth.get_block("latest")["timestamp"])
    listed = Candidate(next_id, jobio.input_hash(jobio.encode_input(texts)), now + 3600)
    node = Node(h, fresh.accounts["provider"].key, store, executor, NodeConfig(name="provider"),
                state_dir=tmp_path / "state", job_source=ListedAhead(listed))
    try:
        assert node.tick().claimed == []
        row = node.state.get(CandidateRow, next_id)
        assert row is not None and row.state == CandidateState.OPEN
        job_id, _ = post_job(texts)
        assert job_id == next_id
        assert node.tick().delivered == [job_id]
    finally:
        node.close()
