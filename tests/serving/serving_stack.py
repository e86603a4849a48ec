"""The serving plane's end-to-end stack: the session devnet, the indexer and the gateway
in-process (uvicorn on a loopback port), and provider endpoints as real processes
(``python -m worker.serving``) so a test can ``kill -9`` one."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from eth_account import Account
from eth_utils import keccak
from pydantic import SecretStr

USD = 10**6
ROOT = Path(__file__).resolve().parents[2]


class Server(threading.Thread):
    def __init__(self, app: Any, port: int) -> None:
        super().__init__(daemon=True, name="serving-test-gateway")
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", ws="none",
                                                    lifespan="on"))

    def run(self) -> None:
        self.server.run()

    def stop(self) -> None:
        self.server.should_exit = True
        self.join(15)


@dataclass
class ProviderProc:
    """A provider endpoint process for a devnet role."""

    role: str
    key: str
    port: int
    data_dir: Path
    manifest: Path
    region: str
    price: int
    env_extra: dict[str, str] = field(default_factory=dict)
    #: the command to run instead of ``python -m worker.serving`` (a test's own launcher)
    argv: list[str] | None = None
    proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return str(Account.from_key(self.key).address)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ProviderProc:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "HEARTH_DATA_DIR": str(self.data_dir),
               "HEARTH_MANIFEST": str(self.manifest), "HEARTH_WORKER_KEY": self.key,
               "HEARTH_SERVING_PORT": str(self.port), "HEARTH_SERVING_ANNOUNCE": "1",
               "HEARTH_SERVING_REGION": self.region, "HEARTH_SERVING_PRICE": str(self.price),
               "HEARTH_SERVING_MAX_BATCH_AGE_S": "0.5", "HEARTH_SERVING_COLLECT_THRESHOLD": str(10**12),
               "HEARTH_SERVING_LOG_LEVEL": "WARNING", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
               **self.env_extra}
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.data_dir / "provider.log", "ab")  # noqa: SIM115 - the child holds it
        self.proc = subprocess.Popen(self.argv or [sys.executable, "-m", "worker.serving"], env=env, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def wait_healthy(self, timeout: float = 90) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.role} exited {self.proc.returncode}: {self.log()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"{self.role} not healthy after {timeout}s: {self.log()[-3000:]}")

    def log(self) -> str:
        p = self.data_dir / "provider.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def status(self) -> dict[str, Any]:
        return dict(httpx.get(f"{self.url}/v1/serving/status", timeout=10).json())

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


@dataclass
class ServingStack:
    devnet: Any
    chain: Any
    app: Any
    settings: Any
    indexer: Any
    base_url: str
    http: httpx.Client
    tmp: Path
    providers: dict[str, ProviderProc]

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

    def wait_indexed(self, timeout: float = 20) -> None:
        self.indexer.wait_for(self.hearth.w3.eth.block_number, timeout=timeout)

    def settlement(self) -> Any:
        from contracts.settlement import Settlement

        return Settlement(self.hearth)


def sign_typed(key: str, typed: dict[str, Any]) -> str:
    msg = dict(typed["message"])
    for f in typed["types"][typed["primaryType"]]:
        if f["type"].startswith("uint") and isinstance(msg[f["name"]], str):
            msg[f["name"]] = int(msg[f["name"]])
    return "0x" + bytes(Account.sign_typed_data(key, full_message={**typed, "message": msg}).signature).hex()


def api_key(stack: ServingStack, role: str, cap: int = 100 * USD, region: str | None = None) -> str:
    key = "hk-" + secrets.token_hex(16)
    td = stack.http.get("/v1/api-keys/typed-data", params={
        "wallet": stack.address(role), "api_key_hash": "0x" + keccak(text=key).hex(), "spending_cap": cap,
    }).json()["typed_data"]
    body: dict[str, Any] = {"grant": td["message"], "signature": sign_typed(stack.key(role), td)}
    if region is not None:
        body["region"] = region
    r = stack.http.post("/v1/api-keys", json=body)
    assert r.status_code == 201, r.text
    assert r.json()["region"] == region
    return key


def fund_lanes(stack: ServingStack, payer: str, lanes: dict[str, int]) -> None:
    """``payer`` deposits and allocates ``lanes`` (provider role -> amount)."""
    s = stack.settlement()
    total = sum(lanes.values())
    k = stack.key(payer)
    h = stack.hearth
    h.sender(k).send(h.usd.functions.approve(s.escrow.address, total))
    s.deposit(k, total)
    s.allocate(k, stack.address(payer), {stack.address(p): a for p, a in lanes.items()})


def authorize_gateway(stack: ServingStack, payer: str, can_allocate: bool = False) -> None:
    """``payer`` authorizes the gateway's receipt signer, with the proof the gateway serves
    (``can_allocate``: and lets it allocate the payer's deposit to lanes)."""
    r = stack.http.get("/v1/serving/signer", params={"payer": stack.address(payer),
                                                     "expiry": int(time.time()) + 30 * 86400}).json()
    k = stack.key(payer)
    fn = stack.settlement().escrow.functions.authorizeSigner(r["signer"], r["expiry"], can_allocate,
                                                            bytes.fromhex(r["proof"][2:]))
    stack.hearth.sender(k).send(fn)


@contextmanager
def serving_stack(devnet: Any, chain: Any, tmp: Path, providers_spec: dict[str, tuple[str, int, dict[str, str]]],
                  model_index: int = 0, routed: int | None = None,
                  argv: dict[str, list[str]] | None = None) -> Iterator[ServingStack]:
    """The gateway, the indexer and one provider process per role (region, price, extra
    environment; ``argv`` names a role's own launcher instead of ``python -m worker.serving``);
    ready once the gateway routes ``manifest.models[model_index]`` to ``routed`` of them
    (default: all). Every provider gets ``HEARTH_VERIFIER_BLOB_URL`` (the gateway), read only
    when it runs the verifier duty (``HEARTH_SERVING_VERIFY``)."""
    from deploy.devnet import free_port
    from gateway.app import create_app
    from gateway.settings import GatewaySettings
    from indexer.service import IndexerService
    from indexer.settings import IndexerSettings

    snap = chain.snapshot()
    for s in devnet.hearth._senders.values():
        s.resync()
    manifest_path = devnet.manifest.save(tmp / "manifest.json")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    providers = {
        role: ProviderProc(role, devnet.accounts[role].key, free_port(), tmp / role, manifest_path, region, price,
                           env_extra={"HEARTH_VERIFIER_BLOB_URL": base, **env},
                           argv=(argv or {}).get(role)).start()
        for role, (region, price, env) in providers_spec.items()
    }
    index_url = f"sqlite:///{tmp / 'indexer.db'}"
    indexer = IndexerService(IndexerSettings(database_url=index_url, poll_interval=0.05,
                                             manifest_path=tmp / "manifest.json"), manifest=devnet.manifest)
    indexer.start()
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
        fund_lanes(st, "client", {role: 50 * USD for role in providers})
        authorize_gateway(st, "client")
        for p in providers.values():
            p.wait_healthy(timeout=180)
        for s in devnet.hearth._senders.values():
            s.resync()
        st.wait_indexed()
        end = time.monotonic() + 20
        model_id = devnet.manifest.models[model_index].model_id
        while len(st.ctx.serving.router.candidates(model_id)) < (routed or len(providers)):
            assert time.monotonic() < end, "the gateway never saw every provider's endpoint"
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
