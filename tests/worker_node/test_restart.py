"""A node killed mid-way and restarted loses nothing and does nothing twice: every job has
exactly one claim, one receipt and one finalization on chain, and the operator sent no
transaction beyond those (its nonce counts them)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from common import accounts as accts
from contracts.types import Status
from tests.worker_node.conftest import job_logs
from worker.node.state import JobRow, Phase

ROOT = Path(__file__).resolve().parents[2]


class Crash(BaseException):
    """Stands for the process dying: nothing after it runs (not even ``except Exception``)."""


def _node_process(data_dir: Path, *args: str, crash_at: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HEARTH_DATA_DIR": str(data_dir), "HEARTH_WORKER_WITHDRAW_INTERVAL_S": "0"}
    env.pop("HEARTH_WORKER_BROKER_URL", None)
    command = ["-m", "tests.worker_node.crashing_node", crash_at] if crash_at else ["-m", "worker", "run"]
    return subprocess.run(
        [sys.executable, *command, "--devnet-role", "provider", "--once", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def data_dir(fresh: Any, tmp_path: Path) -> Path:
    fresh.manifest.save(tmp_path / "manifest.json")
    accts.save(fresh.accounts, tmp_path / "devnet-accounts.json")
    return tmp_path


def _counts(h: Any, job_id: int) -> tuple[int, int, int]:
    return (
        len(job_logs(h, "JobClaimed", job_id)),
        len(job_logs(h, "ReceiptSubmitted", job_id)),
        len(job_logs(h, "JobFinalized", job_id)),
    )


def test_node_killed_after_claim_resumes_and_claims_nothing_twice(fresh: Any, data_dir: Path, post_job: Any) -> None:
    h = fresh.hearth
    provider = fresh.accounts["provider"].address
    jobs = [post_job([f"text number {i}", "shared second text"])[0] for i in range(3)]
    nonce0 = h.w3.eth.get_transaction_count(provider)

    killed = _node_process(data_dir, crash_at="after_claim")
    assert killed.returncode == 137, killed.stderr[-3000:]
    assert [h.status(j) for j in jobs] == [Status.CLAIMED] * 3
    assert [_counts(h, j) for j in jobs] == [(1, 0, 0)] * 3

    again = _node_process(data_dir)
    assert again.returncode == 0, again.stderr[-3000:]
    assert [h.status(j) for j in jobs] == [Status.DELIVERED] * 3
    assert [_counts(h, j) for j in jobs] == [(1, 1, 0)] * 3
    assert h.w3.eth.get_transaction_count(provider) == nonce0 + 6  # 3 claims + 3 receipts, nothing else


def test_node_killed_after_receipt_restarts_without_resubmitting_and_finalizes(
    fresh: Any, chain: Any, data_dir: Path, post_job: Any
) -> None:
    h = fresh.hearth
    provider = fresh.accounts["provider"].address
    jobs = [post_job([f"job {i}"])[0] for i in range(2)]
    nonce0 = h.w3.eth.get_transaction_count(provider)
    usd0 = h.usd.functions.balanceOf(provider).call()

    killed = _node_process(data_dir, crash_at="after_receipt")
    assert killed.returncode == 137, killed.stderr[-3000:]
    assert [_counts(h, j) for j in jobs] == [(1, 1, 0)] * 2

    again = _node_process(data_dir)  # inside the window: nothing to do
    assert again.returncode == 0, again.stderr[-3000:]
    assert h.w3.eth.get_transaction_count(provider) == nonce0 + 4

    chain.advance(600)
    final = _node_process(data_dir)
    assert final.returncode == 0, final.stderr[-3000:]
    assert [h.status(j) for j in jobs] == [Status.FINALIZED] * 2
    assert [_counts(h, j) for j in jobs] == [(1, 1, 1)] * 2
    assert h.w3.eth.get_transaction_count(provider) == nonce0 + 2 + 2 + 2 + 1  # + one withdrawal
    paid = sum(e.args["providerAmount"] for j in jobs for e in job_logs(h, "JobFinalized", j))
    assert h.usd.functions.balanceOf(provider).call() == usd0 + paid
    assert "finalized" in final.stderr and "withdrew" in final.stderr


@pytest.mark.parametrize("step", ["claimJob", "submitReceipt"])
def test_crash_between_a_mined_transaction_and_its_state_write_is_recovered_from_the_chain(
    fresh: Any, make_node: Any, post_job: Any, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    h = fresh.hearth
    provider = fresh.accounts["provider"].address
    job_id, _ = post_job(["crash in the window"])
    nonce0 = h.w3.eth.get_transaction_count(provider)
    sender = h.sender(fresh.accounts["provider"].key)
    real = sender.wait

    def mined_then_dead(pending: Any, *a: Any, **kw: Any) -> Any:
        rcpt = real(pending, *a, **kw)
        if pending.fn.fn_name == step:
            raise Crash  # the transaction is mined; the process dies before it records that
        return rcpt

    monkeypatch.setattr(sender, "wait", mined_then_dead)
    first = make_node("provider")
    with pytest.raises(Crash):
        first.tick()
    row = first.state.get(JobRow, job_id)
    assert row is not None and row.phase == (Phase.CLAIMING if step == "claimJob" else Phase.SUBMITTING)
    first.close()
    monkeypatch.undo()

    restarted = make_node("provider")
    restarted.tick()
    assert h.status(job_id) == Status.DELIVERED
    assert _counts(h, job_id) == (1, 1, 0)
    assert h.w3.eth.get_transaction_count(provider) == nonce0 + 2
    assert restarted.state.get(JobRow, job_id).phase == Phase.DELIVERED  # type: ignore[union-attr]


def test_committee_member_killed_after_its_commit_reveals_with_the_kept_salt(
    fresh: Any, chain: Any, make_node: Any, post_job: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    h, acc = fresh.hearth, fresh.accounts
    cheater = make_node("cheater", cheat=True)
    verifier = make_node("verifier", role="verifier", sample_all=True)
    job_id, _ = post_job(["disputed"])
    cheater.tick()
    assert verifier.tick().challenged == [job_id]
    chain.mine(3)
    verifier.tick()  # draws the committee
    seat = h.market.functions.committee(job_id).call()[0]
    role = next(r for r in ("provider", "verifier2") if acc[r].address == seat)
    member = make_node(role)
    sender = h.sender(acc[role].key)
    real_send = sender.send

    def send_then_die(fn: Any, **kw: Any) -> Any:
        rcpt = real_send(fn, **kw)
        if fn.fn_name == "commitVote":
            raise Crash
        return rcpt

    monkeypatch.setattr(sender, "send", send_then_die)
    with pytest.raises(Crash):
        member.tick()
    monkeypatch.undo()
    member.close()
    nonce = h.w3.eth.get_transaction_count(acc[role].address)

    restarted = make_node(role)
    assert restarted.tick().committed == []  # already on chain: not sent again
    assert h.w3.eth.get_transaction_count(acc[role].address) == nonce
    chain.advance(300)
    assert restarted.tick().revealed == [job_id]  # the salt survived the crash
    votes = list(
        restarted.reader.logs(["VoteCommitted", "VoteRevealed"], h.manifest.deployment_block, h.w3.eth.block_number)
    )
    assert sorted(v["event"] for v in votes if v["args"]["voter"] == acc[role].address) == [
        "VoteCommitted",
        "VoteRevealed",
    ]
