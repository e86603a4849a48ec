"""The `hearth` CLI against the session devnet: one job through post, claim, deliver and
finalize with the balances that moved, and bad input answered with one line and exit 1."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from common import accounts as accts
from deploy.cli import app

runner = CliRunner()


@pytest.fixture
def cli_env(fresh: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("HEARTH_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("HEARTH_MANIFEST", raising=False)
    fresh.manifest.save(tmp_path / "manifest.json")
    accts.save(fresh.accounts, tmp_path / "devnet-accounts.json")
    return fresh


def run(*args: str) -> Any:
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_one_job_goes_through_post_claim_deliver_and_finalize_with_balances_shown(cli_env: Any, chain: Any) -> None:
    r = run("job", "post", "--text", "hello hearth", "--text", "a second sentence", "--approve", "--as", "client")
    assert r.exit_code == 0, r.output
    job_id = int(re.search(r"posted job (\d+)", r.output).group(1))  # type: ignore[union-attr]
    assert "balances that moved" in r.output and "client" in r.output

    r = run("job", "claim", str(job_id), "--as", "provider")
    assert r.exit_code == 0, r.output
    job = cli_env.hearth.job(job_id)
    assert job.collateral == cli_env.hearth.market_params().collateral_for(job.max_payment)
    assert job.collateral > 10 * 10**18, "collateral scales with the job's value"
    assert f"collateral locked: {job.collateral / 10**18:.6f} HST" in r.output

    r = run("job", "deliver", str(job_id), "--as", "provider")
    assert r.exit_code == 0, r.output
    units = int(re.search(r"units (\d+)", r.output).group(1))  # type: ignore[union-attr]

    chain.advance(601)
    h = cli_env.hearth
    provider = cli_env.accounts["provider"].address
    before = h.market.functions.balanceOf(provider).call()
    r = run("job", "finalize", str(job_id), "--as", "client")
    assert r.exit_code == 0, r.output
    payment = units * 100  # the devnet price per token
    fee = payment * 500 // 10_000
    assert fee > 0
    assert h.market.functions.balanceOf(provider).call() - before == payment - fee
    assert "finalized job" in r.output and "provider" in r.output and "treasury" in r.output

    r = run("job", "status", str(job_id))
    assert "finalized" in r.output
    for name in ("JobPosted", "JobClaimed", "ReceiptSubmitted", "JobFinalized"):
        assert name in r.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("provider", "info", "0x1234"), "not an address"),
        (("job", "status", "999999"), "unknown job 999999"),
        (("job", "post", "--text", "x", "--model", "0x" + "ab" * 32, "--as", "client"), "unknown model"),
        (("job", "post", "--text", "x", "--max-payment", "1000000000", "--as", "client"), "insufficient hUSD balance"),
        (("job", "post", "--text", "x", "--max-payment", "1", "--as", "client"), "insufficient allowance"),
        (("job", "claim", "1", "--as", "nobody"), "unknown devnet role"),
        (("provider", "stake", "0", "--as", "provider"), "amount must be positive"),
        (("provider", "stake", "ten", "--as", "provider"), "not an amount"),
    ],
)
def test_bad_input_gets_one_clear_line_and_exit_code_1(cli_env: Any, args: tuple[str, ...], message: str) -> None:
    r = runner.invoke(app, list(args))
    assert r.exit_code == 1, r.output
    assert message in r.output
    assert "Traceback" not in r.output


def test_wrong_chain_is_named(cli_env: Any, tmp_path: Path) -> None:
    m = cli_env.manifest.model_copy(update={"chain_id": 1})
    m.save(tmp_path / "manifest.json")
    r = runner.invoke(app, ["model", "list"])
    assert r.exit_code == 1
    assert "wrong chain" in r.output


def test_missing_devnet_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEARTH_DATA_DIR", str(tmp_path / "nothing"))
    r = runner.invoke(app, ["model", "list"])
    assert r.exit_code == 1
    assert "no deployment manifest" in r.output


def test_deliver_accepts_every_input_the_worker_accepts_and_refuses_the_rest_in_one_line(
    cli_env: Any, tmp_path: Path,
) -> None:
    """`hearth job deliver` runs the worker's own compute path: a job posted as a bare JSON
    string (a valid input the CLI's old copy refused) is delivered with the worker's output."""
    from common.blobs import LocalBlobStore
    from contracts import jobio
    from deploy.demo import post_embedding_job
    from worker.node.compute import ComputeRequest, ComputeResult, compute_jobs, shared_encoder

    h = cli_env.hearth
    store = LocalBlobStore(tmp_path / "blobs")
    client = cli_env.accounts["client"].key
    data = b'"one text, posted as a bare JSON string"'
    blob = store.put(data)
    now = int(h.w3.eth.get_block("latest")["timestamp"])
    model_id = bytes.fromhex(h.manifest.models[0].model_id.removeprefix("0x"))
    h.approve_usd(client, 10**6)
    job_id, _ = h.post_job(client, model_id, jobio.input_hash(data), 10**6, now + 3600)
    assert run("job", "claim", str(job_id), "--as", "provider").exit_code == 0
    r = run("job", "deliver", str(job_id), "--as", "provider")
    assert r.exit_code == 0, r.output
    [expected] = compute_jobs([ComputeRequest(job_id, blob)], store, shared_encoder("torch", "fp32"))
    assert isinstance(expected, ComputeResult)
    assert h.job(job_id).output_hash == expected.output_hash
    assert f"units {expected.units}" in r.output

    bad, _ = post_embedding_job(h, store, client, ["fine for now"], 10**6)
    job = h.job(bad)
    broken = b'{"texts": "not a list"}'  # filed under the job's input id: the store checks the hash
    (store.path(job.input_hash)).write_bytes(broken)
    assert run("job", "claim", str(bad), "--as", "provider").exit_code == 0
    r = runner.invoke(app, ["job", "deliver", str(bad), "--as", "provider"])
    assert r.exit_code == 1 and "cannot be run" in r.output and "Traceback" not in r.output, r.output
