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
from gateway_stack import PROVIDER, USD, Stack, deliver, grant, sign_in, siwe_message, sse_events, upload

# ---------------------------------------------------------------------------- blobs


def test_blobs_are_content_addressed_and_checked_on_both_sides(stack: Stack) -> None:
    data = os.urandom(2048)
    bid = "0x" + keccak(data).hex()
    r = upload(stack, data, id=bid)
    assert r.status_code == 201 and r.json() == {"id": bid, "size": 2048}
    assert upload(stack, data).json()["id"] == bid  # idempotent
    got = stack.http.get(f"/v1/blobs/{bid}")
    assert got.content == data and got.headers["x-content-keccak256"] == bid
    assert stack.http.head(f"/v1/blobs/{bid}").status_code == 200

    wrong = upload(stack, b"other bytes", id=bid)
    assert wrong.status_code == 400 and wrong.json()["error"]["reason"] == "blob_hash_mismatch"
    big = upload(stack, b"x" * (stack.settings.max_blob_bytes + 1))
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
    from common.blobs import HttpBlobStore

    store = HttpBlobStore(stack.base_url, key=stack.key("verifier"))  # signs in with Ethereum to upload
    data = b'{"texts":["via the worker client"]}'
    bid = store.put(data)
    assert store.has(bid) and store.get(bid) == data
    store._token = "expired-or-revoked"  # a lost session: the client signs in again, once
    assert store.put(data + b" ") == "0x" + keccak(data + b" ").hex()

    anonymous = HttpBlobStore(stack.base_url)
    from common.blobs import BlobError

    with pytest.raises(BlobError, match="401"):
        anonymous.put(b"no identity")


def test_blob_uploads_need_a_session_or_an_api_key_and_store_nothing_otherwise(stack: Stack) -> None:
    data = os.urandom(700)
    bid = "0x" + keccak(data).hex()
    for headers, reason in (({}, "not_signed_in"), ({"authorization": "Bearer forged"}, "session_expired")):
        r = stack.http.post("/v1/blobs", content=data, headers=headers)
        assert r.status_code == 401 and r.json()["error"]["reason"] == reason, r.text
        assert not stack.ctx.blobs.has(bid)
    # An API key names the wallet that granted it: that wallet holds the upload.
    api_key, body = grant(stack, "client2")
    assert stack.http.post("/v1/api-keys", json=body).status_code == 201
    r = stack.http.post("/v1/blobs", content=data, headers={"authorization": f"Bearer {api_key}"})
    assert r.status_code == 201 and stack.ctx.blobs.has(bid)
    from sqlmodel import Session

    from gateway import store

    with Session(stack.ctx.db_engine) as s:
        assert s.get(store.BlobUpload, (bid, "wallet:" + stack.address("client2"))) is not None


def test_each_wallet_holds_at_most_its_quota_of_unexpired_uploads(stack: Stack) -> None:
    from dataclasses import replace

    ctx = stack.ctx
    saved = ctx.blob_policy
    ctx.blob_policy = replace(saved, quota_bytes=2500)  # an injected small quota for a client
    try:
        # spare starts holding nothing (the module's other uploads are other wallets').
        blobs = [os.urandom(1000) for _ in range(3)]
        assert upload(stack, blobs[0], "spare").status_code == 201
        assert upload(stack, blobs[1], "spare").status_code == 201
        assert upload(stack, blobs[0], "spare").status_code == 201, "renewing a blob it holds costs nothing"
        refused = upload(stack, blobs[2], "spare")
        assert refused.status_code == 429, refused.text
        err = refused.json()["error"]
        assert err["reason"] == "blob_quota_exceeded" and err["type"] == "insufficient_quota"
        assert 1 <= int(refused.headers["retry-after"]) <= saved.retention_s
        assert not stack.ctx.blobs.has("0x" + keccak(blobs[2]).hex()), "a refused upload stores nothing"
        # The quota is per wallet, and a registered provider gets the provider quota.
        assert upload(stack, blobs[2], "client").status_code == 201
        assert upload(stack, os.urandom(2000), PROVIDER).status_code == 201
        ctx.blob_policy = replace(saved, quota_bytes=2500, store_max_bytes=1)
        full = upload(stack, os.urandom(10), "client")
        assert full.status_code == 507 and full.json()["error"]["reason"] == "blob_store_full"
    finally:
        ctx.blob_policy = saved


