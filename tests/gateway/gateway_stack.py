"""Helpers for the gateway tests: the running stack, and a wallet's and a provider's moves
(signing jobs, grants and sign-ins, delivering a job, reading server-sent events)."""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils import keccak

from contracts import eip712
from contracts.types import JobRequest, Receipt, gpu_class_bytes

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
                   market: str | None = None, model_id: str | None = None, data: bytes | None = None,
                   ) -> dict[str, Any]:
        """A POST /v1/jobs body signed by ``role`` (every field overridable to forge one; ``data``
        replaces the canonical input bytes of ``texts``)."""
        h = self.hearth
        client = self.address(role)
        data = data if data is not None else _input(texts if texts is not None else ["hello hearth"])
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

    def wait_relay(self, tx_hash: str, timeout: float = 20) -> dict[str, Any]:
        """``GET /v1/relays/{tx_hash}`` once it is no longer pending."""
        end = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < end:
            last = self.http.get(f"/v1/relays/{tx_hash}").json()
            if last.get("status") != "pending":
                return dict(last)
            time.sleep(0.05)
        raise AssertionError(f"relay {tx_hash} still pending: {last}")

    def post_job(self, body: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
        """POST /v1/jobs (202), waited until mined: the answer plus the relay's outcome
        (``job_id``, ``block_number``)."""
        r = self.http.post("/v1/jobs", json=body if body is not None else self.signed_job(**kw))
        assert r.status_code == 202, r.text
        out = r.json()
        assert r.headers["location"] == out["status_url"] == f"/v1/relays/{out['tx_hash']}"
        relay = self.wait_relay(out["tx_hash"])
        assert relay["status"] == "mined", relay
        return {**out, **relay}

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
    from contracts.jobio import encode_input

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


PROVIDER = "verifier2"  # a staked provider that no worker runs for in these tests


_sessions: dict[tuple[str, str], str] = {}


def upload(stack: Stack, data: bytes, role: str = PROVIDER, **params: str) -> httpx.Response:
    """POST /v1/blobs as ``role`` (signed in with Ethereum once per stack)."""
    token = _sessions.get((stack.base_url, role))
    if token is None:
        token = _sessions[(stack.base_url, role)] = sign_in(stack, role)
    return stack.http.post("/v1/blobs", content=data, params=params,
                           headers={"content-type": "application/octet-stream", "authorization": f"Bearer {token}"})


def deliver(stack: Stack, job_id: int, output: bytes, *, upload_output: bool = True) -> str:
    """Claims and delivers ``job_id`` as a provider would, storing the output via the blob API."""
    h = stack.hearth
    key = stack.key(PROVIDER)
    h.claim(key, job_id)
    if upload_output:
        r = upload(stack, output)
        assert r.status_code == 201, r.text
    model = bytes.fromhex(stack.model_id[2:])
    rec = Receipt(job_id, keccak(output), 7, model, bytes.fromhex(stack.devnet.manifest.models[0].runtime_hash[2:]),
                  gpu_class_bytes("cpu"))
    rcpt = h.submit_receipt(key, rec, h.sign_receipt(key, rec))
    return "0x" + bytes(rcpt["transactionHash"]).hex()


def sse_events(resp: httpx.Response) -> Iterator[tuple[str, dict[str, Any]]]:
    event, data = "message", []
    for line in resp.iter_lines():
        if line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
        elif not line and data:
            yield event, json.loads("\n".join(data))
            event, data = "message", []


def siwe_message(stack: Stack, role: str, nonce: str, domain: str, chain_id: int | None = None) -> tuple[str, str]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from siwe import SiweMessage

    msg = SiweMessage(
        domain=domain, address=stack.address(role), statement="Sign in to the Hearth gateway.",
        uri=stack.base_url, version="1", chain_id=chain_id or stack.hearth.chain_id, nonce=nonce,
        issued_at=datetime.now(UTC).isoformat().replace("+00:00", "Z"),
    ).prepare_message()
    sig = Account.sign_message(encode_defunct(text=msg), stack.key(role)).signature
    return msg, "0x" + bytes(sig).hex()


def sign_in(stack: Stack, role: str) -> str:
    n = stack.http.get("/v1/auth/nonce").json()
    msg, sig = siwe_message(stack, role, n["nonce"], n["domain"])
    with httpx.Client(base_url=stack.base_url) as c:  # its own cookie jar
        r = c.post("/v1/auth/verify", json={"message": msg, "signature": sig})
    assert r.status_code == 200, r.text
    assert r.json()["address"] == stack.address(role)
    return str(r.json()["token"])


def grant(stack: Stack, role: str = "client", cap: int = 10 * USD, signer: str | None = None,
          **override: Any) -> tuple[str, dict[str, Any]]:
    api_key = "hk-" + secrets.token_hex(16)
    td = stack.http.get("/v1/api-keys/typed-data", params={
        "wallet": stack.address(role), "api_key_hash": "0x" + keccak(text=api_key).hex(), "spending_cap": cap,
    }).json()["typed_data"]
    td["message"].update(override)
    return api_key, {"grant": td["message"], "signature": sign_typed(stack.key(signer or role), td)}
