"""Overload: past the providers' capacity a gateway sheds load at once with 429 (one client's
bound) or 503 (the gateway's, or every provider's) and a ``Retry-After``, instead of queueing;
nothing is charged for a shed request, no provider sees it, the admitted ones are answered, and
the in-flight counters (the only state shedding keeps) return to zero.

The module's serving stack (two provider processes) gets a second gateway in this process with
tight bounds: one request in flight per provider, five in the gateway, three per API key."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from eth_utils import keccak
from pydantic import SecretStr
from serving_stack import Server, ServingStack, api_key

from gateway.admission import Admission
from gateway.errors import OverloadedError, TooManyInFlightError

SHED_REASONS = {429: {"too_many_requests_in_flight"}, 503: {"overloaded", "providers_saturated"}}
#: long enough that a request keeps a provider busy while the flood arrives
TEXTS = [f"sentence {k} of a request long enough to keep a provider busy for a little while, again and again"
         for k in range(48)]


@dataclasses.dataclass
class Tight:
    stack: ServingStack
    keys: list[str]


@pytest.fixture(scope="module")
def tight(stack: ServingStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tight]:
    from deploy.devnet import free_port
    from gateway.app import create_app
    from gateway.settings import GatewaySettings

    tmp: Path = tmp_path_factory.mktemp("overload")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    settings = GatewaySettings(
        data_dir=tmp, indexer_database_url=stack.settings.indexer_database_url,
        relayer_key=SecretStr(stack.key("relayer")), rate_limit_ip_per_min=1_000_000,
        rate_limit_wallet_per_min=1_000_000, public_url=base, serving_refresh_s=0.2, provider_timeout_s=30,
        port=port, serving_mode="serving", max_provider_inflight=1, max_inflight=5, max_client_inflight=3,
        shed_retry_after_s=2,
    )
    app = create_app(settings, manifest=stack.devnet.manifest)
    server = Server(app, port)
    server.start()
    http = httpx.Client(base_url=base, timeout=60)
    try:
        end = time.monotonic() + 20
        while True:
            try:
                if http.get("/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < end, "the second gateway did not start"
            time.sleep(0.05)
        mine = dataclasses.replace(stack, app=app, settings=settings, base_url=base, http=http)
        yield Tight(mine, [api_key(mine, "client"), api_key(mine, "client")])
    finally:
        http.close()
        server.stop()


def spent(stack: ServingStack, key: str) -> int:
    from gateway.store import ApiKey, session

    with session(stack.ctx.db_engine) as db:
        k = db.get(ApiKey, "0x" + keccak(text=key).hex())
        assert k is not None
        return int(k.spent)


def served_count(stack: ServingStack) -> int:
    return sum(int(p.status()["served_requests"]) for p in stack.providers.values())


def test_a_flood_past_capacity_is_shed_fast_with_retry_after_and_nothing_is_charged_for_it(tight: Tight) -> None:
    from gateway.serving import served_requests

    st = tight.stack
    before_rows = {r.request_id for r in served_requests(st.ctx)}
    before_spent = {k: spent(st, k) for k in tight.keys}
    before_served = served_count(st)

    def one(key: str) -> tuple[str, httpx.Response, float]:
        t0 = time.perf_counter()
        r = httpx.post(f"{st.base_url}/v1/embeddings", json={"model": "all-MiniLM-L6-v2", "input": TEXTS},
                       headers={"authorization": f"Bearer {key}"}, timeout=60)
        return key, r, time.perf_counter() - t0

    with ThreadPoolExecutor(24) as pool:
        results = list(pool.map(one, [tight.keys[i % 2] for i in range(24)]))

    by_status: dict[int, list[tuple[str, httpx.Response, float]]] = {}
    for res in results:
        by_status.setdefault(res[1].status_code, []).append(res)
    assert set(by_status) <= {200, 429, 503}, {s: [r.text for _, r, _ in v] for s, v in by_status.items()}
    assert len(by_status.get(200, [])) >= 2, "no admitted request was answered"
    assert by_status.get(429), "no client was held to its in-flight bound"
    assert by_status.get(503), "neither the gateway nor the providers were reported saturated"
    shed = by_status.get(429, []) + by_status.get(503, [])
    for _, r, seconds in shed:
        body = r.json()["error"]
        assert body["reason"] in SHED_REASONS[r.status_code], body
        assert r.headers["retry-after"] == "2"
        assert r.headers["x-should-retry"] == "true"
        # Shed, not queued: a generous bound, far below one admitted request's time under this load.
        assert seconds < 5, f"a shed request took {seconds:.1f}s"

    # Nothing charged for a shed request: each key paid exactly what its answers cost, the new
    # served rows are the answers, and no provider computed anything else.
    answered = by_status[200]
    for k in tight.keys:
        assert spent(st, k) - before_spent[k] == sum(int(r.json()["hearth"]["cost"]) for kk, r, _ in answered
                                                     if kk == k)
    new_rows = {r.request_id for r in served_requests(st.ctx)} - before_rows
    assert new_rows == {r.json()["hearth"]["request_id"] for _, r, _ in answered}
    assert served_count(st) - before_served == len(answered)

    # Bounded state: every counter is back at zero, and a request now is admitted and answered.
    adm: Admission = st.ctx.admission
    assert adm.inflight == 0 and adm.per_client == {}
    assert all(s.inflight == 0 for s in st.ctx.serving.router.stats.values())
    r = httpx.post(f"{st.base_url}/v1/embeddings", json={"model": "all-MiniLM-L6-v2", "input": ["after"]},
                   headers={"authorization": f"Bearer {tight.keys[0]}"}, timeout=60)
    assert r.status_code == 200, r.text


def test_admission_holds_each_client_and_the_gateway_to_their_bounds_and_forgets_idle_clients() -> None:
    adm = Admission(max_inflight=3, max_client_inflight=2, retry_after_s=1)
    adm.enter("a")
    adm.enter("a")
    with pytest.raises(TooManyInFlightError) as per_client:
        adm.enter("a")
    assert per_client.value.status_code == 429 and per_client.value.should_retry is True
    adm.enter("b")
    with pytest.raises(OverloadedError) as overall:
        adm.enter("c")
    assert overall.value.status_code == 503 and overall.value.retry_after == 1
    assert adm.shed == 2
    for who in ("a", "a", "b"):
        adm.leave(who)
    assert adm.inflight == 0 and adm.per_client == {}


def test_shed_answers_are_marked_safe_to_retry_unlike_a_charged_timeout() -> None:
    from gateway.errors import ResultTimeoutError

    assert OverloadedError.should_retry is True and TooManyInFlightError.should_retry is True
    assert ResultTimeoutError.should_retry is False
    assert {OverloadedError.status_code, TooManyInFlightError.status_code} == {503, 429}
