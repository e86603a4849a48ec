"""``hearth provider join`` and ``hearth provider status`` on the session devnet: joining writes
the endpoint, region and price on-chain (what gateways route by); bad input is one line."""

from __future__ import annotations

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


def run(*args: str) -> tuple[int, str]:
    r = runner.invoke(app, list(args), catch_exceptions=False)
    return r.exit_code, " ".join(r.output.split())


def test_joining_writes_the_endpoint_region_and_price_that_gateways_route_by(cli_env: Any) -> None:
    h = cli_env.hearth
    me = cli_env.accounts["verifier2"].address
    code, out = run("provider", "join", "--endpoint", "http://127.0.0.1:8101", "--region", "eu", "--price", "150",
                    "--as", "verifier2")
    assert code == 0, out
    p = h.staking.functions.getProvider(me).call()
    assert (p[6], p[7]) == ("http://127.0.0.1:8101", "eu")
    model = bytes.fromhex(cli_env.manifest.models[0].model_id[2:])
    assert h.settlement.functions.priceOf(me, model).call() == 150
    code, out = run("provider", "status", "--as", "verifier2")
    assert code == 0, out
    assert "active" in out and "price 150 per unit" in out and "endpoint not answering" in out


def test_joining_with_an_endpoint_no_gateway_can_reach_is_one_line_and_changes_nothing(cli_env: Any) -> None:
    h = cli_env.hearth
    me = cli_env.accounts["verifier2"].address
    before = h.staking.functions.getProvider(me).call()
    code, out = run("provider", "join", "--endpoint", "http://127.0.0.1:0", "--price", "150", "--as", "verifier2")
    assert code == 1
    assert out.startswith("error: not an endpoint gateways can reach")
    assert h.staking.functions.getProvider(me).call() == before
    code, out = run("provider", "join", "--endpoint", "http://127.0.0.1:8101", "--price", "999999",
                    "--as", "verifier2")
    assert code == 1 and out.startswith("error: price 999999 is above the model's ceiling")
    assert h.staking.functions.getProvider(me).call() == before
