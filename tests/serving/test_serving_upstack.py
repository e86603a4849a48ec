"""What `make up` adds on the serving plane, on the test stack (two provider processes: "provider"
in region "eu" at 200 per token, "verifier" in "us" at 100): an API key's own region routes its
requests when they name none; the gateway keeps the lanes of a payer that lets it allocate topped
up, all of a payer's low lanes in one `allocate`; and `make demo`'s core (`run_demo`) counts
every request once, names only real providers and reads batches, collections and gas from the
chain consistently."""

from __future__ import annotations

import io
import time
from typing import Any

import pytest
from serving_stack import USD, ServingStack, api_key, authorize_gateway

from gateway.lanes import LaneState, plan_topups

THRESHOLD, TARGET = 5_000, 12_000


@pytest.fixture(scope="module", autouse=True)
def tuned(stack: ServingStack) -> None:
    """This module's gateway: its lane keeper checks every 0.1 s with thresholds a test spends in
    seconds, and price and region decide the routing, not the CPU contention of the moment (a
    latency budget no provider here can exceed)."""
    plane = stack.ctx.serving
    assert plane.keeper is not None and plane.keeper.healthy()
    plane.keeper.threshold, plane.keeper.target, plane.keeper.interval_s = THRESHOLD, TARGET, 0.1
    plane.keeper.wake()
    plane.router.latency_budget_ms = 10_000


def raw_embed(stack: ServingStack, key: str, texts: list[str], **headers: str) -> Any:
    return stack.http.post("/v1/embeddings", json={"model": "all-MiniLM-L6-v2", "input": texts},
                           headers={"authorization": f"Bearer {key}", **headers})


# ---------------------------------------------------------------- the plan (no chain)


def lane(provider: str, balance: int, served: int = 0, collected: int = 0, thawing: int = 0) -> LaneState:
    return LaneState(provider, balance, collected, thawing, served)


def test_the_plan_tops_low_lanes_up_to_the_target_and_leaves_the_rest_alone() -> None:
    lanes = [lane("a", 100), lane("b", 20_000, served=18_000, collected=1_000), lane("c", 9_000), lane("d", 0)]
    # a: free 100; b: free 20,000 - 17,000 owed = 3,000; c: 9,000 (above the threshold); d: 0
    assert plan_topups(lanes, 10**6, 5_000, 12_000) == {"d": 12_000, "a": 11_900, "b": 9_000}


def test_the_plan_never_tops_up_a_thawing_lane_nor_allocates_more_than_the_deposit() -> None:
    lanes = [lane("thawing", 0, thawing=5), lane("low", 1_000), lane("lower", 0)]
    assert plan_topups(lanes, 15_000, 5_000, 12_000) == {"lower": 12_000, "low": 3_000}
    assert plan_topups(lanes, 0, 5_000, 12_000) == {}
    assert plan_topups(lanes, 10**6, 5_000, 0) == {}  # a target of 0 turns top-ups off


def test_settings_refuse_a_target_below_the_threshold(tmp_path: Any) -> None:
    from gateway.settings import GatewaySettings

    with pytest.raises(ValueError, match="lane_topup_target"):
        GatewaySettings(data_dir=tmp_path, lane_topup_threshold=10, lane_topup_target=5)


# ---------------------------------------------------------------- key-level region


def test_an_api_keys_region_routes_its_requests_when_they_name_none_and_a_header_overrides_it(
        stack: ServingStack) -> None:
    eu, cheap = stack.providers["provider"], stack.providers["verifier"]
    eu_key, plain = api_key(stack, "client", region="eu"), api_key(stack, "client")
    for key, headers, want in ((eu_key, {}, eu), (plain, {}, cheap), (eu_key, {"x-hearth-region": "us"}, cheap),
                               (plain, {"x-hearth-region": "eu"}, eu)):
        r = raw_embed(stack, key, ["where am I served?"], **headers)
        assert r.status_code == 200, r.text
        h = r.json()["hearth"]
        assert h["provider"] == want.address, (headers, want.role)
        assert h["cost"] == str(r.json()["usage"]["prompt_tokens"] * want.price)


