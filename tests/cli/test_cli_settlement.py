"""The README walk of batched settlement with the `hearth` CLI on the session devnet: deposit,
authorize a signer, sign three receipts, aggregate, commit a batch, collect, challenge one leaf;
and bad input answered with one line and exit 1."""

from __future__ import annotations

import re
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Ran:
    exit_code: int
    output: str  # with Rich's line wrapping undone


def run(*args: str) -> Ran:
    r = runner.invoke(app, list(args), catch_exceptions=False)
    return Ran(r.exit_code, " ".join(r.output.split()))


def test_the_readme_walk_deposits_signs_aggregates_commits_collects_and_challenges(cli_env: Any) -> None:
    h = cli_env.hearth
    provider = cli_env.accounts["provider"].address
    client = cli_env.accounts["client"].address
    r = run("escrow", "deposit", "5", "--to", "provider", "--as", "client")
    assert r.exit_code == 0, r.output
    assert h.escrow.functions.getLane(client, provider).call()[0] == 5 * 10**6

    r = run("escrow", "authorize-signer", "--as", "client")
    assert r.exit_code == 0, r.output
    signer = re.search(r"authorized signer (0x[0-9a-fA-F]{40})", r.output).group(1)  # type: ignore[union-attr]
    assert h.escrow.functions.isValidSigner(client, signer).call() is True

    r = run("batch", "quote", "150", "--as", "provider")
    assert r.exit_code == 0, r.output
    for units in (100, 200, 300):
        r = run("escrow", "receipt", "--provider", "provider", "--units", str(units), "--as", "client")
        assert r.exit_code == 0, r.output
    r = run("escrow", "aggregate", "--provider", "provider", "--as", "client")
    assert r.exit_code == 0, r.output
    assert "cumulative 0.090000 hUSD (3 receipts added)" in r.output

    r = run("batch", "commit", "--as", "provider")
    assert r.exit_code == 0, r.output
    batch_id = int(re.search(r"committed batch (\d+): 3 receipts", r.output).group(1))  # type: ignore[union-attr]

    before = h.usd.functions.balanceOf(provider).call()
    r = run("escrow", "collect", "--as", "provider")
    assert r.exit_code == 0, r.output
    assert h.usd.functions.balanceOf(provider).call() - before == 90_000
    assert "collected 0.090000 hUSD" in r.output

    r = run("batch", "challenge", str(batch_id), "1", "--as", "verifier")
    assert r.exit_code == 0, r.output
    assert h.settlement.functions.leafCase(batch_id, 1).call()[0] == 3  # Disputed
    # The dispute game runs: nothing to resolve before the committee's draw, and governance
    # decides only escalated disputes.
    r = run("batch", "resolve", str(batch_id), "1", "--as", "relayer")
    assert r.exit_code == 1 and "dispute is still open" in r.output, r.output
    r = run("batch", "decide", str(batch_id), "1", "--fraud", "--as", "deployer")
    assert r.exit_code == 1 and "dispute was not escalated" in r.output, r.output
    r = run("batch", "draw", str(batch_id), "1", "--as", "relayer")
    # the seed's block is not mined yet
    assert r.exit_code == 1 and "committee can be drawn once block" in r.output, r.output
    h.w3.provider.make_request("anvil_mine", ["0x3"])  # type: ignore[arg-type]
    r = run("batch", "draw", str(batch_id), "1", "--as", "relayer")
    assert r.exit_code == 0 and "committee of 3 seats drawn" in r.output, r.output
    assert h.settlement.functions.leafCase(batch_id, 1).call()[0] == 3  # still Disputed: the committee votes


def test_settlement_commands_answer_bad_input_with_one_line(cli_env: Any) -> None:
    r = run("escrow", "deposit", "5", "--to", "nobody", "--as", "client")
    assert r.exit_code == 1 and "not an address or devnet role: 'nobody'" in r.output
    r = run("escrow", "receipt", "--provider", "provider", "--units", "10", "--as", "client")
    assert r.exit_code == 1 and "quotes no price" in r.output
    r = run("escrow", "collect", "--as", "provider")
    assert r.exit_code == 1 and "no vouchers held" in r.output
    r = run("batch", "commit", "--as", "provider")
    assert r.exit_code == 1 and "no uncommitted receipts" in r.output
    r = run("batch", "challenge", "7", "0", "--as", "verifier")
    assert r.exit_code == 1 and "batch 7 is not in" in r.output
    r = run("batch", "quote", str(10**9), "--as", "provider")
    assert r.exit_code == 1 and "above the ceiling" in r.output
    r = run("escrow", "deposit", "10000000", "--as", "client")
    assert r.exit_code == 1 and "insufficient hUSD balance" in r.output
