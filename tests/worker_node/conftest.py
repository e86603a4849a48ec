"""Fixtures of the worker-node tests: the session devnet (reverted after each test), a local
blob store, one in-process encoder for the whole session (CPU torch path), and node and job
factories."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from common.blobs import LocalBlobStore
from deploy.demo import CheatingExecutor, post_embedding_job
from worker.node.compute import shared_encoder
from worker.node.config import Checkpoint, NodeConfig
from worker.node.executor import InProcessExecutor
from worker.node.node import Node

USD = 10**6
HST = 10**18


@pytest.fixture(scope="session")
def encoder() -> Any:
    return shared_encoder("torch", "fp32", "cpu")


@pytest.fixture
def store(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "blobs")


@pytest.fixture
def executor(store: LocalBlobStore, encoder: Any) -> InProcessExecutor:
    return InProcessExecutor(store, encoder)


@pytest.fixture
def make_node(
    fresh: Any, store: LocalBlobStore, executor: InProcessExecutor, tmp_path: Path
) -> Iterator[Callable[..., Node]]:
    """``make_node("provider", cheat=True, ...)``: a node for that devnet account; ``cheat``
    gives it a :class:`~deploy.demo.CheatingExecutor` (perturbed outputs), ``checkpoint`` a
    hook called after each step; other keywords go to :class:`NodeConfig`."""
    made: list[Node] = []

    def make(who: str, *, cheat: bool = False, checkpoint: Checkpoint | None = None, **cfg: Any) -> Node:
        cfg.setdefault("withdraw_interval_s", 0)
        n = Node(
            fresh.hearth,
            fresh.accounts[who].key,
            store,
            CheatingExecutor(executor, store) if cheat else executor,
            NodeConfig(name=who, **cfg),
            state_dir=tmp_path / "state",
            checkpoint=checkpoint,
        )
        made.append(n)
        return n

    yield make
    for n in made:
        n.close()


@pytest.fixture
def post_job(fresh: Any, store: LocalBlobStore) -> Callable[..., tuple[int, str]]:
    """``post_job(texts, max_payment=1 USD, client="client")`` -> (job id, input blob id)."""

    def post(texts: Any, max_payment: int = USD, client: str = "client", deadline_in_s: int = 3600) -> tuple[int, str]:
        return post_embedding_job(fresh.hearth, store, fresh.accounts[client].key, texts, max_payment, deadline_in_s)

    return post


def job_logs(h: Any, event: str, job_id: int) -> list[Any]:
    """Every ``event`` log of the market for ``job_id`` (a job lifecycle event)."""
    return [e for e in h.job_events(job_id) if e.name == event]