def test_a_region_that_no_provider_could_register_is_refused_and_no_key_is_registered(stack: ServingStack) -> None:
    import secrets

    from eth_utils import keccak
    from serving_stack import sign_typed

    key = "hk-" + secrets.token_hex(16)
    td = stack.http.get("/v1/api-keys/typed-data", params={
        "wallet": stack.address("client"), "api_key_hash": "0x" + keccak(text=key).hex(), "spending_cap": USD,
    }).json()["typed_data"]
    grant = {"grant": td["message"], "signature": sign_typed(stack.key("client"), td)}
    for bad in ("", "eu west", "x" * 33, "../eu"):
        r = stack.http.post("/v1/api-keys", json={**grant, "region": bad})
        assert r.status_code == 422 and r.json()["error"]["reason"] == "malformed_request", (bad, r.text)
    r = raw_embed(stack, key, ["not registered"])
    assert r.status_code == 401 and r.json()["error"]["reason"] == "invalid_api_key"


# ---------------------------------------------------------------- lane top-ups


def test_the_gateway_tops_up_a_payers_low_lanes_in_one_allocate_and_keeps_its_requests_served(
        stack: ServingStack) -> None:
    s, h = stack.settlement(), stack.hearth
    payer, k = stack.address("client2"), stack.key("client2")
    signer = stack.ctx.serving.signer
    providers = sorted(p.address for p in stack.providers.values())
    start = h.w3.eth.block_number
    h.sender(k).send(h.usd.functions.approve(s.escrow.address, USD))
    s.deposit(k, USD)
    authorize_gateway(stack, "client2", can_allocate=True)
    key = api_key(stack, "client2")  # a live key makes the wallet one of this gateway's payers
    end = time.monotonic() + 20
    while any(s.lane(payer, p).balance < TARGET for p in providers):
        assert time.monotonic() < end, "the keeper never opened the lanes"
        time.sleep(0.1)

    def allocations() -> list[Any]:
        return list(s.escrow.events.Allocated().get_logs(from_block=start, argument_filters={"payer": payer}))

    first = allocations()
    # Both empty lanes were opened in one transaction, by the gateway's signer, to the target.
    assert len(first) == 2 and len({lg["transactionHash"] for lg in first}) == 1
    assert sorted(lg["args"]["provider"] for lg in first) == providers
    assert all(lg["args"]["by"] == signer and lg["args"]["amount"] == TARGET for lg in first)
    assert s.deposit_of(payer) == USD - 2 * TARGET

    # ~1,000 per request at the cheap provider's 100 per token: the first lane of 12,000 would run
    # dry after a dozen requests; topped up whenever its free balance falls below 5,000, it never does.
    cheap = stack.providers["verifier"]
    total = 0
    for i in range(24):
        r = raw_embed(stack, key, [f"top me up, request number {i}"])
        assert r.status_code == 200, (i, r.text)
        assert r.json()["hearth"]["provider"] == cheap.address
        total += int(r.json()["hearth"]["cost"])
        time.sleep(0.1)
    assert total > TARGET
    later = [lg for lg in allocations() if lg["transactionHash"] != first[0]["transactionHash"]]
    assert later, "no top-up after the first allocation"
    assert all(lg["args"]["provider"] == cheap.address and lg["args"]["by"] == signer for lg in later)
    assert len({lg["transactionHash"] for lg in later}) == len(later)  # one allocate per top-up here
    # Money is conserved: what left the deposit sits in the lanes or was collected by the providers.
    # Read at one block: the keeper may top a lane up between two reads at "latest".
    at = stack.hearth.w3.eth.block_number
    lanes = [s.lane(payer, p, at) for p in providers]
    assert s.deposit_of(payer, at) + sum(ln.balance + ln.collected for ln in lanes) == USD
    allocated = [lg for lg in allocations() if lg["blockNumber"] <= at]
    assert sum(lg["args"]["amount"] for lg in allocated) == USD - s.deposit_of(payer, at)
    # ...and the cheap lane's free balance (balance minus what is owed) is back near the target.
    from gateway.serving import served_requests

    served = sum(r.value for r in served_requests(stack.ctx) if r.payer == payer and r.provider == cheap.address)
    cl = s.lane(payer, cheap.address)
    assert cl.balance - (served - cl.collected) >= THRESHOLD - 1_500  # at most a request behind


