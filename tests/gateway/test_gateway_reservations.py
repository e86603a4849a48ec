"""A gateway killed mid-request leaves its serving-plane reservation counted in the key's spend;
the sweeper gives it back once no request could still be running, and leaves alone what is
recent (another gateway's request in flight), what was served, and per-job reservations."""

from __future__ import annotations

from pathlib import Path

from sqlmodel import select

from gateway import store
from gateway.reservations import release_stale


def test_stale_serving_reservations_are_given_back_and_nothing_else_is(tmp_path: Path) -> None:
    engine = store.make_engine(f"sqlite:///{tmp_path / 'gw.db'}")
    store.migrate(engine)
    kh = "0x" + "ab" * 32
    with store.session(engine) as s:
        s.add(store.ApiKey(key_hash=kh, wallet="0x" + "11" * 20, gateway="0x" + "22" * 20, spending_cap=10_000,
                           expiry=2**40, nonce="1", signature="0x", created_at=0))
    now = 1_000_000
    dead = store.reserve(engine, kh, 100, now - 600, status="serving")  # its gateway died 10 minutes ago
    live = store.reserve(engine, kh, 200, now - 5, status="serving")  # in flight at another gateway
    served = store.reserve(engine, kh, 300, now - 600, status="serving")
    per_job = store.reserve(engine, kh, 400, now - 600)
    assert None not in (dead, live, served, per_job)
    store.update_charge(engine, served, status="served")  # type: ignore[arg-type]

    assert release_stale(engine, ttl_s=60, now=now) == 1
    assert release_stale(engine, ttl_s=60, now=now) == 0  # idempotent
    with store.session(engine) as s:
        key = s.get(store.ApiKey, kh)
        assert key is not None and key.spent == 200 + 300 + 400
        statuses = {c.id: c.status for c in s.exec(select(store.Charge))}
    assert statuses == {dead: "released", live: "serving", served: "served", per_job: "reserved"}
