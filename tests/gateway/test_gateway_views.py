"""Blobs, network views, live updates (SSE), wallet sessions (SIWE), API key grants, rate
limits and metrics, against the real devnet and indexer."""

from __future__ import annotations

import os
import secrets
import threading
import time
from typing import Any

import httpx
import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils import keccak
from gateway_stack import USD, Stack, deliver, grant, sign_in, siwe_message, sse_events

# ---------------------------------------------------------------------------- blobs


def test_blobs_are_content_addressed_and_checked_on_both_sides(stack: Stack) -> None:
    data = os.urandom(2048)
    bid = "0x" + keccak(data).hex()
    r = stack.http.post("/v1/blobs", content=data, params={"id": bid})
    assert r.status_code == 201 and r.json() == {"id": bid, "size": 2048}
    assert stack.http.post("/v1/blobs", content=data).json()["id"] == bid  # idempotent
    got = stack.http.get(f"/v1/blobs/{bid}")
    assert got.content == data and got.headers["x-content-keccak256"] == bid
    assert stack.http.head(f"/v1/blobs/{bid}").status_code == 200

    wrong = stack.http.post("/v1/blobs", content=b"other bytes", params={"id": bid})
    assert wrong.status_code == 400 and wrong.json()["error"]["reason"] == "blob_hash_mismatch"
    big = stack.http.post("/v1/blobs", content=b"x" * (stack.settings.max_blob_bytes + 1))
    assert big.status_code == 413 and big.json()["error"]["reason"] in ("blob_too_large", "body_too_large")
    missing = "0x" + "11" * 32
    assert stack.http.get(f"/v1/blobs/{missing}").json()["error"]["reason"] == "blob_not_found"
    assert stack.http.head(f"/v1/blobs/{missing}").status_code == 404
    assert stack.http.get("/v1/blobs/0x1234").status_code == 422

    # A file changed on disk is caught on the way out, not served.
    path = stack.ctx.blobs.store.path(bid)
    path.write_bytes(b"tampered")
    r = stack.http.get(f"/v1/blobs/{bid}")
    assert r.status_code == 502 and r.json()["error"]["reason"] == "blob_corrupt"


def test_the_worker_http_blob_client_round_trips_through_the_gateway(stack: Stack) -> None:
    from worker.blobs import HttpBlobStore

    store = HttpBlobStore(stack.base_url)
    data = b'{"texts":["via the worker client"]}'
    bid = store.put(data)
    assert store.has(bid) and store.get(bid) == data


def test_an_s3_compatible_store_fits_the_same_interface() -> None:
    from gateway.blobs import GatewayBlobs, S3BlobStore
    from gateway.errors import BlobCorruptError, BlobNotFoundError

    class FakeS3:
        def __init__(self) -> None:
            self.objects: dict[str, bytes] = {}

        def put_object(self, Bucket: str, Key: str, Body: bytes, ContentType: str) -> None:  # noqa: N803
            self.objects[Key] = Body

        def get_object(self, Bucket: str, Key: str) -> dict[str, Any]:  # noqa: N803
            import io

            return {"Body": io.BytesIO(self.objects[Key]), "ContentLength": len(self.objects[Key])}

        def head_object(self, Bucket: str, Key: str) -> None:  # noqa: N803
            self.objects[Key]  # noqa: B018 - KeyError means missing

        def delete_object(self, Bucket: str, Key: str) -> None:  # noqa: N803
            self.objects.pop(Key, None)

    s3 = FakeS3()
    blobs = GatewayBlobs(S3BlobStore(s3, "bucket"), max_bytes=100)
    bid = blobs.put(b"hello")
    assert blobs.has(bid) and blobs.get(bid) == b"hello"
    s3.objects[f"blobs/{bid}"] = b"evil"
    with pytest.raises(BlobCorruptError):
        blobs.get(bid)
    blobs.delete(bid)
    with pytest.raises(BlobNotFoundError):
        blobs.get(bid)


# ---------------------------------------------------------------------------- network views


def test_providers_models_stats_and_balances_come_from_the_index(stack: Stack) -> None:
    providers = stack.http.get("/v1/providers").json()
    by_addr = {p["address"]: p for p in providers}
    for role in ("provider", "verifier", "verifier2", "cheater"):
        p = by_addr[stack.address(role)]
        assert p["status"] == "active" and int(p["staked"]) >= 500 * 10**18 - 10**20
        assert p["region"] == "local" and p["gpu_class"] == "cpu" and p["models"] == [stack.model_id]
    one = stack.http.get(f"/v1/providers/{stack.address('provider').lower()}").json()
    assert one["address"] == stack.address("provider")
    assert stack.http.get(f"/v1/providers/{stack.address('client')}").json()["error"]["reason"] == "provider_not_found"

    models = stack.http.get("/v1/models").json()
    assert models["object"] == "list"
    m = models["data"][0]
    assert m["id"] == "all-MiniLM-L6-v2" and m["model_id"] == stack.model_id and m["providers"] == 4

    stats = stack.http.get("/v1/stats").json()
    assert stats["chain_id"] == stack.hearth.chain_id and stats["providers_active"] >= 3
    price = stack.devnet.manifest.models[0].price_per_unit
    assert int(stats["active_stake"]) >= 3 * 400 * 10**18 and stats["prices"][0]["price_per_unit"] == str(price)

    bal = stack.http.get(f"/v1/balances/{stack.address('client')}").json()
    assert int(bal["wallet_balance"]) == stack.hearth.usd.functions.balanceOf(stack.address("client")).call()
    assert bal["nonce"] == stack.hearth.market.functions.nonces(stack.address("client")).call()
    open_jobs = stack.http.get("/v1/jobs", params={"client": stack.address("client"), "limit": 200}).json()["items"]
    assert int(bal["escrowed"]) == sum(int(j["max_payment"]) for j in open_jobs
                                       if j["status"] in ("posted", "claimed", "delivered", "challenged"))
    assert stack.http.get("/v1/balances/not-an-address").status_code == 422


