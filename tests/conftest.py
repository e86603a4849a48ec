"""Shared fixtures: one real Anvil per test session with the contracts deployed, funded and
staked (the same code path as `make up`), isolated per test with evm_snapshot/evm_revert."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Triton decides between its CPU interpreter and compiled kernels when a kernel is decorated, that
# is when a kernel module is first imported, and any test module (or a module it imports) may be
# the first. So the switch is set here, before collection imports anything: kernel tests on CPU
# tensors run interpreted (export TRITON_INTERPRET=0 on a CUDA machine for the compiled path).
os.environ.setdefault("TRITON_INTERPRET", "1")


@dataclass
class Chain:
    """RPC helpers for tests: time travel, mining, snapshots, reorgs."""

    w3: Any

    def rpc(self, method: str, params: list[Any] | None = None) -> Any:
        resp = self.w3.provider.make_request(method, params or [])
        if "error" in resp:
            raise RuntimeError(f"{method}: {resp['error']}")
        return resp.get("result")

    def mine(self, blocks: int = 1) -> None:
        self.rpc("anvil_mine", [hex(blocks)])

    def advance(self, seconds: int) -> None:
        self.rpc("evm_increaseTime", [seconds])
        self.mine()

    def timestamp(self) -> int:
        return int(self.w3.eth.get_block("latest")["timestamp"])

    def snapshot(self) -> str:
        return str(self.rpc("evm_snapshot"))

    def revert(self, snap: str) -> None:
        assert self.rpc("evm_revert", [snap]) is True


@pytest.fixture(scope="session")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from deploy.devnet import bring_up, free_port

    dn = bring_up(port=free_port(), write=False, anvil_log=tmp_path_factory.mktemp("anvil") / "anvil.log")
    try:
        yield dn
    finally:
        dn.anvil.stop()


@pytest.fixture(scope="session")
def chain(devnet: Any) -> Chain:
    return Chain(devnet.hearth.w3)


@pytest.fixture
def fresh(devnet: Any, chain: Chain) -> Iterator[Any]:
    """The session devnet, reverted to its deployed state after the test."""
    snap = chain.snapshot()
    for s in devnet.hearth._senders.values():
        s.resync()
    try:
        yield devnet
    finally:
        chain.revert(snap)
        for s in devnet.hearth._senders.values():
            s.resync()


@pytest.fixture
def s3_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A real S3 API on a local port (moto's threaded server), with throwaway credentials."""
    from moto.server import ThreadedMotoServer

    for var, value in (("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test"),
                       ("AWS_DEFAULT_REGION", "us-east-1")):
        monkeypatch.setenv(var, value)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
