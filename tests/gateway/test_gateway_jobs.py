"""Job submission and job state through the gateway, against the real devnet and indexer:
signed jobs relayed and followed through every state; forged, replayed and otherwise bad
requests refused with a machine-readable reason, nothing relayed and nothing stored."""

from __future__ import annotations

import base64
import json
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from eth_utils import keccak
from gateway_stack import PROVIDER, USD, Stack, deliver, upload

from contracts import eip712


def relayer_tx_count(stack: Stack) -> int:
    return int(stack.hearth.w3.eth.get_transaction_count(stack.address("relayer")))


@pytest.fixture(scope="module")
def approved(stack: Stack) -> Stack:
    stack.approve("client")
    return stack


def test_a_signed_job_is_relayed_and_its_state_comes_from_the_index(approved: Stack,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    stack = approved
    body = stack.signed_job(texts=["the gateway relays this"])
    before = stack.hearth.usd.functions.balanceOf(stack.address("client")).call()
    with caplog.at_level(logging.INFO, logger="gateway.relay"):
        out = stack.post_job(body)
    job_id, tx = out["job_id"], out["tx_hash"]
    assert out["kind"] == "signed" and out["client"] == stack.address("client") and out["error"] is None
    assert out["mined_tx"] == tx and out["job_url"] == f"/v1/jobs/{job_id}"
    assert stack.hearth.usd.functions.balanceOf(stack.address("client")).call() == before - 5 * USD
    assert any(f"job relayed tx {tx}" in m for m in caplog.messages)
    assert any(f"job {job_id} relayed tx {tx} mined in block {out['block_number']}" in m for m in caplog.messages)

    stack.wait_indexed(out["block_number"])
    job = stack.http.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "posted" and job["client"] == stack.address("client")
    assert job["relayer"] == stack.address("relayer")
    assert job["history"] == [{"status": "posted", "block": out["block_number"], "tx_hash": tx,
                               "at": job["history"][0]["at"]}]
    blob = stack.http.get(f"/v1/blobs/{body['request']['inputHash']}")
    assert blob.content == body["input"].encode()

    listed = stack.http.get("/v1/jobs", params={"client": stack.address("client").lower(), "status": "posted"}).json()
    assert job_id in [j["job_id"] for j in listed["items"]]
    assert "hearth_gateway_jobs_relayed_total" in stack.http.get("/metrics").text


def test_a_job_moves_through_claimed_delivered_and_finalized_with_tx_hashes_and_times(approved: Stack) -> None:
    stack = approved
    job_id = stack.post_job(texts=["follow me"])["job_id"]
    output = os.urandom(1536)
    deliver_tx = deliver(stack, job_id, output)
    job = stack.wait_status(job_id, "delivered")
    assert [h["status"] for h in job["history"]] == ["posted", "claimed", "delivered"]
    assert job["history"][2]["tx_hash"] == deliver_tx and job["provider"] == stack.address(PROVIDER)

    result = stack.http.get(f"/v1/jobs/{job_id}/result").json()
    assert result["verification"]["output_hash_matches_receipt"] is True
    assert result["receipt"]["output_hash"] == "0x" + keccak(output).hex()
    assert base64.b64decode(result["output_base64"]) == output
    assert len(result["embeddings"]) == 1 and len(result["embeddings"][0]) == 384

    stack.chain.advance(601)
    stack.hearth.finalize(stack.key("client"), job_id)
    job = stack.wait_status(job_id, "finalized")
    assert [h["status"] for h in job["history"]] == ["posted", "claimed", "delivered", "finalized"]
    assert all(h["tx_hash"].startswith("0x") and h["at"] > 0 for h in job["history"])
    assert int(job["provider_amount"]) + int(job["fee"]) + int(job["client_refund"]) == int(job["max_payment"])
    stats = stack.http.get("/v1/stats").json()
    assert stats["jobs_by_status"]["finalized"] >= 1 and stats["median_latency_s"] is not None


def test_a_result_without_the_output_blob_is_reported_unverifiable(approved: Stack) -> None:
    stack = approved
    job_id = stack.post_job(texts=["lost output"])["job_id"]
    early = stack.http.get(f"/v1/jobs/{job_id}/result").json()
    assert early["error"]["reason"] in ("result_not_ready", "job_not_found")
    deliver(stack, job_id, os.urandom(1536), upload_output=False)
    stack.wait_status(job_id, "delivered")
    v = stack.http.get(f"/v1/jobs/{job_id}/result").json()["verification"]
    assert v["output_available"] is False and v["output_hash_matches_receipt"] is False


def test_a_replayed_signature_is_rejected_and_only_one_job_is_posted(approved: Stack) -> None:
    stack = approved
    body = stack.signed_job(texts=["only once"])
    stack.post_job(body)
    count = stack.hearth.market.functions.jobCount().call()
    sent = relayer_tx_count(stack)
    r = stack.http.post("/v1/jobs", json=body)
    assert r.status_code == 409 and r.json()["error"]["reason"] == "nonce_used"
    assert r.json()["error"]["details"]["expected"] == int(body["request"]["nonce"]) + 1
    assert stack.hearth.market.functions.jobCount().call() == count and relayer_tx_count(stack) == sent


def test_a_permit_lets_a_wallet_without_allowance_post(stack: Stack) -> None:
    h = stack.hearth
    owner = stack.address("client2")
    assert h.usd.functions.allowance(owner, h.market.address).call() == 0
    pt = stack.http.get("/v1/jobs/permit-typed-data", params={"owner": owner, "value": 5 * USD}).json()["typed_data"]
    v, r_, s_ = eip712.sign_permit(stack.key("client2"), pt["domain"]["name"], h.usd.address, h.chain_id, owner,
                                   h.market.address, 5 * USD, int(pt["message"]["nonce"]),
                                   int(pt["message"]["deadline"]))
    body = stack.signed_job("client2", texts=["paid by permit"])
    body["permit"] = {"value": 5 * USD, "deadline": pt["message"]["deadline"], "v": v,
                      "r": "0x" + r_.hex(), "s": "0x" + s_.hex()}
    stack.post_job(body)
    bad = stack.signed_job("client2", texts=["forged permit"], max_payment=6 * USD)
    bad["permit"] = {**body["permit"], "value": 6 * USD}
    r = stack.http.post("/v1/jobs", json=bad)
    assert r.status_code == 400 and r.json()["error"]["reason"] == "invalid_permit"


@contextmanager
def _manual_mining(stack: Stack) -> Iterator[None]:
    stack.chain.rpc("evm_setAutomine", [False])
    try:
        yield
    finally:
        stack.chain.rpc("evm_setAutomine", [True])


def test_relaying_answers_202_before_mining_and_pipelines_a_clients_requests(approved: Stack) -> None:
    stack = approved
    h = stack.hearth
    nonce = h.market.functions.nonces(stack.address("client")).call()
    first = stack.signed_job(texts=["in flight"])
    second = stack.signed_job(texts=["right behind it"], nonce=nonce + 1)
    jobs = h.market.functions.jobCount().call()
    with _manual_mining(stack):
        answers = [stack.http.post("/v1/jobs", json=b) for b in (first, second)]
        assert [a.status_code for a in answers] == [202, 202], [a.text for a in answers]
        txs = [a.json()["tx_hash"] for a in answers]
        assert [stack.http.get(f"/v1/relays/{t}").json()["status"] for t in txs] == ["pending", "pending"]
        assert h.market.functions.jobCount().call() == jobs, "nothing is mined yet"
        stack.chain.mine()
    relays = [stack.wait_relay(t) for t in txs]
    assert [r["status"] for r in relays] == ["mined", "mined"]
    assert [r["job_id"] for r in relays] == [jobs + 1, jobs + 2]
    assert relays[0]["block_number"] == relays[1]["block_number"]


def test_a_relay_that_reverts_after_the_202_records_why_and_charges_nothing(approved: Stack) -> None:
    stack = approved
    h = stack.hearth
    client = stack.address("client")
    body = stack.signed_job(texts=["overtaken by its own client"])
    before, jobs = h.usd.functions.balanceOf(client).call(), h.market.functions.jobCount().call()
    w3 = h.w3
    with _manual_mining(stack):
        r = stack.http.post("/v1/jobs", json=body)
        assert r.status_code == 202, r.text
        tx = r.json()["tx_hash"]
        assert stack.ctx.blobs.has(body["request"]["inputHash"])
        # The client withdraws the market's allowance with a higher tip: mined first, same block.
        revoke = h.usd.functions.approve(h.market.address, 0).build_transaction({
            "from": client, "nonce": w3.eth.get_transaction_count(client, "pending"), "gas": 100_000,
            "maxPriorityFeePerGas": w3.to_wei(50, "gwei"), "maxFeePerGas": w3.to_wei(500, "gwei")})
        w3.eth.send_raw_transaction(w3.eth.account.sign_transaction(revoke, stack.key("client")).raw_transaction)
        stack.chain.mine()
    try:
        relay = stack.wait_relay(tx)
        assert relay["status"] == "reverted" and relay["job_id"] is None and relay["job_url"] is None, relay
        assert relay["error"]["revert"] == "ERC20InsufficientAllowance"
        assert relay["error"]["reason"] == "insufficient_allowance" and "reverted" in relay["error"]["message"]
        assert h.usd.functions.balanceOf(client).call() == before, "a reverted relay charges nothing"
        assert h.market.functions.jobCount().call() == jobs
        assert not stack.ctx.blobs.has(body["request"]["inputHash"]), "the input stored for it is dropped"
    finally:
        stack.approve("client")


def test_a_relay_left_pending_by_a_gone_process_is_settled_from_its_receipt(approved: Stack) -> None:
    from contracts.types import JobRequest
    from gateway import store

    stack = approved
    body = stack.signed_job(texts=["the waiter died"])
    q = body["request"]
    req = JobRequest(q["client"], bytes.fromhex(q["modelId"][2:]), bytes.fromhex(q["inputHash"][2:]),
                     int(q["maxPayment"]), int(q["deadline"]), int(q["nonce"]))
    pending = stack.ctx.chain.relay(req, bytes.fromhex(body["signature"][2:]), None)  # broadcast, nobody waits
    tx = "0x" + bytes(pending.tx_hash).hex()
    store.add_relay(stack.ctx.db_engine, tx, "signed", q["client"], store.now())
    relay = stack.wait_relay(tx)
    assert relay["status"] == "mined" and relay["job_id"] == stack.hearth.market.functions.jobCount().call()
    assert stack.http.get(f"/v1/relays/0x{'ab' * 32}").json()["error"]["reason"] == "relay_not_found"
    assert stack.http.get("/v1/relays/0x1234").status_code == 422


def test_typed_data_prices_a_stored_input_and_signs_into_a_postable_job(approved: Stack) -> None:
    from gateway_stack import sign_typed

    stack = approved
    data = b'{"texts":["priced by the gateway"]}'
    up = upload(stack, data, "client").json()
    params = {"client": stack.address("client"), "input_hash": up["id"]}
    td = stack.http.get("/v1/jobs/typed-data", params=params).json()
    from worker.model.weights import MiniLMTokenizer

    assert td["input_stored"] is True and td["units"] == sum(MiniLMTokenizer().count_tokens(["priced by the gateway"]))
    assert td["typed_data"]["message"]["maxPayment"] == str(td["units"] * int(td["price_per_unit"]))
    sig = sign_typed(stack.key("client"), td["typed_data"])
    body = {"request": td["typed_data"]["message"], "signature": sig, "blob_id": up["id"]}
    stack.post_job(body)


# ---------------------------------------------------------------------------- bad input

Forge = Callable[[Stack], tuple[dict[str, Any] | bytes, str | None]]


def _job(stack: Stack, **kw: Any) -> dict[str, Any]:
    return stack.signed_job(texts=[f"bad input {os.urandom(6).hex()}"], **kw)


def _other_chain(stack: Stack) -> tuple[dict[str, Any], str]:
    b = _job(stack, chain_id=1)
    return b, b["request"]["inputHash"]


def _other_chain_named(stack: Stack) -> tuple[dict[str, Any], str]:
    b, h = _other_chain(stack)
    return {**b, "chain_id": 1}, h


def _other_contract(stack: Stack) -> tuple[dict[str, Any], str]:
    b = _job(stack, market=stack.hearth.usd.address)
    return b, b["request"]["inputHash"]


def _other_contract_named(stack: Stack) -> tuple[dict[str, Any], str]:
    b, h = _other_contract(stack)
    return {**b, "verifying_contract": stack.hearth.usd.address}, h


def _forged(stack: Stack) -> tuple[dict[str, Any], str]:
    b = stack.signed_job("client2", texts=["forged"])
    b["request"]["client"] = stack.address("client")
    return b, b["request"]["inputHash"]


def _expired(stack: Stack) -> tuple[dict[str, Any], str]:
    b = _job(stack, deadline=stack.chain_now() - 1)
    return b, b["request"]["inputHash"]


def _reused_nonce(stack: Stack) -> tuple[dict[str, Any], str]:
    nonce = stack.hearth.market.functions.nonces(stack.address("client")).call()
    assert nonce > 0
    b = _job(stack, nonce=nonce - 1)
    return b, b["request"]["inputHash"]


def _future_nonce(stack: Stack) -> tuple[dict[str, Any], str]:
    b = _job(stack, nonce=stack.hearth.market.functions.nonces(stack.address("client")).call() + 5)
    return b, b["request"]["inputHash"]


def _unknown_model(stack: Stack) -> tuple[dict[str, Any], str]:
    b = _job(stack, model_id="0x" + "ab" * 32)
    return b, b["request"]["inputHash"]


def _oversized(stack: Stack) -> tuple[dict[str, Any], str]:
    b = stack.signed_job(texts=["x" * (stack.settings.max_blob_bytes + 10)])
    return b, b["request"]["inputHash"]


def _no_balance(stack: Stack) -> tuple[dict[str, Any], str]:
    b = stack.signed_job("spare", texts=["no money"], max_payment=1)
    return b, b["request"]["inputHash"]


def _no_allowance(stack: Stack) -> tuple[dict[str, Any], str]:
    b = stack.signed_job("client2", texts=["no allowance"], max_payment=10 * USD)
    return b, b["request"]["inputHash"]


def _hash_mismatch(stack: Stack) -> tuple[dict[str, Any], str]:
    b = _job(stack)
    b["input"] = '{"texts":["something else"]}'
    return b, "0x" + keccak(b["input"].encode()).hex()


def _not_job_format(stack: Stack) -> tuple[dict[str, Any], str]:
    from contracts.types import JobRequest

    data = b'{"prompt": "not the job format"}'
    h = stack.hearth
    client = stack.address("client")
    req = JobRequest(client, bytes.fromhex(stack.model_id[2:]), keccak(data), USD, stack.chain_now() + 900,
                     h.market.functions.nonces(client).call())
    sig = eip712.sign_job_request(stack.key("client"), req, h.chain_id, h.market.address)
    return {"request": {"client": client, "modelId": stack.model_id, "inputHash": "0x" + keccak(data).hex(),
                        "maxPayment": USD, "deadline": req.deadline, "nonce": req.nonce},
            "signature": "0x" + sig.hex(), "input": data.decode()}, "0x" + keccak(data).hex()


def _zero_payment(stack: Stack) -> tuple[dict[str, Any], str]:
    b = _job(stack, max_payment=0)
    return b, b["request"]["inputHash"]


def _both_inputs(stack: Stack) -> tuple[dict[str, Any], str]:
    b = _job(stack)
    return {**b, "blob_id": b["request"]["inputHash"]}, b["request"]["inputHash"]


def _unknown_blob(stack: Stack) -> tuple[dict[str, Any], None]:
    b = _job(stack)
    del b["input"]
    return {**b, "blob_id": b["request"]["inputHash"]}, None


def _bad_address(stack: Stack) -> tuple[dict[str, Any], str]:
    b = _job(stack)
    b["request"]["client"] = "0x1234"
    return b, b["request"]["inputHash"]


def _lone_surrogate(stack: Stack) -> tuple[bytes, None]:
    b = _job(stack)
    b["input"] = '{"texts":["abc\ud800def"]}'  # a JSON string no UTF-8 can hold (issue 14, item 1)
    return json.dumps(b).encode(), None  # ensure_ascii: the surrogate travels as the escape \ud800


def _escaped_surrogate(stack: Stack) -> tuple[dict[str, Any], str]:
    b = stack.signed_job(data=b'{"texts":["ok","x\\udfff"]}')  # valid UTF-8 bytes, a lone surrogate once parsed
    return b, b["request"]["inputHash"]


def _empty_text(stack: Stack) -> tuple[dict[str, Any], str]:
    b = stack.signed_job(texts=["fine", ""])
    return b, b["request"]["inputHash"]


def _whitespace_text(stack: Stack) -> tuple[dict[str, Any], str]:
    b = stack.signed_job(texts=[" \n\t\u3000"])
    return b, b["request"]["inputHash"]


def _malformed_json(stack: Stack) -> tuple[bytes, None]:
    return b'{"request": {"client": ', None


def _huge_body(stack: Stack) -> tuple[bytes, None]:
    return b"{" + b" " * (stack.settings.max_request_bytes + 1) + b"}", None


BAD: list[tuple[str, Forge, int, str]] = [
    ("malformed JSON", _malformed_json, 422, "malformed_json"),
    ("a body over the request limit", _huge_body, 413, "body_too_large"),
    ("a bad address", _bad_address, 422, "malformed_request"),
    ("a signature for another chain id", _other_chain, 400, "invalid_signature"),
    ("a signature for another chain id, named", _other_chain_named, 400, "wrong_chain"),
    ("a signature for another contract", _other_contract, 400, "invalid_signature"),
    ("a signature for another contract, named", _other_contract_named, 400, "wrong_contract"),
    ("a signature by another wallet", _forged, 400, "invalid_signature"),
    ("an expired deadline", _expired, 400, "deadline_expired"),
    ("a reused nonce", _reused_nonce, 409, "nonce_used"),
    ("a nonce from the future", _future_nonce, 409, "nonce_out_of_order"),
    ("an unknown model", _unknown_model, 422, "unknown_model"),
    ("an oversized input", _oversized, 413, "input_too_large"),
    ("insufficient balance", _no_balance, 402, "insufficient_balance"),
    ("insufficient allowance", _no_allowance, 402, "insufficient_allowance"),
    ("an input that does not hash to inputHash", _hash_mismatch, 400, "input_hash_mismatch"),
    ("an input not in the job format", _not_job_format, 422, "invalid_input"),
    ("a zero payment", _zero_payment, 400, "zero_payment"),
    ("both input and blob_id", _both_inputs, 400, "input_required"),
    ("a blob id that was never uploaded", _unknown_blob, 422, "blob_not_found"),
    ("a lone surrogate in the input", _lone_surrogate, 400, "invalid_unicode"),
    ("a lone surrogate escaped inside the input's JSON", _escaped_surrogate, 400, "invalid_unicode"),
    ("an empty text", _empty_text, 400, "empty_input"),
    ("a whitespace-only text", _whitespace_text, 400, "empty_input"),
]


@pytest.mark.parametrize(("what", "forge", "status", "reason"), BAD, ids=[b[0] for b in BAD])
def test_bad_job_submissions_are_refused_with_a_reason_and_nothing_relayed_or_stored(
    approved: Stack, what: str, forge: Forge, status: int, reason: str,
) -> None:
    stack = approved
    if forge is _reused_nonce and stack.hearth.market.functions.nonces(stack.address("client")).call() == 0:
        stack.post_job(texts=["first"])
    body, input_hash = forge(stack)
    sent, jobs = relayer_tx_count(stack), stack.hearth.market.functions.jobCount().call()
    if isinstance(body, bytes):
        r = stack.http.post("/v1/jobs", content=body, headers={"content-type": "application/json"})
    else:
        r = stack.http.post("/v1/jobs", json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["reason"] == reason and err["code"] == reason and err["message"]
    assert relayer_tx_count(stack) == sent, "nothing may be relayed"
    assert stack.hearth.market.functions.jobCount().call() == jobs
    if input_hash is not None:
        assert not stack.ctx.blobs.has(input_hash), "nothing may be stored"


def test_unknown_jobs_and_bad_ids_are_4xx(stack: Stack) -> None:
    missing = stack.http.get("/v1/jobs/999999").json()["error"]
    count = stack.hearth.market.functions.jobCount().call()
    assert missing["reason"] == "job_not_found" and missing["details"]["job_count"] == count
    assert f"the market has {count} jobs" in missing["message"]
    assert stack.http.get("/v1/jobs/999999").status_code == 404
    assert stack.http.get("/v1/jobs/0").status_code == 422
    assert stack.http.get(f"/v1/jobs/{2**70}").status_code == 422
    assert stack.http.get("/v1/jobs", params={"client": "nope"}).json()["error"]["reason"] == "invalid_address"
    assert stack.http.get("/v1/jobs", params={"status": "lost"}).status_code == 422
    assert stack.http.get("/v1/nowhere").json()["error"]["reason"] == "not_found"