def test_job_listing_paginates_with_a_cursor(stack: Stack) -> None:
    stack.approve("client")
    for i in range(3):
        assert stack.http.post("/v1/jobs", json=stack.signed_job(texts=[f"page {i}"])).status_code == 201
    stack.wait_indexed()
    seen: list[int] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, "client": stack.address("client")}
        if cursor:
            params["cursor"] = cursor
        page = stack.http.get("/v1/jobs", params=params).json()
        seen += [j["job_id"] for j in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(seen, reverse=True) and len(seen) == len(set(seen)) >= 3


# ---------------------------------------------------------------------------- live updates


def test_one_jobs_stream_starts_with_a_snapshot_and_follows_it_to_the_end(stack: Stack) -> None:
    stack.approve("client")
    posted = stack.http.post("/v1/jobs", json=stack.signed_job(texts=["stream me"])).json()
    job_id = posted["job_id"]
    stack.wait_indexed(posted["block_number"])
    seen: list[tuple[str, str]] = []
    with httpx.Client(base_url=stack.base_url, timeout=30) as c, c.stream("GET", f"/v1/jobs/{job_id}/events") as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        for event, data in sse_events(resp):
            seen.append((event, data["status"]))
            assert data["job_id"] == job_id and data["job"]["job_id"] == job_id
            if event == "snapshot":
                threading.Thread(target=deliver, args=(stack, job_id, os.urandom(1536)), daemon=True).start()
            if data["status"] == "delivered":
                assert data["tx_hash"].startswith("0x") and data["block"] > posted["block_number"]
                break
    assert seen == [("snapshot", "posted"), ("job", "claimed"), ("job", "delivered")]


def test_the_all_jobs_stream_carries_every_new_job(stack: Stack) -> None:
    stack.approve("client")
    got: list[dict[str, Any]] = []
    with httpx.Client(base_url=stack.base_url, timeout=30) as c, c.stream("GET", "/v1/events/jobs") as resp:
        posted = stack.http.post("/v1/jobs", json=stack.signed_job(texts=["broadcast"])).json()
        for _event, data in sse_events(resp):
            got.append(data)
            if data["job_id"] == posted["job_id"]:
                break
    last = got[-1]
    assert last["event"] == "JobPosted" and last["status"] == "posted" and last["tx_hash"] == posted["tx_hash"]


# ---------------------------------------------------------------------------- SIWE


def test_sign_in_with_ethereum_opens_a_per_wallet_session(stack: Stack) -> None:
    with httpx.Client(base_url=stack.base_url) as anonymous:
        assert anonymous.get("/v1/me/jobs").json()["error"]["reason"] == "not_signed_in"
    n = stack.http.get("/v1/auth/nonce").json()
    assert n["chain_id"] == stack.hearth.chain_id and n["domain"] == f"127.0.0.1:{stack.base_url.rsplit(':', 1)[1]}"
    msg, sig = siwe_message(stack, "client", n["nonce"], n["domain"])
    with httpx.Client(base_url=stack.base_url) as browser:
        r = browser.post("/v1/auth/verify", json={"message": msg, "signature": sig})
        assert r.status_code == 200 and "hearth_session" in r.cookies
        assert browser.get("/v1/auth/session").json()["address"] == stack.address("client")  # by cookie
        token = r.json()["token"]
        jobs = browser.get("/v1/me/jobs").json()["items"]
        assert jobs and all(j["client"] == stack.address("client") for j in jobs)
        replay = browser.post("/v1/auth/verify", json={"message": msg, "signature": sig})
        assert replay.status_code == 401 and replay.json()["error"]["reason"] == "invalid_nonce"
        assert browser.post("/v1/auth/logout").status_code == 204
    assert stack.http.get("/v1/auth/session", headers={"authorization": f"Bearer {token}"}).json()["error"]["reason"] \
        == "session_expired"


@pytest.mark.parametrize("attack", ["other domain", "other chain", "other signer", "unknown nonce", "not siwe"])
def test_bad_sign_ins_are_refused(stack: Stack, attack: str) -> None:
    n = stack.http.get("/v1/auth/nonce").json()
    domain, chain_id, nonce = n["domain"], None, n["nonce"]
    if attack == "other domain":
        domain = "evil.example"
    if attack == "other chain":
        chain_id = 1
    if attack == "unknown nonce":
        nonce = secrets.token_hex(16)
    msg, sig = siwe_message(stack, "client", nonce, domain, chain_id)
    if attack == "other signer":
        sig = "0x" + bytes(Account.sign_message(encode_defunct(text=msg), stack.key("client2")).signature).hex()
    if attack == "not siwe":
        msg = "please let me in"
    r = stack.http.post("/v1/auth/verify", json={"message": msg, "signature": sig})
    expected = {"other domain": "invalid_siwe", "other chain": "wrong_chain", "other signer": "invalid_siwe",
                "unknown nonce": "invalid_nonce", "not siwe": "invalid_siwe_message"}[attack]
    assert r.status_code in (400, 401) and r.json()["error"]["reason"] == expected


# ---------------------------------------------------------------------------- API key grants


def test_an_api_key_grant_is_registered_once_and_listed_for_its_wallet(stack: Stack) -> None:
    api_key, body = grant(stack)
    r = stack.http.post("/v1/api-keys", json=body)
    assert r.status_code == 201, r.text
    out = r.json()
    assert out["wallet"] == stack.address("client") and out["spending_cap"] == str(10 * USD)
    assert out["gateway"] == stack.address("relayer") and out["spent"] == "0" and not out["revoked"]
    again = stack.http.post("/v1/api-keys", json=body)
    assert again.status_code == 409 and again.json()["error"]["reason"] == "grant_replayed"

    token = sign_in(stack, "client")
    auth = {"authorization": f"Bearer {token}"}
    keys = stack.http.get("/v1/api-keys", headers=auth).json()
    assert out["api_key_hash"] in [k["api_key_hash"] for k in keys]
    other = sign_in(stack, "client2")
    assert stack.http.delete(f"/v1/api-keys/{out['api_key_hash']}",
                             headers={"authorization": f"Bearer {other}"}).status_code == 404
    revoked = stack.http.delete(f"/v1/api-keys/{out['api_key_hash']}", headers=auth).json()
    assert revoked["revoked"] is True
    r = stack.http.post("/v1/embeddings", json={"model": "all-MiniLM-L6-v2", "input": "x"},
                        headers={"authorization": f"Bearer {api_key}"})
    assert r.status_code == 401 and r.json()["error"]["reason"] == "api_key_revoked"


@pytest.mark.parametrize(("attack", "reason"), [
    ("signed by another wallet", "invalid_signature"),
    ("for another gateway", "wrong_gateway"),
    ("already expired", "grant_expired"),
    ("a cap changed after signing", "invalid_signature"),
])
def test_forged_api_key_grants_are_refused(stack: Stack, attack: str, reason: str) -> None:
    if attack == "signed by another wallet":
        _, body = grant(stack, signer="client2")
    elif attack == "for another gateway":
        _, body = grant(stack, gateway=stack.address("client2"))
    elif attack == "already expired":
        _, body = grant(stack, expiry=int(time.time()) - 10)
    else:
        _, body = grant(stack)
        body["grant"]["spendingCap"] = str(10**12)
    r = stack.http.post("/v1/api-keys", json=body)
    assert r.status_code == 400 and r.json()["error"]["reason"] == reason, r.text


def test_embeddings_need_a_known_api_key(stack: Stack) -> None:
    body = {"model": "all-MiniLM-L6-v2", "input": "hello"}
    assert stack.http.post("/v1/embeddings", json=body).json()["error"]["reason"] == "missing_api_key"
    r = stack.http.post("/v1/embeddings", json=body, headers={"authorization": "Bearer nope"})
    assert r.status_code == 401 and r.json()["error"]["reason"] == "invalid_api_key"


# ---------------------------------------------------------------------------- limits and metrics


def test_rate_limits_apply_per_ip_and_per_wallet(stack: Stack) -> None:
    from starlette.testclient import TestClient

    from gateway.app import create_app

    for scope, overrides in (("IP address", {"rate_limit_ip_per_min": 6}),
                             ("wallet", {"rate_limit_wallet_per_min": 6})):
        app = create_app(stack.settings.model_copy(update=overrides), manifest=stack.devnet.manifest)
        with TestClient(app) as c:
            body = stack.signed_job(deadline=1)  # refused after the wallet check: nothing is sent
            first = c.post("/v1/jobs", json=body)
            assert first.status_code == 400
            second = c.post("/v1/jobs", json=body)
            assert second.status_code == 429, second.text
            assert second.json()["error"]["reason"] == "rate_limited" and int(second.headers["retry-after"]) >= 1
            assert scope in second.json()["error"]["message"]


def test_metrics_are_exported_for_prometheus(stack: Stack) -> None:
    text = stack.http.get("/metrics").text
    assert 'hearth_gateway_requests_total{method="GET",route="/v1/providers",status="200"}' in text
    assert "hearth_gateway_request_seconds_bucket" in text and "hearth_gateway_rejected_total" in text
    health = stack.http.get("/healthz").json()
    assert health["ok"] and health["index_ok"] and health["feed_running"]