# ---------------------------------------------------------------- make demo's core


def test_the_demo_counts_every_request_once_and_names_only_real_providers_with_chain_numbers_that_add_up(
        stack: ServingStack) -> None:
    from rich.console import Console

    from deploy.demo_serving import print_result, run_demo
    from gateway.serving import served_requests

    eu, cheap = stack.providers["provider"], stack.providers["verifier"]
    payer = stack.address("client")
    keys = [api_key(stack, "client"), api_key(stack, "client", region="eu")]
    before = {r.request_id for r in served_requests(stack.ctx)}
    res = run_demo(stack.base_url, keys, stack.hearth, payer, 12, concurrency=4, settle_timeout_s=30,
                   collect_wait_s=1.5)
    assert res.requests == res.answered == len(res.latencies_ms) == 12 and not res.failures
    served = {a: p for a, p in res.providers.items() if p.requests}
    # Odd requests used the key that prefers "eu", even ones the cheapest provider.
    assert set(served) == {eu.address, cheap.address}
    assert served[eu.address].requests == served[cheap.address].requests == 6
    for p in (eu, cheap):
        assert (served[p.address].region, served[p.address].price) == (p.region, p.price)
        assert served[p.address].cost == served[p.address].tokens * p.price
    new = [r for r in served_requests(stack.ctx) if r.request_id not in before]
    assert len(new) == 12 and sum(r.value for r in new) == sum(p.cost for p in served.values())
    assert res.percentile(50) <= res.percentile(90) <= res.percentile(99) <= max(res.latencies_ms)
    # Chain: every batch is a real provider's, and each provider's batches hold its answered requests.
    for a, p in served.items():
        assert sum(b.amount for b in res.batches if b.provider == a) >= p.requests
    real = {p.address for p in stack.providers.values()}
    assert {b.provider for b in res.batches} <= real and {c.provider for c in res.collections} <= real
    # Collections never exceed what the gateway recorded as served to that provider for the payer.
    for a in real:
        owed = sum(r.value for r in served_requests(stack.ctx) if r.payer == payer and r.provider == a)
        assert sum(c.amount for c in res.collections if c.provider == a) <= owed
    # Gas: the receipts of exactly the transactions listed, per answered request.
    w3 = stack.hearth.w3
    txs = {t.tx_hash for t in (*res.batches, *res.collections, *res.topups)}
    assert set(res.gas_by_tx) == txs and txs
    assert res.gas_total == sum(int(w3.eth.get_transaction_receipt(t)["gasUsed"]) for t in txs)
    assert res.gas_per_request == res.gas_total / 12
    out = io.StringIO()
    print_result(Console(file=out, width=200), res)
    text = out.getvalue()
    assert "12 of 12 requests answered" in text
    assert f"{len(res.batches)} batches committed ({res.leaves_committed} leaves)" in text
    assert f"{res.gas_per_request:,.0f} gas per answered request" in text


def test_reading_settlement_before_any_block_since_the_run_began_finds_nothing_instead_of_failing(
        stack: ServingStack) -> None:
    from deploy.demo_serving import DemoResult, read_settlement

    head = int(stack.hearth.w3.eth.block_number)
    res = DemoResult(requests=0, answered=0, seconds=0.0, latencies_ms=[], providers={}, first_block=head + 1)
    read_settlement(res, stack.hearth, stack.address("client"), {p.address for p in stack.providers.values()})
    assert (res.batches, res.collections, res.topups, res.gas_by_tx, res.last_block) == ([], [], [], {}, head)