def test_a_store_filled_by_clients_still_takes_provider_outputs_and_paid_job_inputs(stack: Stack) -> None:
    """Wallets cost nothing to make: ones made to fill the store must not stop a provider from
    uploading its outputs (it would miss its deliveries) nor stop jobs that someone pays for."""
    from dataclasses import replace

    ctx = stack.ctx
    saved = ctx.blob_policy
    ctx.blob_policy = replace(saved, store_max_bytes=1)  # an injected cap that the store is already over
    try:
        full = upload(stack, os.urandom(10), "client")
        assert full.status_code == 507 and full.json()["error"]["reason"] == "blob_store_full", full.text
        output = os.urandom(1536)
        assert upload(stack, output, PROVIDER).status_code == 201
        assert ctx.blobs.has("0x" + keccak(output).hex())
        stack.approve("client")
        job = stack.signed_job(texts=["paid for while the store is full"])
        stack.post_job(job)
        assert ctx.blobs.has(job["request"]["inputHash"])
    finally:
        ctx.blob_policy = saved


def test_an_s3_compatible_store_fits_the_same_interface(s3_endpoint: str) -> None:
    import boto3

    from gateway.blobs import GatewayBlobs, S3BlobStore
    from gateway.errors import BlobCorruptError, BlobNotFoundError

    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket="bucket")
    blobs = GatewayBlobs(S3BlobStore(s3, "bucket"), max_bytes=100)
    bid = blobs.put(b"hello")
    assert blobs.has(bid) and blobs.get(bid) == b"hello"
    s3.put_object(Bucket="bucket", Key=f"blobs/{bid}", Body=b"evil")
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
        stack.post_job(texts=[f"page {i}"])
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
    posted = stack.post_job(texts=["stream me"])
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
        posted = stack.post_job(texts=["broadcast"])
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


def _embeddings_key(stack: Stack) -> str:
    """An API key of ``client`` whose wallet allows the relayer to pull: a valid request would be charged."""
    stack.approve("client", 1 * USD, spender=stack.address("relayer"))
    api_key, body = grant(stack, "client", cap=1 * USD)
    assert stack.http.post("/v1/api-keys", json=body).status_code == 201
    return api_key


BAD_EMBEDDINGS: list[tuple[str, Any, str]] = [
    ("a lone high surrogate", "abc\ud800def", "invalid_unicode"),
    ("a lone low surrogate in a list", ["ok", "x\udfff"], "invalid_unicode"),
    ("an empty string", "", "empty_input"),
    ("a whitespace-only string", " \n\t ", "empty_input"),
    ("an empty string in a list", ["fine", ""], "empty_input"),
    ("an empty list", [], "empty_input"),
    ("an empty token array", [[]], "empty_input"),
    ("only special tokens", [101, 102], "empty_input"),
    ("a token id past the vocabulary", [101, 30522, 102], "invalid_token_id"),
    ("a negative token id", [[101, -1, 102]], "invalid_token_id"),
]


