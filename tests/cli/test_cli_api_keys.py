"""`hearth api-key create | list | revoke` against a real gateway (uvicorn on a free port, the
indexer in-process): the gateway's 4xx answers read as one line, keys are listed with their
spend and cap, and the relayer's allowance always equals the remaining caps of the wallet's
live keys, so creating a key never shrinks the older keys' allowance and revoking lowers it."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from common import accounts as accts
from deploy.cli import app

runner = CliRunner()
USD = 10**6


class _Server(threading.Thread):
    def __init__(self, asgi: Any, port: int) -> None:
        super().__init__(daemon=True, name="cli-test-gateway")
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(asgi, host="127.0.0.1", port=port, log_level="warning",
                                                    ws="none", lifespan="on"))

    def run(self) -> None:
        self.server.run()

    def stop(self) -> None:
        self.server.should_exit = True
        self.join(15)


@pytest.fixture(scope="module")
def gateway(devnet: Any, chain: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from deploy.devnet import free_port
    from gateway.app import create_app
    from gateway.settings import GatewaySettings
    from indexer.service import IndexerService
    from indexer.settings import IndexerSettings

    tmp = tmp_path_factory.mktemp("cli-gateway")
    snap = chain.snapshot()
    index_url = f"sqlite:///{tmp / 'indexer.db'}"
    indexer = IndexerService(IndexerSettings(database_url=index_url, poll_interval=0.05,
                                             manifest_path=tmp / "manifest.json"), manifest=devnet.manifest)
    indexer.start()
    settings = GatewaySettings(data_dir=tmp, indexer_database_url=index_url,
                               relayer_key=SecretStr(devnet.accounts["relayer"].key),
                               rate_limit_ip_per_min=1_000_000, rate_limit_wallet_per_min=1_000_000)
    port = free_port()
    server = _Server(create_app(settings, manifest=devnet.manifest), port)
    server.start()
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(base + "/healthz").status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.05)
    try:
        yield base
    finally:
        server.stop()
        indexer.stop()
        chain.revert(snap)
        for s in devnet.hearth._senders.values():
            s.resync()


@pytest.fixture
def cli_env(devnet: Any, gateway: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("HEARTH_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("HEARTH_MANIFEST", raising=False)
    monkeypatch.setenv("HEARTH_GATEWAY_URL", gateway)
    devnet.manifest.save(tmp_path / "manifest.json")
    accts.save(devnet.accounts, tmp_path / "devnet-accounts.json")
    return devnet


def cli(*args: str) -> Any:
    return runner.invoke(app, list(args))


def allowance(devnet: Any, role: str) -> int:
    h = devnet.hearth
    return int(h.usd.functions.allowance(devnet.accounts[role].address, devnet.accounts["relayer"].address).call())


def test_keys_are_listed_with_cap_and_spend_and_a_new_key_adds_to_the_allowance(cli_env: Any) -> None:
    r1 = cli("api-key", "create", "--cap", "2", "--as", "client")
    assert r1.exit_code == 0, r1.output
    assert allowance(cli_env, "client") == 2 * USD
    r2 = cli("api-key", "create", "--cap", "0.5", "--as", "client")
    assert r2.exit_code == 0, r2.output
    # The older key keeps its 2 hUSD: the allowance is the sum of the live keys' remaining caps.
    assert allowance(cli_env, "client") == 2_500_000
    assert "remaining caps of your 2 live keys" in r2.output
    first, second = r1.output.split()[-1], r2.output.split()[-1]
    assert first.startswith("hk-") and second.startswith("hk-") and first != second

    r = cli("api-key", "list", "--as", "client")
    assert r.exit_code == 0, r.output
    rows = [ln.split() for ln in r.output.splitlines() if ln.strip().startswith("0x")]
    assert len(rows) == 2, r.output
    # key hash, cap, spent, left, jobs, refunds, expires, state
    assert sorted((row[1], row[2], row[3], row[-1]) for row in rows) == [("0.5", "0", "0.5", "live"),
                                                                         ("2", "0", "2", "live")], r.output
    assert "allowance 2.500000 hUSD; live keys' remaining caps 2.500000 hUSD" in " ".join(r.output.split())

    r = cli("api-key", "revoke", first, "--as", "client")
    assert r.exit_code == 0, r.output
    assert allowance(cli_env, "client") == 500_000
    r = cli("api-key", "list", "--as", "client")
    states = [ln.split()[-1] for ln in r.output.splitlines() if ln.strip().startswith("0x")]
    assert sorted(states) == ["live", "revoked"], r.output
    # The gateway refuses the revoked key.
    res = httpx.post(cli_env_url(cli_env) + "/v1/embeddings", json={"model": "all-MiniLM-L6-v2", "input": "x"},
                     headers={"authorization": f"Bearer {first}"})
    assert res.status_code == 401 and res.json()["error"]["reason"] == "api_key_revoked"


def cli_env_url(_: Any) -> str:
    import os

    return os.environ["HEARTH_GATEWAY_URL"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cap", "1e30"], "the gateway refused the grant: query.spending_cap: Input should be less than or equal"),
        (["--ttl", "10"], "the gateway refused the grant: query.ttl_s: Input should be greater than or equal to 60"),
        (["--ttl", "-5"], "--ttl must be a positive number of seconds, not -5"),
        (["--cap", "NaN"], "--cap must be a finite number, not 'NaN'"),
        (["--cap", "-1"], "--cap must be positive: -1"),
    ],
)
def test_a_refused_grant_is_one_line_with_the_gateways_reason_and_changes_no_allowance(
        cli_env: Any, args: list[str], message: str) -> None:
    before = allowance(cli_env, "client2")
    r = cli("api-key", "create", *args, "--as", "client2")
    assert r.exit_code == 1, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert message in " ".join(r.output.split())
    assert "Traceback" not in r.output and "KeyError" not in r.output
    assert allowance(cli_env, "client2") == before


def test_revoking_a_key_of_another_wallet_is_refused_with_the_gateways_reason(cli_env: Any) -> None:
    r = cli("api-key", "create", "--cap", "1", "--as", "client")
    assert r.exit_code == 0, r.output
    r = cli("api-key", "revoke", r.output.split()[-1], "--as", "client2")
    assert r.exit_code == 1, r.output
    assert re.search(r"the gateway refused the revocation: no such API key of this wallet \(404 api_key_not_found\)",
                     " ".join(r.output.split())), r.output


def test_an_unreachable_gateway_is_named(cli_env: Any) -> None:
    from deploy.devnet import free_port

    r = cli("api-key", "list", "--gateway", f"http://127.0.0.1:{free_port()}", "--as", "client")
    assert r.exit_code == 1 and "cannot reach the gateway" in r.output, r.output


def test_a_key_created_with_a_region_prefers_it_and_a_region_no_provider_could_have_is_refused(cli_env: Any) -> None:
    r = cli("api-key", "create", "--cap", "1", "--region", "eu-west", "--as", "client2")
    assert r.exit_code == 0, r.output
    assert "prefers region eu-west" in r.output
    r = cli("api-key", "list", "--as", "client2")
    assert r.exit_code == 0, r.output
    rows = [ln.split() for ln in r.output.splitlines() if ln.strip().startswith("0x")]
    assert len(rows) == 1 and rows[0][-1] == "live", r.output
    assert f"key {rows[0][0]} prefers region eu-west" in r.output
    before = allowance(cli_env, "client2")
    r = cli("api-key", "create", "--cap", "1", "--region", "eu west", "--as", "client2")
    assert r.exit_code == 1, r.output
    assert "the gateway refused the grant: body.region: String should match pattern" in " ".join(r.output.split())
    assert allowance(cli_env, "client2") == before


def test_a_refused_sign_in_registers_no_key_and_changes_no_allowance(cli_env: Any,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from deploy.gateway_client import GatewayClient, GatewayRefused

    def count_keys() -> int:
        with GatewayClient(cli_env_url(cli_env)) as gw:
            gw.sign_in(cli_env.accounts["client2"].key)
            return len(gw.api_keys())

    before_keys, before_allowance = count_keys(), allowance(cli_env, "client2")

    def refused_sign_in(self: GatewayClient, key: str) -> str:
        raise GatewayRefused("the gateway refused the sign-in: nonce expired (401 siwe_invalid)", 401, "siwe_invalid")

    with monkeypatch.context() as m:
        m.setattr(GatewayClient, "sign_in", refused_sign_in)
        r = cli("api-key", "create", "--cap", "1", "--as", "client2")
    assert r.exit_code == 1 and "the gateway refused the sign-in" in r.output, r.output
    assert count_keys() == before_keys and allowance(cli_env, "client2") == before_allowance
