"""The gateway against the session devnet: the indexer in-process on a SQLite file in tmp, the
gateway served by uvicorn on a free loopback port, and helpers that sign like a wallet.

The chain is snapshotted before the package's first test and reverted after its last (the
indexer is stopped first), so the gateway's jobs never leak into other packages' tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account import Account
from eth_utils import keccak
from pydantic import SecretStr

from contracts import eip712
from contracts.types import JobRequest

USD = 10**6


@dataclass
class Stack:
    devnet: Any
    chain: Any
    app: Any
    settings: Any
    indexer: Any
    base_url: str
    http: httpx.Client
    tmp: Path

    @property
    def ctx(self) -> Any:
        return self.app.state.ctx

    @property
    def hearth(self) -> Any:
        return self.devnet.hearth

    def key(self, role: str) -> str:
        return str(self.devnet.accounts[role].key)

    def address(self, role: str) -> str:
        return str(self.devnet.accounts[role].address)

    @property
    def model_id(self) -> str:
        return str(self.devnet.manifest.models[0].model_id)

    def chain_now(self) -> int:
        return int(self.hearth.w3.eth.get_block("latest")["timestamp"])

    def wait_indexed(self, block: int | None = None, timeout: float = 20) -> None:
        self.indexer.wait_for(block if block is not None else self.hearth.w3.eth.block_number, timeout=timeout)

    def approve(self, role: str, amount: int = 10**12, spender: str | None = None) -> None:
        h = self.hearth
        h.sender(self.key(role)).send(h.usd.functions.approve(spender or h.market.address, amount))

    def signed_job(self, role: str = "client", texts: list[str] | None = None, *, max_payment: int = 5 * USD,
                   deadline: int | None = None, nonce: int | None = None, chain_id: int | None = None,
                   market: str | None = None, model_id: str | None = None) -> dict[str, Any]:
        """A POST /v1/jobs body signed by ``role`` (every field overridable to forge one)."""
        h = self.hearth
        client = self.address(role)
        data = _input(texts or ["hello hearth"])
        req = JobRequest(
            client=client, model_id=bytes.fromhex((model_id or self.model_id)[2:]), input_hash=keccak(data),
            max_payment=max_payment, deadline=deadline if deadline is not None else self.chain_now() + 900,
            nonce=nonce if nonce is not None else h.market.functions.nonces(client).call(),
        )
        sig = eip712.sign_job_request(self.key(role), req, chain_id or h.chain_id, market or h.market.address)
        return {
            "request": {"client": client, "modelId": "0x" + req.model_id.hex(),
                        "inputHash": "0x" + req.input_hash.hex(),
                        "maxPayment": str(req.max_payment), "deadline": req.deadline, "nonce": str(req.nonce)},
            "signature": "0x" + sig.hex(), "input": data.decode(),
        }

    def wait_status(self, job_id: int, status: str, timeout: float = 20) -> dict[str, Any]:
        end = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < end:
            r = self.http.get(f"/v1/jobs/{job_id}")
            if r.status_code == 200:
                last = r.json()
                if last["status"] == status:
                    return dict(last)
            time.sleep(0.1)
        raise AssertionError(f"job {job_id} did not reach {status}: {last}")


def _input(texts: list[str]) -> bytes:
    from worker.node.jobio import encode_input

    return encode_input(texts)


def sign_typed(key: str, typed: dict[str, Any]) -> str:
    """What a wallet's eth_signTypedData_v4 does (numbers may arrive as decimal strings)."""
    msg = dict(typed["message"])
    for field in typed["types"][typed["primaryType"]]:
        if field["type"].startswith("uint") and isinstance(msg[field["name"]], str):
            msg[field["name"]] = int(msg[field["name"]])
    full = {**typed, "message": msg}
    return "0x" + bytes(Account.sign_typed_data(key, full_message=full).signature).hex()


class _Server(threading.Thread):
    def __init__(self, app: Any, port: int) -> None:
        super().__init__(daemon=True, name="gateway-test-server")
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", ws="none",
                                                    lifespan="on"))

    def run(self) -> None:
        self.server.run()

    def stop(self) -> None:
        self.server.should_exit = True
        self.join(15)


@pytest.fixture(scope="package")
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
