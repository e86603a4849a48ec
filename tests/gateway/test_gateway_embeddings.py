"""The official ``openai`` client against ``/v1/embeddings``, end to end: an API key granted by a
wallet, the job posted on-chain, a real worker node (in-process, fetching the input and storing
the output through the gateway's blob API) claiming and delivering it, and the gateway
answering only with output that matches the on-chain receipt. The embeddings must equal the
worker ``Encoder``'s, bit for bit; spending stays within the grant's cap and the allowance."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import openai
import pytest
from gateway_stack import USD, Stack, grant, sign_in

TEXTS = ["Hearth runs inference on GPUs anyone can contribute.", "Receipts bind every result on-chain.", "短い文"]


@pytest.fixture(scope="module")
def worker(stack: Stack) -> Iterator[Any]:
    from contracts.bindings import Hearth
    from worker.node.service import NodeService, build_node
    from worker.settings import WorkerSettings

    settings = WorkerSettings(data_dir=stack.tmp / "worker", blob_url=stack.base_url, gpu_class="cpu",
                              gateway_url=stack.base_url, poll_interval_s=0.2)
    node = build_node(settings, stack.key("provider"), hearth=Hearth(stack.devnet.manifest))
    assert node.provider is not None and node.provider.source.name == "gateway"  # posted jobs from the public API
    svc = NodeService(node)
    svc.start()
    try:
        yield svc
    finally:
        svc.stop()
        node.close()


def key_for(stack: Stack, role: str, cap: int) -> str:
    api_key, body = grant(stack, role, cap=cap)
    r = stack.http.post("/v1/api-keys", json=body)
    assert r.status_code == 201, r.text
    return api_key


def client(stack: Stack, api_key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.base_url + "/v1", api_key=api_key, max_retries=0, timeout=120)


def test_the_openai_client_gets_embeddings_equal_to_the_worker_encoders(stack: Stack, worker: Any) -> None:
    from worker.model.encoder import Encoder
    from worker.model.weights import MiniLMTokenizer

    h = stack.hearth
    wallet, relayer = stack.address("client"), stack.address("relayer")
    stack.approve("client", 1 * USD, spender=relayer)
    api_key = key_for(stack, "client", cap=1 * USD)
    before = h.usd.functions.balanceOf(wallet).call()

    res = client(stack, api_key).embeddings.create(model="all-MiniLM-L6-v2", input=TEXTS)

    assert worker.node.provider.source.name == "gateway"  # found through the public API, never fell back
    got = np.array([d.embedding for d in res.data], dtype=np.float32)
    expected = Encoder(backend="torch", dtype="fp32").encode(TEXTS)
    assert got.shape == (3, 384) and np.array_equal(got, expected)
    units = sum(MiniLMTokenizer().count_tokens(TEXTS))
    assert res.usage.prompt_tokens == res.usage.total_tokens == units
    info = res.model_extra["hearth"] if res.model_extra else {}
    price = stack.devnet.manifest.models[0].price_per_unit
    assert info["verified"] is True and int(info["cost"]) == units * price
    assert h.usd.functions.balanceOf(wallet).call() == before - units * price

    job = stack.http.get(f"/v1/jobs/{info['job_id']}").json()
    assert job["status"] == "delivered" and job["client"] == relayer and job["provider"] == stack.address("provider")
    assert job["paid_by"] == wallet, "the job names the wallet that paid, not only the relayer"
    listed = stack.http.get("/v1/jobs", params={"client": relayer}).json()["items"]
    assert next(j for j in listed if j["job_id"] == info["job_id"])["paid_by"] == wallet
    result = stack.http.get(f"/v1/jobs/{info['job_id']}/result").json()
    assert result["verification"]["output_hash_matches_receipt"]
    assert result["receipt"]["output_hash"] == info["output_hash"]

    single = client(stack, api_key).embeddings.create(model="all-MiniLM-L6-v2", input=TEXTS[0], encoding_format="float")
    assert np.array_equal(np.array(single.data[0].embedding, dtype=np.float32), expected[0])

    token = _session(stack)
    keys = stack.http.get("/v1/api-keys", headers={"authorization": f"Bearer {token}"}).json()
    mine = next(k for k in keys if int(k["spent"]) > 0)
    assert int(mine["spent"]) == (units + sum(MiniLMTokenizer().count_tokens(TEXTS[:1]))) * price
    assert mine["jobs"] == 2


def test_the_gateway_never_spends_beyond_the_cap_or_the_allowance(stack: Stack, worker: Any) -> None:
    h = stack.hearth
    relayer = stack.address("relayer")
    # Cap: 5 wei cannot pay for a 14-token request; nothing is pulled.
    stack.approve("client", 1 * USD, spender=relayer)
    tiny = key_for(stack, "client", cap=5)
    before = h.usd.functions.balanceOf(stack.address("client")).call()
    with pytest.raises(openai.APIStatusError) as exc:
        client(stack, tiny).embeddings.create(model="all-MiniLM-L6-v2", input=TEXTS)
    assert exc.value.status_code == 402 and exc.value.body["reason"] == "spending_cap_exceeded"  # type: ignore[index]
    assert h.usd.functions.balanceOf(stack.address("client")).call() == before

    # Allowance: client2 granted a large cap but never approved the relayer; the reservation is released.
    rich = key_for(stack, "client2", cap=100 * USD)
    with pytest.raises(openai.APIStatusError) as exc:
        client(stack, rich).embeddings.create(model="all-MiniLM-L6-v2", input=TEXTS)
    assert exc.value.status_code == 402 and exc.value.body["reason"] == "insufficient_allowance"  # type: ignore[index]
    from sqlmodel import Session

    from gateway import apikeys, store

    with Session(stack.ctx.db_engine) as s:
        row = s.get(store.ApiKey, apikeys.api_key_hash(rich))
    assert row is not None and row.spent == 0

    with pytest.raises(openai.NotFoundError):
        client(stack, rich).embeddings.create(model="no-such-model", input="x")


def _session(stack: Stack) -> str:
    return sign_in(stack, "client")


def test_token_id_arrays_are_embedded_as_their_text_and_billed_by_their_tokens(stack: Stack, worker: Any) -> None:
    from worker.model.encoder import Encoder
    from worker.model.weights import MiniLMTokenizer

    h = stack.hearth
    wallet = stack.address("client")
    stack.approve("client", 1 * USD, spender=stack.address("relayer"))
    api_key = key_for(stack, "client", cap=1 * USD)
    price = stack.devnet.manifest.models[0].price_per_unit
    texts = ["hello world", "Receipts bind every result on-chain."]
    ids = MiniLMTokenizer().encode_ids(texts)  # [CLS] ... [SEP], as OpenAI clients send tiktoken ids
    expected = Encoder(backend="torch", dtype="fp32").encode(texts)

    before = h.usd.functions.balanceOf(wallet).call()
    many = client(stack, api_key).embeddings.create(model="all-MiniLM-L6-v2", input=ids, encoding_format="float")
    got = np.array([d.embedding for d in many.data], dtype=np.float32)
    assert np.array_equal(got, expected)
    given = sum(len(x) for x in ids)
    assert many.usage.prompt_tokens == given
    assert h.usd.functions.balanceOf(wallet).call() == before - given * price

    one = client(stack, api_key).embeddings.create(model="all-MiniLM-L6-v2", input=ids[0], encoding_format="float")
    assert np.array_equal(np.array(one.data[0].embedding, dtype=np.float32), expected[0])
    assert one.usage.prompt_tokens == len(ids[0])

    with pytest.raises(openai.BadRequestError) as exc:
        client(stack, api_key).embeddings.create(model="all-MiniLM-L6-v2", input=[[101, 10**6, 102]])
    assert exc.value.body["reason"] == "invalid_token_id"  # type: ignore[index]


def test_an_api_key_post_that_reverts_after_broadcast_returns_the_pull_and_the_reservation(
    stack: Stack, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The post is broadcast, then the market is paused ahead of it in the same block: the relay
    tracker records the revert, sends the pulled amount back and releases the reservation; the
    request answers with the reason. Nothing is charged."""
    from sqlmodel import Session, select

    from gateway import apikeys, store

    h, ctx = stack.hearth, stack.ctx
    wallet, relayer = stack.address("client2"), stack.address("relayer")
    stack.approve("client2", 1 * USD, spender=relayer)
    stack.approve("relayer", 2**256 - 1)  # the relayer's approval of the market is not what is tested
    api_key = key_for(stack, "client2", cap=1 * USD)
    before = h.usd.functions.balanceOf(wallet).call()
    owner = stack.key("deployer")
    post = ctx.chain.post_as_relayer

    def post_then_pause(*args: Any) -> Any:
        w3 = h.w3
        stack.chain.rpc("evm_setAutomine", [False])
        try:
            pending = post(*args)
            pause = h.market.functions.pause().build_transaction({
                "from": stack.address("deployer"), "gas": 100_000,
                "nonce": w3.eth.get_transaction_count(stack.address("deployer"), "pending"),
                "maxPriorityFeePerGas": w3.to_wei(50, "gwei"), "maxFeePerGas": w3.to_wei(500, "gwei")})
            w3.eth.send_raw_transaction(w3.eth.account.sign_transaction(pause, owner).raw_transaction)
            stack.chain.mine()
        finally:
            stack.chain.rpc("evm_setAutomine", [True])
        return pending

    monkeypatch.setattr(ctx.chain, "post_as_relayer", post_then_pause)
    try:
        r = stack.http.post("/v1/embeddings", json={"model": "all-MiniLM-L6-v2", "input": TEXTS},
                            headers={"authorization": f"Bearer {api_key}"})
        assert r.status_code == 503 and r.json()["error"]["reason"] == "market_paused", r.text
        assert h.usd.functions.balanceOf(wallet).call() == before, "the pulled amount was sent back"
        with Session(ctx.db_engine) as s:
            key = s.get(store.ApiKey, apikeys.api_key_hash(api_key))
            assert key is not None and key.spent == 0, "the reservation was released"
            charges = store.charges_of(s, key.key_hash)
            relays = s.exec(select(store.Relay).where(store.Relay.client == wallet)).all()
        assert [c.status for c in charges] == ["released"] and charges[0].post_tx is not None
        assert [(x.kind, x.status, x.revert, x.charge_id) for x in relays] == [
            ("api_key", "reverted", "EnforcedPause", charges[0].id)]
    finally:
        h.sender(owner).send(h.market.functions.unpause())
