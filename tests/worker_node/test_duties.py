"""The node as a composition root: duties by role, a duty that keeps failing stops the node with
its name and last error, and claims and receipts of one tick are pipelined (mined together)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import typer

from common import accounts as accts
from tests.worker_node.conftest import job_logs
from worker.node.compute import ComputeRequest, Outcome
from worker.node.errors import DutyFailedError


class FlakyExecutor:
    """The session executor, but the first ``failures`` runs raise as a broken GPU would."""

    def __init__(self, inner: Any, failures: int) -> None:
        self.inner = inner
        self.failures = failures
        self.model_hash = inner.model_hash
        self.runtime_hash = inner.runtime_hash

    def run(self, requests: Sequence[ComputeRequest], *, owner: str | None = None) -> list[Outcome]:
        if self.failures > 0:
            self.failures -= 1
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        out: list[Outcome] = self.inner.run(requests, owner=owner)
        return out


def test_duties_follow_the_role(make_node: Any) -> None:
    assert [d.name for d in make_node("provider").duties] == [
        "reconciler", "provider", "delivery", "committee", "resolver", "payout"]
    assert [d.name for d in make_node("verifier", role="verifier").duties] == [
        "reconciler", "verifier", "committee", "resolver", "payout"]
    both = make_node("verifier2", role="both")
    assert {"provider", "delivery", "verifier"} <= {d.name for d in both.duties}


def test_a_failing_duty_is_counted_while_the_others_run_and_a_success_resets_its_count(
    make_node: Any, executor: Any, post_job: Any, fresh: Any
) -> None:
    node = make_node("provider", max_duty_failures=3)
    node.op.executor = FlakyExecutor(executor, failures=2)
    job_id, _ = post_job(["computed on the third try"])
    reports = [node.tick(strict=False) for _ in range(2)]
    for rep in reports:
        assert set(rep.failed) == {"provider"} and "illegal memory access" in rep.failed["provider"]
    assert node.failures == {"provider": 2} and not node.healthy()
    assert reports[0].claimed == [job_id]  # claimed before the compute step failed
    rep = node.tick(strict=False)
    assert rep.failed == {} and rep.delivered == [job_id] and node.failures == {}
    assert node.healthy()


def test_a_duty_failing_max_duty_failures_ticks_in_a_row_stops_the_node_naming_it(
    make_node: Any, executor: Any, post_job: Any, caplog: pytest.LogCaptureFixture
) -> None:
    node = make_node("provider", max_duty_failures=3, poll_interval_s=0)
    node.op.executor = FlakyExecutor(executor, failures=100)
    post_job(["never computed"])
    with caplog.at_level(logging.ERROR), pytest.raises(DutyFailedError) as err:
        node.run(threading.Event())
    assert (err.value.duty, err.value.failures) == ("provider", 3)
    assert "duty 'provider' failed 3 ticks in a row; last error: RuntimeError: CUDA error" in str(err.value)
    assert any(r.levelno == logging.CRITICAL and "duty provider failed 3 ticks in a row" in r.getMessage()
               and "illegal memory access" in r.getMessage() for r in caplog.records)


def test_a_node_service_whose_duty_keeps_failing_stops_and_reports_unhealthy(
    make_node: Any, executor: Any, post_job: Any
) -> None:
    from worker.node.service import NodeService

    node = make_node("provider", max_duty_failures=2, poll_interval_s=0.05)
    node.op.executor = FlakyExecutor(executor, failures=100)
    post_job(["never computed"])
    svc = NodeService(node)
    svc.start()
    deadline = time.monotonic() + 30
    while svc.error is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert isinstance(svc.error, DutyFailedError) and svc.error.duty == "provider"
    assert not svc.healthy()
    svc.stop()


def test_the_worker_command_exits_non_zero_when_a_duty_keeps_failing(
    fresh: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from worker.cli import run_node, settings_from_options
    from worker.node.duties.payout import Payout

    fresh.manifest.save(tmp_path / "manifest.json")
    accts.save(fresh.accounts, tmp_path / "devnet-accounts.json")

    def broken(self: Any, ctx: Any) -> None:
        raise ConnectionError("withdraw RPC refused")

    monkeypatch.setattr(Payout, "run", broken)
    monkeypatch.setenv("HEARTH_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("HEARTH_WORKER_MAX_DUTY_FAILURES", "2")
    monkeypatch.setenv("HEARTH_WORKER_POLL_INTERVAL_S", "0")
    settings = settings_from_options(node_name="provider", gpu_class="cpu")
    assert settings.max_duty_failures == 2
    with caplog.at_level(logging.ERROR), pytest.raises(typer.Exit) as exit_:
        run_node(settings, None, "provider", once=False)
    assert exit_.value.exit_code == 1
    assert any("duty payout failed 2 ticks in a row; last error: withdraw RPC refused" in r.getMessage()
               for r in caplog.records)


def test_claims_and_receipts_of_one_tick_are_sent_together_and_mined_in_one_block(
    fresh: Any, chain: Any, make_node: Any, post_job: Any
) -> None:
    h = fresh.hearth
    jobs = [post_job([f"pipelined job {i}"])[0] for i in range(3)]
    node = make_node("provider")
    chain.rpc("evm_setAutomine", [False])
    chain.rpc("evm_setIntervalMining", [1])
    try:
        rep = node.tick()
    finally:
        chain.rpc("evm_setIntervalMining", [0])
        chain.rpc("evm_setAutomine", [True])
    assert rep.claimed == jobs and rep.delivered == jobs
    claim_blocks = {job_logs(h, "JobClaimed", j)[0].block_number for j in jobs}
    receipt_blocks = {job_logs(h, "ReceiptSubmitted", j)[0].block_number for j in jobs}
    assert len(claim_blocks) == 1 and len(receipt_blocks) == 1, (claim_blocks, receipt_blocks)
    assert min(receipt_blocks) > max(claim_blocks)
