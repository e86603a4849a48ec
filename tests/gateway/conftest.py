"""The gateway against the session devnet: the indexer in-process on a SQLite file in tmp, the
gateway served by uvicorn on a free loopback port (see ``gateway_stack`` for the helpers).

Each test module gets its own stack: the chain is snapshotted before the module's first test and
reverted after its last (the indexer is stopped first), so the gateway's jobs never leak into
other tests."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from gateway_stack import Stack, _Server
from pydantic import SecretStr

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "deploy"))

from backing_services import fresh_pg_databases  # noqa: E402


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty gateway database of each kind the gateway runs on, per test: a SQLite file, and
    a fresh database on this machine's PostgreSQL (started if it is down), dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'gateway.db'}"
        return
    with fresh_pg_databases(1, prefix="hearth_gw") as (url,):
        yield url


@pytest.fixture(scope="module")
def stack(devnet: Any, chain: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    from deploy.devnet import free_port
    from gateway.app import create_app
    from gateway.settings import GatewaySettings
    from indexer.service import IndexerService
    from indexer.settings import IndexerSettings

    tmp = tmp_path_factory.mktemp("gateway")
    snap = chain.snapshot()
    for s in devnet.hearth._senders.values():
        s.resync()
    index_url = f"sqlite:///{tmp / 'indexer.db'}"
    indexer = IndexerService(IndexerSettings(database_url=index_url, poll_interval=0.05,
                                             manifest_path=tmp / "manifest.json"), manifest=devnet.manifest)
    indexer.start()
    settings = GatewaySettings(
        data_dir=tmp, indexer_database_url=index_url, relayer_key=SecretStr(devnet.accounts["relayer"].key),
        rate_limit_ip_per_min=1_000_000, rate_limit_wallet_per_min=1_000_000, feed_poll_interval_s=0.1,
        embeddings_timeout_s=90,
    )
    app = create_app(settings, manifest=devnet.manifest)
    port = free_port()
    server = _Server(app, port)
    server.start()
    base = f"http://127.0.0.1:{port}"
    http = httpx.Client(base_url=base, timeout=60)
    for _ in range(200):
        try:
            if http.get("/healthz").status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.05)
    st = Stack(devnet, chain, app, settings, indexer, base, http, tmp)
    st.wait_indexed()
    try:
        yield st
    finally:
        http.close()
        server.stop()
        indexer.stop()
        chain.revert(snap)
        for s in devnet.hearth._senders.values():
            s.resync()
