"""Fixtures of the serving-plane tests: one stack per module (chain snapshotted before, reverted
after), two provider endpoint processes in different regions at different quoted prices, a
payer whose lanes are funded and who authorized the gateway's receipt signer."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serving_stack import USD, ProviderProc, Server, ServingStack, authorize_gateway, fund_lanes  # noqa: E402

#: role -> (region, price per unit): "verifier" is cheaper, "provider" is in "eu"
PROVIDERS = {"provider": ("eu", 200), "verifier": ("us", 100)}


@pytest.fixture(scope="module")
def stack(devnet: Any, chain: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServingStack]:
    from deploy.devnet import free_port
    from gateway.app import create_app
    from gateway.settings import GatewaySettings
    from indexer.service import IndexerService
    from indexer.settings import IndexerSettings

    tmp = tmp_path_factory.mktemp("serving")
    snap = chain.snapshot()
    for s in devnet.hearth._senders.values():
        s.resync()
    manifest_path = devnet.manifest.save(tmp / "manifest.json")
    providers = {
        role: ProviderProc(role, devnet.accounts[role].key, free_port(), tmp / role, manifest_path, region, price,
                           env_extra={"HEARTH_SERVING_COLLECT_THRESHOLD": "1"}).start()
        for role, (region, price) in PROVIDERS.items()
    }
    index_url = f"sqlite:///{tmp / 'indexer.db'}"
    indexer = IndexerService(IndexerSettings(database_url=index_url, poll_interval=0.05,
                                             manifest_path=tmp / "manifest.json"), manifest=devnet.manifest)
    indexer.start()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    settings = GatewaySettings(
        data_dir=tmp, indexer_database_url=index_url, relayer_key=SecretStr(devnet.accounts["relayer"].key),
        rate_limit_ip_per_min=1_000_000, rate_limit_wallet_per_min=1_000_000, feed_poll_interval_s=0.1,
        public_url=base, serving_refresh_s=0.2, provider_timeout_s=20, port=port,
    )
    app = create_app(settings, manifest=devnet.manifest)
    server = Server(app, port)
    server.start()
    http = httpx.Client(base_url=base, timeout=60)
    st = ServingStack(devnet, chain, app, settings, indexer, base, http, tmp, providers)
    try:
        for _ in range(200):
            try:
                if http.get("/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        fund_lanes(st, "client", {"provider": 50 * USD, "verifier": 50 * USD})
        authorize_gateway(st, "client")
        for p in providers.values():
            p.wait_healthy()
        for s in devnet.hearth._senders.values():
            s.resync()
        st.wait_indexed()
        end = time.monotonic() + 20
        while len(st.ctx.serving.router.candidates(st.model_id)) < 2:
            assert time.monotonic() < end, "the gateway never saw both providers' endpoints"
            time.sleep(0.1)
        yield st
    finally:
        http.close()
        for p in providers.values():
            p.stop()
        server.stop()
        indexer.stop()
        chain.revert(snap)
        for s in devnet.hearth._senders.values():
            s.resync()
