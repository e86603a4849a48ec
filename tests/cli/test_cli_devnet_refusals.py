"""Anvil refusing a devnet call, or accepting one and not doing it: `hearth devnet advance` says
so and exits 1, never "devnet clock moved". The CLI talks to the session's Anvil through a
JSON-RPC proxy that refuses or swallows the methods a test names and forwards everything else."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner
from web3 import Web3

from common import accounts as accts
from contracts.errors import ChainError
from deploy.cli import app

runner = CliRunner()


class RpcProxy:
    """Forwards JSON-RPC to ``upstream``; a method in ``refuse`` gets that error message back, a
    method in ``swallow`` gets a success answer and never reaches the node."""

    def __init__(self, upstream: str) -> None:
        self.refuse: dict[str, str] = {}
        self.swallow: set[str] = set()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["content-length"]))
                req = json.loads(body)
                method = req.get("method") if isinstance(req, dict) else None
                if method in proxy.refuse:
                    answer = json.dumps({"jsonrpc": "2.0", "id": req["id"],
                                         "error": {"code": -32603, "message": proxy.refuse[method]}}).encode()
                elif method in proxy.swallow:
                    answer = json.dumps({"jsonrpc": "2.0", "id": req["id"], "result": "0x0"}).encode()
                else:
                    answer = httpx.post(upstream, content=body, headers={"content-type": "application/json"}).content
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="rpc-proxy", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> RpcProxy:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def proxy(fresh: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RpcProxy]:
    with RpcProxy(fresh.anvil.rpc_url) as p:
        monkeypatch.setenv("HEARTH_DATA_DIR", str(tmp_path))
        monkeypatch.delenv("HEARTH_MANIFEST", raising=False)
        fresh.manifest.model_copy(update={"rpc_url": p.url}).save(tmp_path / "manifest.json")
        accts.save(fresh.accounts, tmp_path / "devnet-accounts.json")
        yield p


def advance(seconds: int) -> tuple[int, str]:
    r = runner.invoke(app, ["devnet", "advance", str(seconds)])
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    return r.exit_code, " ".join(r.output.split())


def test_a_clock_move_anvil_refuses_is_an_error_with_anvils_message(proxy: RpcProxy, chain: Any) -> None:
    proxy.refuse["evm_increaseTime"] = "Invalid params: time out of range"
    before = chain.timestamp()
    code, out = advance(601)
    assert code == 1, out
    assert "the devnet did not move its clock by 601s" in out and "Invalid params: time out of range" in out
    assert "devnet clock moved" not in out
    assert chain.timestamp() - before < 5


def test_a_clock_move_anvil_accepts_but_does_not_make_is_an_error(proxy: RpcProxy, chain: Any) -> None:
    proxy.swallow.add("evm_increaseTime")
    code, out = advance(601)
    assert code == 1, out
    assert "the devnet did not move its clock by 601s: Anvil accepted the call but chain time is" in out
    assert "devnet clock moved" not in out


def test_a_refused_block_after_the_clock_move_is_an_error(proxy: RpcProxy) -> None:
    proxy.swallow.add("evm_increaseTime")
    proxy.refuse["evm_mine"] = "mining is paused"
    code, out = advance(601)
    assert code == 1 and "the devnet refused evm_mine: mining is paused" in out, out


def test_a_clock_move_through_the_proxy_otherwise_works(proxy: RpcProxy, chain: Any) -> None:
    before = chain.timestamp()
    code, out = advance(601)
    assert code == 0 and "devnet clock moved 601s forward" in out, out
    assert chain.timestamp() - before >= 601


def test_an_anvil_call_the_node_refuses_raises_with_the_method_and_the_message(proxy: RpcProxy) -> None:
    """What `hearth devnet up --block-time N` and the cheater demo use for Anvil-only calls."""
    from deploy.devnet import anvil_call

    proxy.refuse["evm_setIntervalMining"] = "unsupported"
    w3 = Web3(Web3.HTTPProvider(proxy.url))
    with pytest.raises(ChainError, match="the devnet refused evm_setIntervalMining: unsupported"):
        anvil_call(w3, "evm_setIntervalMining", [1])
    assert anvil_call(w3, "eth_chainId") == hex(w3.eth.chain_id)
