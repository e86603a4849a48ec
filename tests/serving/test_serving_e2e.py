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