@pytest.mark.parametrize(("what", "value", "reason"), BAD_EMBEDDINGS, ids=[b[0] for b in BAD_EMBEDDINGS])
def test_bad_embeddings_input_is_a_400_in_openais_shape_and_nothing_is_charged(
    stack: Stack, what: str, value: Any, reason: str,
) -> None:
    import json

    from sqlmodel import Session

    from gateway import apikeys, store

    api_key = _embeddings_key(stack)
    wallet = stack.address("client")
    before = stack.hearth.usd.functions.balanceOf(wallet).call()
    sent = stack.hearth.w3.eth.get_transaction_count(stack.address("relayer"))
    body = json.dumps({"model": "all-MiniLM-L6-v2", "input": value})  # ensure_ascii: surrogates as escapes
    r = stack.http.post("/v1/embeddings", content=body,
                        headers={"authorization": f"Bearer {api_key}", "content-type": "application/json"})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == err["reason"] == reason and err["type"] == "invalid_request_error" and err["message"]
    assert stack.hearth.usd.functions.balanceOf(wallet).call() == before, "nothing charged"
    assert stack.hearth.w3.eth.get_transaction_count(stack.address("relayer")) == sent, "nothing relayed"
    with Session(stack.ctx.db_engine) as s:
        key = s.get(store.ApiKey, apikeys.api_key_hash(api_key))
        assert key is not None and key.spent == 0


@pytest.fixture(scope="module")
def generation_key(stack: Stack) -> str:
    """An API key of ``client2``, whose wallet authorized the gateway's receipt signer: a text
    generation request with it gets as far as tokenizing its prompt (no provider serves SmolLM2
    in this stack, so a valid one ends 503 ``no_provider``, after its checks)."""
    from contracts.settlement import Settlement

    api_key, body = grant(stack, "client2")
    assert stack.http.post("/v1/api-keys", json=body).status_code == 201
    r = stack.http.get("/v1/serving/signer", params={"payer": stack.address("client2"),
                                                     "expiry": int(time.time()) + 86400}).json()
    authorize = Settlement(stack.hearth).escrow.functions.authorizeSigner(r["signer"], r["expiry"], False,
                                                                         bytes.fromhex(r["proof"][2:]))
    stack.hearth.sender(stack.key("client2")).send(authorize)
    return api_key


CHAT, COMPLETIONS = "/v1/chat/completions", "/v1/completions"
HI = [{"role": "user", "content": "hi"}]
BAD_GENERATIONS: list[tuple[str, str, dict[str, Any], int, str]] = [
    ("a lone surrogate in a message", CHAT, {"messages": [{"role": "user", "content": "abc\ud800def"}]},
     400, "invalid_unicode"),
    ("a lone surrogate in a message's text part", CHAT,
     {"messages": [{"role": "user", "content": [{"type": "text", "text": "x\udfff"}]}]}, 400, "invalid_unicode"),
    ("a lone surrogate in a role", CHAT, {"messages": [{"role": "us\udc00er", "content": "hi"}]},
     400, "invalid_unicode"),
    ("a lone surrogate in a stop string", CHAT, {"messages": HI, "stop": "\ud800"}, 400, "invalid_unicode"),
    ("a lone surrogate in a list of stop strings", COMPLETIONS, {"prompt": "ok", "stop": ["ok", "\udbff"]},
     400, "invalid_unicode"),
    ("a lone surrogate in the model", CHAT, {"messages": HI, "model": "Smol\ud800"}, 400, "invalid_unicode"),
    ("a lone surrogate in the user", COMPLETIONS, {"prompt": "ok", "user": "\udfff"}, 400, "invalid_unicode"),
    ("a lone surrogate in a prompt", COMPLETIONS, {"prompt": "abc\ud800def"}, 400, "invalid_unicode"),
    ("a lone surrogate in a prompt list", COMPLETIONS, {"prompt": ["x\udfff"]}, 400, "invalid_unicode"),
    ("an empty prompt", COMPLETIONS, {"prompt": ""}, 400, "invalid_prompt"),
    ("an empty prompt in a list", COMPLETIONS, {"prompt": [""]}, 400, "invalid_prompt"),
    ("an empty token array", COMPLETIONS, {"prompt": [[]]}, 400, "invalid_prompt"),
    ("a token id past the vocabulary", COMPLETIONS, {"prompt": [1, 10**6]}, 400, "invalid_prompt"),
    ("a negative token id", COMPLETIONS, {"prompt": [[1, -1]]}, 400, "invalid_prompt"),
    ("booleans as token ids", COMPLETIONS, {"prompt": [True, False]}, 422, "malformed_request"),
    ("no messages", CHAT, {"messages": []}, 422, "malformed_request"),
]


