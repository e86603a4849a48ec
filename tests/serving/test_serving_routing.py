"""The gateway's provider order (``gateway.routing.Router``) as documented: healthy and below the
in-flight limit first, the client's region first, then within the latency budget, then the
lowest price. Candidates are given directly (the index query is covered end to end)."""

from __future__ import annotations

import time

import pytest

from gateway.routing import Candidate, Router

MODEL = "0x" + "ab" * 32
EU_CHEAP = Candidate("0x" + "01" * 20, "http://eu-cheap", "eu", 100)
EU_DEAR = Candidate("0x" + "02" * 20, "http://eu-dear", "eu", 300)
US_CHEAPEST = Candidate("0x" + "03" * 20, "http://us", "us", 50)


@pytest.fixture
def router() -> Router:
    r = Router(index_engine=None, latency_budget_ms=50, max_inflight=2)  # type: ignore[arg-type]
    r._cache[MODEL] = (time.monotonic() + 3600, [EU_CHEAP, EU_DEAR, US_CHEAPEST])
    return r


def names(order: list[Candidate]) -> list[str]:
    return [c.endpoint.removeprefix("http://") for c in order]


def test_without_a_region_the_lowest_price_comes_first(router: Router) -> None:
    assert names(router.order(MODEL, None)) == ["us", "eu-cheap", "eu-dear"]


def test_the_clients_region_comes_before_a_lower_price_elsewhere(router: Router) -> None:
    assert names(router.order(MODEL, "EU")) == ["eu-cheap", "eu-dear", "us"]
    assert names(router.order(MODEL, "mars")) == ["us", "eu-cheap", "eu-dear"]  # nobody there: price


def test_a_provider_slower_than_the_latency_budget_loses_to_a_dearer_fast_one(router: Router) -> None:
    router.end(US_CHEAPEST.address, ok=True, latency_ms=400)
    router.end(EU_CHEAP.address, ok=True, latency_ms=30)
    router.end(EU_DEAR.address, ok=True, latency_ms=60)  # within 30 + 50
    assert names(router.order(MODEL, None)) == ["eu-cheap", "eu-dear", "us"]


def test_a_failed_provider_cools_down_and_goes_last_then_comes_back(router: Router) -> None:
    router.end(US_CHEAPEST.address, ok=False)
    assert names(router.order(MODEL, None))[-1] == "us"
    router.stats[US_CHEAPEST.address].down_until = 0  # the cool-down is over
    assert names(router.order(MODEL, None))[0] == "us"


def test_a_provider_down_for_thousands_of_requests_cools_down_at_most_the_cap_and_never_overflows(
        router: Router) -> None:
    """The fault run had a provider fail 1,025 times in a row: the doubling cool-down then
    overflowed a float and every request through that gateway was a 500."""
    from gateway.routing import MAX_COOLDOWN_S

    for _ in range(5000):
        router.end(US_CHEAPEST.address, ok=False)
    st = router.stats[US_CHEAPEST.address]
    assert st.failures == 5000
    assert 0 < st.down_until - time.monotonic() <= MAX_COOLDOWN_S
    assert names(router.order(MODEL, None))[-1] == "us"


def test_a_provider_at_its_in_flight_limit_is_routed_around(router: Router) -> None:
    router.begin(US_CHEAPEST.address)
    router.begin(US_CHEAPEST.address)
    assert names(router.order(MODEL, None)) == ["eu-cheap", "eu-dear", "us"]
    router.end(US_CHEAPEST.address, ok=True, latency_ms=10)
    assert names(router.order(MODEL, None))[0] == "us"


def test_excluded_providers_are_not_offered(router: Router) -> None:
    assert names(router.order(MODEL, None, exclude={US_CHEAPEST.address})) == ["eu-cheap", "eu-dear"]


def test_a_provider_at_its_stakes_capacity_is_routed_around_for_its_retry_after_without_a_failure(
        router: Router) -> None:
    router.saturated(US_CHEAPEST.address, 30)
    assert names(router.order(MODEL, None)) == ["eu-cheap", "eu-dear", "us"]
    st = router.stats[US_CHEAPEST.address]
    assert (st.at_capacity, st.failed, st.failures, st.down_until) == (1, 0, 0, 0.0)
    router.saturated(US_CHEAPEST.address, 10_000)  # a long Retry-After is capped
    assert st.full_until <= time.monotonic() + 60
    st.full_until = 0  # the wait is over
    assert names(router.order(MODEL, None))[0] == "us"
