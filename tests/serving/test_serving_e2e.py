"""The serving plane end to end on a real devnet over real HTTP: the official ``openai`` client
through the gateway to two provider endpoint processes. Outputs equal the in-process encoder's
bit for bit; every answered request is one leaf of one committed batch and is paid once;
routing follows region and price; a lane running dry and a revoked signer are refused with
402 and a machine-readable reason, and nothing is charged for them."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from eth_utils import keccak
from serving_stack import USD, ServingStack, api_key, authorize_gateway, fund_lanes

from contracts.merkle import verify as verify_proof
from contracts.serving import work_receipt_from_json
from contracts.settlement import recover_work_receipt, work_leaf

TEXTS = [
    ["Hearth answers embeddings in inference time."],
    ["Receipts are batched.", "Vouchers are collected later.", "短い文"],
    ["one", "two", "three", "four", "five", "six", "seven", "eight"],
]


def client(stack: ServingStack, key: str, **headers: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.base_url + "/v1", api_key=key, max_retries=0, timeout=60,
                         default_headers=headers or None)


@pytest.fixture(scope="module")
def encoder() -> Any:
    from worker.node.compute import shared_encoder

    return shared_encoder("torch", "fp32", "cpu")


@pytest.fixture(scope="module")
def key(stack: ServingStack) -> str:
    return api_key(stack, "client")


def served(stack: ServingStack) -> dict[str, Any]:
    from gateway.serving import served_requests

    return {r.request_id: r for r in served_requests(stack.ctx)}


def raw_embed(stack: ServingStack, key: str, texts: list[str], **headers: str) -> httpx.Response:
    return stack.http.post("/v1/embeddings", json={"model": "all-MiniLM-L6-v2", "input": texts},
                           headers={"authorization": f"Bearer {key}", **headers})


def test_the_openai_client_gets_embeddings_bitwise_equal_to_the_in_process_encoder(
        stack: ServingStack, key: str, encoder: Any) -> None:
    c = client(stack, key)
    for texts in TEXTS:
        r = c.embeddings.create(model="all-MiniLM-L6-v2", input=texts)
        got = np.array([d.embedding for d in r.data], dtype=np.float32)
        want = encoder.encode(texts)
        assert got.tobytes() == np.ascontiguousarray(want, dtype="<f4").tobytes()
        h = r.model_extra["hearth"] if r.model_extra else None
        assert h is not None and h["path"] == "serving"
        assert h["provider"] in {p.address for p in stack.providers.values()}
        rec = work_receipt_from_json(h["receipt"])
        assert rec.request_id.hex() == h["request_id"][2:]
        assert r.usage.prompt_tokens == rec.units == sum(encoder.count_tokens(texts))


def test_routing_prefers_the_cheapest_provider_and_the_clients_region_when_asked(
        stack: ServingStack, key: str) -> None:
    cheap, eu = stack.providers["verifier"], stack.providers["provider"]
    for _ in range(3):
        r = raw_embed(stack, key, ["price decides"])
        assert r.status_code == 200, r.text
        assert r.json()["hearth"]["provider"] == cheap.address
        assert r.json()["hearth"]["cost"] == str(r.json()["usage"]["prompt_tokens"] * cheap.price)
    for _ in range(3):
        r = raw_embed(stack, key, ["region decides"], **{"x-hearth-region": "eu"})
        assert r.status_code == 200, r.text
        assert r.json()["hearth"]["provider"] == eu.address
        assert r.json()["hearth"]["cost"] == str(r.json()["usage"]["prompt_tokens"] * eu.price)


def test_every_answered_request_is_one_leaf_of_one_committed_batch_and_is_paid_exactly_once(
        stack: ServingStack, key: str) -> None:
    regions = ["eu", "us"]
    with ThreadPoolExecutor(8) as pool:
        rs = list(pool.map(lambda i: raw_embed(stack, key, [f"request {i}"] * (1 + i % 3),
                                               **{"x-hearth-region": regions[i % 2]}), range(24)))
    assert all(r.status_code == 200 for r in rs), [r.text for r in rs if r.status_code != 200]
    answered = served(stack)
    s = stack.settlement()
    # Wait until every answered request sits in a committed batch of the provider that answered it.
    end = time.monotonic() + 30
    while True:
        leaves: dict[str, list[tuple[str, int]]] = {}
        for p in stack.providers.values():
            for bid in p.status()["batch_ids"]:
                page = httpx.get(f"{p.url}/v1/serving/batches/{bid}/leaves", timeout=10).json()
                root = bytes.fromhex(page["batch"]["root"][2:])
                for lf in page["leaves"]:
                    rec = work_receipt_from_json(lf["receipt"])
                    leaf = work_leaf(rec, s.chain_id, s.batches.address)
                    assert verify_proof(root, page["batch"]["count"], lf["index"], leaf,
                                        [bytes.fromhex(x[2:]) for x in lf["proof"]])
                    assert recover_work_receipt(rec, bytes.fromhex(lf["signature"][2:]), s.chain_id,
                                                s.batches.address) == p.address
                    leaves.setdefault("0x" + rec.request_id.hex(), []).append((p.address, bid))
        if all(rid in leaves for rid in answered) or time.monotonic() > end:
            break
        time.sleep(0.5)
    for rid, row in answered.items():
        assert leaves.get(rid) is not None, f"request {rid} is in no committed batch"
        assert len(leaves[rid]) == 1 and leaves[rid][0][0] == row.provider
    # The batches are the ones on-chain: each root was committed once, by its provider.
    logs = s.batches.events.BatchCommitted().get_logs(from_block=0)
    on_chain = {int(lg["args"]["batchId"]): lg["args"]["provider"] for lg in logs}
    for holders in leaves.values():
        for provider, bid in holders:
            assert on_chain[bid] == provider
    # Paid exactly once: each lane's collected value ends at what the gateway recorded as served.
    payer = stack.address("client")
    for p in stack.providers.values():
        want = sum(r.value for r in answered.values() if r.provider == p.address)
        end = time.monotonic() + 30
        while s.lane(payer, p.address).collected != want and time.monotonic() < end:
            time.sleep(0.3)
        assert s.lane(payer, p.address).collected == want
    # And the key was charged exactly that.
    from gateway.store import ApiKey, session

    with session(stack.ctx.db_engine) as db:
        k = db.get(ApiKey, "0x" + keccak(text=key).hex())
        assert k is not None and k.spent == sum(r.value for r in answered.values())


def test_a_lane_running_dry_is_refused_with_402_and_a_reason_and_charges_nothing(stack: ServingStack) -> None:
    price = stack.providers["verifier"].price
    fund_lanes(stack, "client2", {"verifier": 25 * price, "provider": 1})
    authorize_gateway(stack, "client2")
    k2 = api_key(stack, "client2")
    first = raw_embed(stack, k2, ["Hearth answers embeddings in inference time."])  # ~11 tokens
    assert first.status_code == 200, first.text
    before = served(stack)
    r = raw_embed(stack, k2, ["Hearth answers embeddings in inference time, and again, and again."])
    assert r.status_code == 402, r.text
    assert r.json()["error"]["reason"] == "lane_exhausted"
    assert r.headers["x-should-retry"] == "false"
    assert served(stack).keys() == before.keys()
    with pytest.raises(openai.APIStatusError) as exc:
        client(stack, k2).embeddings.create(model="all-MiniLM-L6-v2",
                                            input=["Hearth answers, and again, and again, and again, and again."])
    assert exc.value.status_code == 402


def test_an_api_key_revoked_by_any_gateway_process_is_refused_at_once_and_charges_nothing(
        stack: ServingStack) -> None:
    import sqlalchemy as sa
    from sqlmodel import col

    from gateway import apikeys, store

    def spent(kh: str) -> int:
        with store.session(stack.ctx.db_engine) as s:
            row = s.get(store.ApiKey, kh)
            assert row is not None
            return row.spent

    k = api_key(stack, "client")
    kh = "0x" + keccak(text=k).hex()
    assert raw_embed(stack, k, TEXTS[0]).status_code == 200  # this process now holds the key's row
    # Another gateway process sharing the database revokes it: this one's cached row is stale.
    with store.session(stack.ctx.db_engine) as s:
        s.execute(sa.update(store.ApiKey).where(col(store.ApiKey.key_hash) == kh).values(revoked_at=store.now()))
    before, charged = served(stack), spent(kh)
    r = raw_embed(stack, k, TEXTS[0])
    assert r.status_code == 401 and r.json()["error"]["reason"] == "api_key_revoked", r.text
    assert served(stack).keys() == before.keys() and spent(kh) == charged

    k2 = api_key(stack, "client")
    assert raw_embed(stack, k2, TEXTS[0]).status_code == 200
    apikeys.revoke(stack.ctx, stack.address("client"), "0x" + keccak(text=k2).hex())  # through this process
    r = raw_embed(stack, k2, TEXTS[0])
    assert r.status_code == 401 and r.json()["error"]["reason"] == "api_key_revoked", r.text

    poor = api_key(stack, "client", cap=1)
    r = raw_embed(stack, poor, TEXTS[0])
    assert r.status_code == 402 and r.json()["error"]["reason"] == "spending_cap_exceeded", r.text
    assert "left of its cap" in r.json()["error"]["message"] and spent("0x" + keccak(text=poor).hex()) == 0


def test_a_signer_being_revoked_stops_service_at_once(stack: ServingStack) -> None:
    from deploy.devnet import fund

    s = stack.settlement()
    fund(stack.hearth, stack.key("deployer"), stack.address("spare"), usd=100 * USD)
    fund_lanes(stack, "spare", {"verifier": 5 * USD, "provider": 5 * USD})
    authorize_gateway(stack, "spare")
    k = api_key(stack, "spare")
    assert raw_embed(stack, k, ["before the revocation"]).status_code == 200
    signer = stack.ctx.serving.signer
    stack.hearth.sender(stack.key("spare")).send(s.escrow.functions.thawSigner(signer))
    time.sleep(1.0)  # a block's refresh
    r = raw_embed(stack, k, ["after the revocation"])
    assert r.status_code == 402, r.text
    assert r.json()["error"]["reason"] == "signer_revoked"
    assert r.headers["x-should-retry"] == "false"



def paid_request(stack: ServingStack, provider: str, texts: list[str], *, signer_key: str | None = None,
                 value: int | None = None, payer: str = "client", pay_to: str | None = None,
                 request_id: bytes | None = None) -> httpx.Response:
    """A request straight to a provider endpoint with a payment receipt built by hand."""
    import secrets

    from common.tokenizer import TextTokenizer
    from contracts.serving import PAYMENT_HEADER, encode_payment
    from contracts.settlement import PaymentReceipt, sign_payment_receipt

    p = stack.providers[provider]
    s = stack.settlement()
    units = sum(TextTokenizer().count_tokens(texts))
    pr = PaymentReceipt(stack.address(payer), pay_to or p.address, request_id or secrets.token_bytes(32),
                        units * p.price if value is None else value, int(time.time()))
    sig = sign_payment_receipt(signer_key or stack.ctx.serving.signer_key, pr, s.chain_id, s.escrow.address)
    return httpx.post(f"{p.url}/v1/embeddings", json={"model": stack.model_id, "input": texts},
                      headers={PAYMENT_HEADER: encode_payment(pr, sig)}, timeout=30)


def test_a_provider_refuses_receipts_that_pay_the_wrong_value_or_provider_or_come_from_a_stranger(
        stack: ServingStack) -> None:
    texts = ["pay me right"]
    ok = paid_request(stack, "verifier", texts)
    assert ok.status_code == 200, ok.text
    cases = {
        "wrong_value": paid_request(stack, "verifier", texts, value=1),
        "wrong_provider": paid_request(stack, "verifier", texts, pay_to=stack.address("provider")),
        "signer_not_authorized": paid_request(stack, "verifier", texts, signer_key="0x" + "11" * 32),
    }
    for reason, r in cases.items():
        assert r.status_code == 402, r.text
        assert r.json()["error"]["reason"] == reason
    missing = httpx.post(f"{stack.providers['verifier'].url}/v1/embeddings",
                         json={"model": stack.model_id, "input": texts}, timeout=30)
    assert missing.status_code == 402 and missing.json()["error"]["reason"] == "payment_missing"
    # A receipt's request id is served once: a replay is refused, not served (and paid) again.
    rid = bytes.fromhex(ok.json()["hearth"]["receipt"]["requestId"][2:])
    again = paid_request(stack, "verifier", texts, request_id=rid)
    assert again.status_code == 409 and again.json()["error"]["reason"] == "request_replayed"



def test_a_thaw_on_a_lane_stops_service_at_once_and_the_provider_collects_what_it_is_owed(
        stack: ServingStack) -> None:
    """client2's lane to the cheap provider served one request (the lane test above); the
    payer now announces a thaw of what is left."""
    s = stack.settlement()
    cheap = stack.providers["verifier"]
    payer = stack.address("client2")
    owed = sum(r.value for r in served(stack).values() if r.payer == payer and r.provider == cheap.address)
    assert owed > 0
    lane = s.lane(payer, cheap.address)
    stack.hearth.sender(stack.key("client2")).send(s.escrow.functions.thaw(cheap.address, lane.balance - owed))
    time.sleep(1.0)  # a block's refresh
    r = paid_request(stack, "verifier", ["during the thaw"], payer="client2")
    assert r.status_code == 402, r.text
    assert r.json()["error"]["reason"] == "lane_thawing"
    end = time.monotonic() + 20
    while s.lane(payer, cheap.address).collected != owed and time.monotonic() < end:
        time.sleep(0.2)
    assert s.lane(payer, cheap.address).collected == owed



def test_a_wallet_that_did_not_authorize_the_gateways_signer_keeps_the_per_job_path(stack: ServingStack) -> None:
    """verifier2 never authorized the signer: its request is priced for an on-chain job, which
    its zero allowance to the relayer refuses before anything is posted or charged."""
    k = api_key(stack, "verifier2")
    before = served(stack)
    r = raw_embed(stack, k, ["which path?"])
    assert r.status_code == 402, r.text
    assert r.json()["error"]["reason"] == "insufficient_allowance"
    assert r.headers["x-should-retry"] == "false"
    assert served(stack).keys() == before.keys()


# ---------------------------------------------------------------- idempotency keys


def test_a_request_sent_again_with_its_idempotency_key_gets_the_first_answer_and_is_charged_once(
        stack: ServingStack, key: str) -> None:
    texts = ["an answer lost on its way back", "is asked for again"]
    before, spent_before = served(stack), spent(stack, key)
    first = raw_embed(stack, key, texts, **{"Idempotency-Key": "lost-answer-1"})
    assert first.status_code == 200, first.text and "idempotent-replayed" not in first.headers
    again = raw_embed(stack, key, texts, **{"Idempotency-Key": "lost-answer-1"})
    assert again.status_code == 200 and again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    new = set(served(stack)) - set(before)
    assert new == {first.json()["hearth"]["request_id"]}
    assert spent(stack, key) - spent_before == int(first.json()["hearth"]["cost"]) > 0
    # Without the key the same texts are a new request, charged again.
    third = raw_embed(stack, key, texts)
    assert third.status_code == 200 and third.json()["hearth"]["request_id"] != first.json()["hearth"]["request_id"]
    assert spent(stack, key) - spent_before == 2 * int(first.json()["hearth"]["cost"])


def test_an_idempotency_key_is_per_api_key_and_refused_for_another_request_or_while_in_flight(
        stack: ServingStack, key: str) -> None:
    from gateway import idempotency

    other = api_key(stack, "client")
    a = raw_embed(stack, key, ["the first use of a key"], **{"Idempotency-Key": "shared-name"})
    b = raw_embed(stack, other, ["another API key, the same idempotency key"], **{"Idempotency-Key": "shared-name"})
    assert a.status_code == b.status_code == 200
    assert a.json()["hearth"]["request_id"] != b.json()["hearth"]["request_id"]
    before, spent_before = served(stack), spent(stack, key)
    reused = raw_embed(stack, key, ["a different request"], **{"Idempotency-Key": "shared-name"})
    assert (reused.status_code, reused.json()["error"]["reason"]) == (422, "idempotency_key_reused")
    # A claim held by a request in flight (here: made directly, as a gateway mid-request would).
    kh = "0x" + keccak(text=key).hex()
    body = {"model": "all-MiniLM-L6-v2", "input": ["in flight"], "encoding_format": "float", "dimensions": None,
            "user": None}
    held = idempotency.claim(stack.ctx.db_engine, kh, "in-flight", idempotency.fingerprint(
        "/v1/embeddings", [body, None]), 60)
    assert held is not None and held.replay is None
    busy = raw_embed(stack, key, ["in flight"], **{"Idempotency-Key": "in-flight"})
    assert (busy.status_code, busy.json()["error"]["reason"]) == (409, "idempotency_key_in_use"), busy.text
    assert 1 <= int(busy.headers["retry-after"]) <= 60
    bad = raw_embed(stack, key, ["x"], **{"Idempotency-Key": "has spaces in it"})
    assert (bad.status_code, bad.json()["error"]["reason"]) == (400, "invalid_idempotency_key")
    assert served(stack).keys() == before.keys() and spent(stack, key) == spent_before


def test_a_claim_left_by_a_dead_gateway_is_taken_over_and_its_late_owner_can_no_longer_record(
        stack: ServingStack, key: str) -> None:
    """A gateway that died (or stalled past its lease) mid-request recorded nothing: a retry runs
    the request; the stalled one, should it wake up, cannot store an answer or charge again."""
    import sqlalchemy as sa

    from gateway import idempotency

    kh = "0x" + keccak(text=key).hex()
    body = {"model": "all-MiniLM-L6-v2", "input": ["a dead gateway's request"], "encoding_format": "float",
            "dimensions": None, "user": None}
    print_ = idempotency.fingerprint("/v1/embeddings", [body, None])
    stale = idempotency.claim(stack.ctx.db_engine, kh, "dead-gateway", print_, 0.05)
    assert stale is not None
    time.sleep(0.1)
    # Taken over while the stalled owner still holds its (expired) claim: the owner can no longer finish.
    taker = idempotency.claim(stack.ctx.db_engine, kh, "dead-gateway", print_, 60)
    assert taker is not None and taker.owner != stale.owner and taker.replay is None
    with pytest.raises(idempotency.IdempotencyLostError), stack.ctx.db_engine.begin() as c:
        idempotency.finish(c, stale, {"a": "late answer"})
    idempotency.abandon(stack.ctx.db_engine, taker)  # the taker failed in turn: the key is free again
    spent_before = spent(stack, key)
    r = raw_embed(stack, key, ["a dead gateway's request"], **{"Idempotency-Key": "dead-gateway"})
    assert r.status_code == 200, r.text
    assert spent(stack, key) - spent_before == int(r.json()["hearth"]["cost"])
    with pytest.raises(idempotency.IdempotencyLostError), stack.ctx.db_engine.begin() as c:
        idempotency.finish(c, stale, {"a": "late answer"})
    again = raw_embed(stack, key, ["a dead gateway's request"], **{"Idempotency-Key": "dead-gateway"})
    assert again.json() == r.json() and spent(stack, key) - spent_before == int(r.json()["hearth"]["cost"])
    with stack.ctx.db_engine.connect() as c:
        assert c.execute(sa.text("SELECT count(*) FROM gw_idempotency WHERE idem_key = 'dead-gateway'")).scalar() == 1


def test_a_request_that_fails_gives_its_idempotency_key_back_and_charges_nothing(stack: ServingStack) -> None:
    import sqlalchemy as sa

    poor = api_key(stack, "client", cap=1)  # refused at the reservation, after the key was claimed
    for _ in range(2):  # the second is refused for the same reason, not as "in flight"
        r = raw_embed(stack, poor, ["more than one wei of work"], **{"Idempotency-Key": "failed-once"})
        assert r.status_code == 402, r.text
        assert r.json()["error"]["reason"] != "idempotency_key_in_use"
    with stack.ctx.db_engine.connect() as c:
        assert c.execute(sa.text("SELECT count(*) FROM gw_idempotency WHERE idem_key = 'failed-once'")).scalar() == 0
    assert spent(stack, poor) == 0


# ---------------------------------------------------------------- failover (these run last: they kill a provider)


def spent(stack: ServingStack, key: str) -> int:
    from gateway.store import ApiKey, session

    with session(stack.ctx.db_engine) as db:
        k = db.get(ApiKey, "0x" + keccak(text=key).hex())
        assert k is not None
        return int(k.spent)


def test_a_provider_killed_mid_flight_leaves_every_request_answered_by_the_other_and_none_charged_twice(
        stack: ServingStack, key: str) -> None:
    eu, other = stack.providers["provider"], stack.providers["verifier"]
    before, spent_before = served(stack), spent(stack, key)
    texts = [f"sentence {k} of a request that keeps the provider busy for a while" for k in range(8)]

    def one(i: int) -> httpx.Response:
        return raw_embed(stack, key, texts, **{"x-hearth-region": "eu"})

    with ThreadPoolExecutor(8) as pool:
        futs = [pool.submit(one, i) for i in range(40)]
        end = time.monotonic() + 30
        while eu.status()["served_requests"] < 4:  # in full flow: kill it now
            assert time.monotonic() < end
            time.sleep(0.05)
        eu.kill9()
        rs = [f.result() for f in futs]
    assert all(r.status_code == 200 for r in rs), [r.text for r in rs if r.status_code != 200]
    infos = [r.json()["hearth"] for r in rs]
    assert {h["provider"] for h in infos} <= {eu.address, other.address}
    assert any(h["provider"] == other.address and h["attempts"] >= 2 for h in infos), "no request was retried"
    after = served(stack)
    new = {rid: row for rid, row in after.items() if rid not in before}
    assert sorted(new) == sorted(h["request_id"] for h in infos)  # each request recorded once
    assert all(new[h["request_id"]].provider == h["provider"] for h in infos)
    assert spent(stack, key) - spent_before == sum(int(h["cost"]) for h in infos) == sum(r.value for r in new.values())


def test_a_provider_restarted_after_kill_9_lost_no_leaf_and_no_receipt_and_is_paid_once(stack: ServingStack) -> None:
    eu = stack.providers["provider"]
    eu.start().wait_healthy()
    s = stack.settlement()
    mine = {rid: r for rid, r in served(stack).items() if r.provider == eu.address}
    assert mine
    end = time.monotonic() + 30
    while True:
        leaves = set()
        for bid in eu.status()["batch_ids"]:
            page = httpx.get(f"{eu.url}/v1/serving/batches/{bid}/leaves", timeout=10).json()
            leaves |= {lf["receipt"]["requestId"] for lf in page["leaves"]}
        if set(mine) <= leaves or time.monotonic() > end:
            break
        time.sleep(0.3)
    assert set(mine) <= leaves, f"{len(set(mine) - leaves)} answered requests lost their leaf"
    payer = stack.address("client")
    # The client's lane only: under load the routing may have sent another payer's request here.
    want = sum(r.value for r in mine.values() if r.payer.lower() == payer.lower())
    end = time.monotonic() + 30
    while s.lane(payer, eu.address).collected != want and time.monotonic() < end:
        time.sleep(0.3)
    assert s.lane(payer, eu.address).collected == want