@pytest.mark.parametrize(("what", "path", "fields", "status", "reason"), BAD_GENERATIONS,
                         ids=[b[0] for b in BAD_GENERATIONS])
def test_bad_text_generation_input_is_a_4xx_in_openais_shape_and_nothing_is_reserved(
    stack: Stack, generation_key: str, what: str, path: str, fields: dict[str, Any], status: int, reason: str,
) -> None:
    import json

    from sqlmodel import Session, select

    from gateway import apikeys, store

    body = json.dumps({"model": "SmolLM2-135M-Instruct", **fields})  # ensure_ascii: surrogates as escapes
    r = stack.http.post(path, content=body, headers={"authorization": f"Bearer {generation_key}",
                                                     "content-type": "application/json"})
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == err["reason"] == reason and err["type"] == "invalid_request_error" and err["message"]
    with Session(stack.ctx.db_engine) as s:
        key_hash = apikeys.api_key_hash(generation_key)
        assert s.exec(select(store.Charge).where(store.Charge.key_hash == key_hash)).all() == []


@pytest.mark.parametrize("prompt", [[1, 2, 3], [[1, 2, 3]]], ids=["token ids", "a list of one token id array"])
def test_token_id_prompts_pass_the_gateways_checks_as_openai_takes_them(
    stack: Stack, generation_key: str, prompt: Any,
) -> None:
    r = stack.http.post(COMPLETIONS, json={"model": "SmolLM2-135M-Instruct", "prompt": prompt},
                        headers={"authorization": f"Bearer {generation_key}"})
    assert r.status_code == 503 and r.json()["error"]["reason"] == "no_provider", r.text  # checked, then routed


