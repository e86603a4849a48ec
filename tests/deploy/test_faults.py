"""The fault-injection run (``bench/faults.py``) with a small N: two providers, each with its
embedding batches on a Celery worker of its own (Redis database 11), and the gateway serve 200
embedding requests from four clients (the bench adds SmolLM2 chat completions: here they would
cost more time than they test) while a seeded scheduler SIGKILLs and restarts a provider and the
gateway and the indexer, SIGKILLs Celery pool processes (busy ones when it can), SIGSTOPs a
provider past the gateway's timeout and reorganises the chain (dropping the transactions of the
last blocks), behind a flaky RPC proxy. Then,
from the chain and the databases: nothing answered is lost or paid twice, nothing unanswered is
charged, the money adds up to the wei, the index equals a fresh index of the chain, and no
process is left."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest
from backing_services import ensure_redis

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.redis]
KILLS = {"provider_kill": 2, "gateway_kill": 2, "indexer_kill": 1, "provider_stop": 2, "reorg": 2, "celery_kill": 3}
REDIS_DB = 11


@pytest.fixture(scope="module")
def result() -> dict[str, Any]:
    # Loaded from its file: bench/ on sys.path would shadow the gateway and indexer packages
    # with bench/gateway.py and bench/indexer.py.
    spec = importlib.util.spec_from_file_location("bench_faults", ROOT / "bench" / "faults.py")
    assert spec is not None and spec.loader is not None
    faults = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = faults  # its dataclasses look their module up there
    spec.loader.exec_module(faults)
    broker = ensure_redis(REDIS_DB)
    try:
        return dict(faults.run(n=200, clients=4, seed=11, kills=KILLS, chat_share=0.0, broker_url=broker,
                               log=lambda _: None))
    finally:
        import redis

        redis.Redis.from_url(broker).flushdb()


def test_every_fault_kind_happened_while_requests_were_answered(result: dict[str, Any]) -> None:
    assert result["kills"] == KILLS
    assert sum(result["rpc_faults"].values()) > 0
    assert result["requests"] == 200
    assert result["requests_answered"] > 0
    # The Celery kills hit pool processes that the masters replaced (each one a lost process in their logs).
    assert result["celery_pool_processes_lost"] == KILLS["celery_kill"]


def test_nothing_answered_is_lost_and_nothing_is_paid_twice(result: dict[str, Any]) -> None:
    c = result["checks"]
    assert c["charged_but_unanswered"] == 0
    assert c["answered_but_unrecorded"] == 0
    assert c["answered_not_in_a_committed_batch"] == 0
    assert c["answer_names_another_provider"] == 0
    assert c["second_leaf_at_the_paid_provider"] == 0
    assert c["batches_not_matching_chain_or_bad_proofs"] == 0
    assert c["lanes_overpaid_wei"] == {} and c["lanes_unsettled_wei"] == {}
    assert result["requests_lost"] == 0 and result["paid_twice"] == 0


def test_the_money_adds_up_to_the_wei(result: dict[str, Any]) -> None:
    c = result["checks"]
    assert c["keys_charged_equal_served_value"] is True
    assert c["escrow_tokens_equal_deposits_lanes_bonds"] is True
    assert c["lane_balance_plus_collected_equals_allocation"] is True
    assert c["providers_received_what_they_collected"] is True
    assert c["client_paid_its_deposit_only"] is True


def test_the_index_equals_a_fresh_index_of_the_chain(result: dict[str, Any]) -> None:
    assert result["checks"]["index_equals_a_fresh_index_of_the_chain"] is True, result["checks"]["index_differences"]
    assert result["checks"]["index_rows_compared"] > 0


def test_no_process_of_the_run_is_left(result: dict[str, Any]) -> None:
    # six services (two of them Celery workers), plus the restarts of the provider, gateway and indexer kills
    assert result["processes_started"] >= 6 + KILLS["provider_kill"] + KILLS["gateway_kill"] + KILLS["indexer_kill"]
    assert result["processes_left"] == 0
