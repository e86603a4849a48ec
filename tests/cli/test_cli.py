"""The `hearth` CLI against the session devnet: one job through post, claim, deliver and
finalize with the balances that moved, and bad input answered with one line and exit 1."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from deploy import accounts as accts
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
    from deploy.cli import HST_DECIMALS, fmt

    collateral = cli_env.hearth.job(job_id).collateral  # the base plus a share of the escrow
    assert f"collateral locked: {fmt(collateral, HST_DECIMALS)} HST" in r.output

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