def test_the_gateway_counts_and_decodes_tokens_without_torch() -> None:
    import subprocess
    import sys

    code = ("import sys, gateway.app\n"
            "from common.tokenizer import TextTokenizer\n"
            "t = TextTokenizer()\n"
            "assert t.decode_ids([[101, 7592, 102]]) == ['hello'] and t.count_tokens(['hello']) == [3]\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    from common.tokenizer import TextTokenizer
    from worker.model.weights import MiniLMTokenizer

    texts = ["Hearth runs inference.", "短い文", " spaced  out ", "x" * 3000]
    assert TextTokenizer().count_tokens(texts) == MiniLMTokenizer().count_tokens(texts)


def test_embeddings_need_a_known_api_key(stack: Stack) -> None:
    body = {"model": "all-MiniLM-L6-v2", "input": "hello"}
    assert stack.http.post("/v1/embeddings", json=body).json()["error"]["reason"] == "missing_api_key"
    r = stack.http.post("/v1/embeddings", json=body, headers={"authorization": "Bearer nope"})
    assert r.status_code == 401 and r.json()["error"]["reason"] == "invalid_api_key"


# ---------------------------------------------------------------------------- docs and favicon


def test_the_api_docs_load_every_asset_from_this_gateway_and_may_load_nothing_from_elsewhere(stack: Stack) -> None:
    import re

    for page in ("/docs", "/redoc"):
        r = stack.http.get(page)
        assert r.status_code == 200 and "text/html" in r.headers["content-type"]
        # ReDoc's bundle fetches its logo from cdn.redoc.ly: the policy keeps the browser home.
        policy = dict(p.strip().split(" ", 1) for p in r.headers["content-security-policy"].split(";"))
        assert policy["default-src"] == policy["img-src"].split()[0] == policy["connect-src"] == "'self'", policy
        urls = re.findall(r"""(?:src|href)=["']([^"']+)["']|url: ?["']([^"']+)["']""", r.text)
        refs = [a or b for a, b in urls]
        assert refs and not [u for u in refs if "//" in u], f"{page} refers elsewhere: {refs}"
        scripts = [u for u in refs if u.endswith(".js")]
        assert scripts, refs
        for u in refs:
            got = stack.http.get(u)
            assert got.status_code == 200 and len(got.content) > 0, (page, u, got.status_code)
    assert stack.http.get("/openapi.json").json()["paths"]


def test_the_favicon_is_served(stack: Stack) -> None:
    r = stack.http.get("/favicon.ico")
    assert r.status_code == 200 and r.headers["content-type"] == "image/x-icon"
    assert r.content[:4] == b"\x00\x00\x01\x00"  # an ICO file


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
    assert health["ok"] and health["index_ok"] and health["feed_running"] and health["blob_sweeper_running"]


# ---------------------------------------------------------------------------- blob retention
# Last in the module: the sweeps below run with a clock past every upload's expiry.


def test_blob_retention_must_outlast_the_challenge_window(stack: Stack) -> None:
    from gateway.app import create_app
    from gateway.errors import ConfigurationError

    window = stack.hearth.market_params().challenge_window
    with pytest.raises(ConfigurationError, match="challenge window"):
        create_app(stack.settings.model_copy(update={"blob_retention_s": window}), manifest=stack.devnet.manifest)
    create_app(stack.settings.model_copy(update={"blob_retention_s": window + 1}), manifest=stack.devnet.manifest)


def test_the_sweeper_deletes_expired_blobs_unless_an_open_job_names_them(stack: Stack) -> None:
    from gateway.retention import BlobSweeper

    ctx = stack.ctx
    stack.approve("client")
    loose = os.urandom(900)
    loose_id = upload(stack, loose, "client").json()["id"]
    job = stack.signed_job(texts=["kept while the job is open"])
    held_id = job["request"]["inputHash"]
    assert upload(stack, job["input"].encode(), "client").status_code == 201
    posted = stack.post_job({**{k: v for k, v in job.items() if k != "input"}, "blob_id": held_id})
    stack.wait_indexed(posted["block_number"])
    untracked = ctx.blobs.store.put(b"written by a local worker, not through the API")

    retention = ctx.blob_policy.retention_s
    later = int(time.time()) + retention + 10
    # Before expiry nothing goes.
    assert BlobSweeper(ctx.blobs, ctx.db_engine, ctx.index_engine, ctx.blob_policy, 1).sweep()[0] == []
    deleted, kept = BlobSweeper(ctx.blobs, ctx.db_engine, ctx.index_engine, ctx.blob_policy, 1,
                                clock=lambda: later).sweep()
    assert loose_id in deleted and held_id in kept and held_id not in deleted
    assert stack.http.get(f"/v1/blobs/{loose_id}").json()["error"]["reason"] == "blob_not_found"
    assert stack.http.get(f"/v1/blobs/{held_id}").status_code == 200
    assert ctx.blobs.has(untracked), "blobs the gateway did not accept are not its to delete"
    # The open job's input was renewed for a further period; once the job is over, it goes.
    much_later = later + retention + 10
    assert held_id in BlobSweeper(ctx.blobs, ctx.db_engine, ctx.index_engine, ctx.blob_policy, 1,
                                  clock=lambda: much_later).sweep()[1], "still open: kept again"
    stack.chain.advance(901)  # past the job's deadline: nobody claimed it
    rcpt = stack.hearth.refund(stack.key("client"), posted["job_id"])
    stack.wait_indexed(rcpt["blockNumber"])
    assert stack.http.get(f"/v1/jobs/{posted['job_id']}").json()["status"] == "refunded"
    deleted, kept = BlobSweeper(ctx.blobs, ctx.db_engine, ctx.index_engine, ctx.blob_policy, 1,
                                clock=lambda: much_later + retention + 10).sweep()
    assert held_id in deleted and not ctx.blobs.has(held_id)
