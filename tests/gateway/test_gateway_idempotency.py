"""``gateway.idempotency`` on both databases the gateway runs on (SQLite and this machine's
PostgreSQL, a fresh database dropped afterwards): a key is claimed by exactly one of many
requests racing for it, a done key replays its answer, a key reused for another request is
refused, an expired claim is taken over by exactly one of its racers and its old owner can no
longer finish, and a failed request's claim is given back. The HTTP behaviour (charged once,
409 / 422 / 400) is tested through the gateway in ``tests/serving/test_serving_e2e.py``."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from gateway import idempotency as idem
from gateway import store

PRINT = idem.fingerprint("/v1/embeddings", [{"input": ["a"]}, None])


@pytest.fixture
def engine(db_url: str) -> Iterator[Any]:
    e = store.make_engine(db_url)
    store.migrate(e)
    yield e
    e.dispose()


def race(n: int, fn: Any) -> list[Any]:
    """``fn()`` from ``n`` threads released at once; each result or exception."""
    gate = threading.Barrier(n)
    out: list[Any] = [None] * n

    def run(i: int) -> None:
        gate.wait()
        try:
            out[i] = fn()
        except Exception as exc:  # noqa: BLE001 - collected for the test to look at
            out[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return out


def test_one_of_many_racing_requests_claims_a_key_and_the_rest_are_told_it_is_in_flight(engine: Any) -> None:
    got = race(8, lambda: idem.claim(engine, "kh", "k1", PRINT, 30))
    claims = [g for g in got if isinstance(g, idem.Claim)]
    assert len(claims) == 1 and claims[0].replay is None
    assert all(isinstance(g, idem.IdempotencyInUseError) for g in got if g is not claims[0]), got


def test_a_finished_key_replays_its_answer_and_refuses_another_request(engine: Any) -> None:
    cl = idem.claim(engine, "kh", "k2", PRINT, 30)
    assert cl is not None
    with engine.begin() as c:
        idem.finish(c, cl, {"answer": [1, 2, 3]})
    again = idem.claim(engine, "kh", "k2", PRINT, 30)
    assert again is not None and again.replay == {"answer": [1, 2, 3]}
    assert idem.claim(engine, "another key", "k2", PRINT, 30).replay is None  # type: ignore[union-attr]
    with pytest.raises(idem.IdempotencyKeyReusedError):
        idem.claim(engine, "kh", "k2", idem.fingerprint("/v1/embeddings", [{"input": ["b"]}, None]), 30)


def test_an_expired_claim_is_taken_over_by_one_racer_and_its_old_owner_cannot_finish(engine: Any) -> None:
    old = idem.claim(engine, "kh", "k3", PRINT, 0.05)
    assert old is not None
    time.sleep(0.1)
    got = race(6, lambda: idem.claim(engine, "kh", "k3", PRINT, 30))
    takers = [g for g in got if isinstance(g, idem.Claim)]
    assert len(takers) == 1 and takers[0].owner != old.owner, got
    with pytest.raises(idem.IdempotencyLostError), engine.begin() as c:
        idem.finish(c, old, {"late": True})
    with engine.begin() as c:
        idem.finish(c, takers[0], {"answer": "the taker's"})
    assert idem.claim(engine, "kh", "k3", PRINT, 30).replay == {"answer": "the taker's"}  # type: ignore[union-attr]


def test_a_failed_requests_claim_is_given_back_and_old_answers_are_pruned(engine: Any) -> None:
    cl = idem.claim(engine, "kh", "k4", PRINT, 30)
    idem.abandon(engine, cl)
    again = idem.claim(engine, "kh", "k4", PRINT, 30)
    assert again is not None and again.replay is None and again.owner != cl.owner  # type: ignore[union-attr]
    assert idem.prune(engine, now=time.time() + idem.KEEP_S + 10) >= 1
    assert idem.claim(engine, "kh", "k4", PRINT, 30).replay is None  # type: ignore[union-attr]


@pytest.mark.parametrize("bad", ["", "has space", "x" * 256, "naïve"])
def test_a_malformed_key_is_refused_and_streams_cannot_have_one(engine: Any, bad: str) -> None:
    with pytest.raises(idem.BadRequestError) as exc:
        idem.claim(engine, "kh", bad, PRINT, 30)
    assert exc.value.reason == "invalid_idempotency_key"
    with pytest.raises(idem.BadRequestError) as exc:
        idem.claim(engine, "kh", "fine", PRINT, 30, stream=True)
    assert exc.value.reason == "idempotency_unsupported_for_streams"
    assert idem.claim(engine, "kh", None, PRINT, 30) is None
