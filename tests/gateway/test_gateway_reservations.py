"""A gateway killed mid-request leaves its serving-plane reservation counted in the key's spend;
the sweeper gives it back once no request could still be running, and leaves alone what is
recent (another gateway's request in flight), what was served, and per-job reservations."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import Engine
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


def _key(tmp_path: Path, cap: int = 10_000) -> tuple[Engine, str]:
    engine = store.make_engine(f"sqlite:///{tmp_path / 'gw.db'}")
    store.migrate(engine)
    kh = "0x" + "cd" * 32
    with store.session(engine) as s:
        s.add(store.ApiKey(key_hash=kh, wallet="0x" + "11" * 20, gateway="0x" + "22" * 20, spending_cap=cap,
                           expiry=2**40, nonce="1", signature="0x", created_at=0))
    return engine, kh


def _spent(engine: Engine, kh: str) -> int:
    with store.session(engine) as s:
        key = s.get(store.ApiKey, kh)
        assert key is not None
        return int(key.spent)


def test_a_request_that_outlived_its_reservation_is_charged_its_value_once_not_less(tmp_path: Path) -> None:
    """The sweeper gave the reservation back while the provider was still answering; the answer
    then arrives and is recorded: the key is charged the value, as if nothing had happened (it
    was once charged the value minus the reservation: the key paid less than the provider got)."""
    engine, kh = _key(tmp_path)
    charge = store.reserve(engine, kh, 500, store.now() - 600, status="serving")
    assert charge is not None
    assert release_stale(engine, ttl_s=60) == 1 and _spent(engine, kh) == 0
    with engine.begin() as c:
        store.settle_charge(c, kh, charge, 500, 320, "served")
    assert _spent(engine, kh) == 320
    with store.session(engine) as s:
        row = s.get(store.Charge, charge)
        assert row is not None and (row.status, row.amount) == ("served", 320)
    assert release_stale(engine, ttl_s=60) == 0 and not store.release(engine, charge)  # served: never given back
    assert _spent(engine, kh) == 320


def test_a_request_whose_given_back_reservation_the_cap_no_longer_covers_is_not_recorded(tmp_path: Path) -> None:
    engine, kh = _key(tmp_path, cap=1_000)
    charge = store.reserve(engine, kh, 500, store.now() - 600, status="serving")
    assert charge is not None and release_stale(engine, ttl_s=60) == 1
    assert store.reserve(engine, kh, 900, store.now(), status="serving") is not None  # the room was taken
    try:
        with engine.begin() as c:
            store.settle_charge(c, kh, charge, 500, 320, "served")
    except store.ReservationLostError:
        pass
    else:
        raise AssertionError("settled beyond the cap")
    assert _spent(engine, kh) == 900  # the other reservation only


def test_racing_releases_of_one_reservation_refund_it_once(tmp_path: Path) -> None:
    import threading

    engine, kh = _key(tmp_path)
    charge = store.reserve(engine, kh, 700, store.now(), status="serving")
    assert charge is not None
    gate = threading.Barrier(8)
    done: list[bool] = []

    def release() -> None:
        gate.wait()
        done.append(store.release(engine, charge))  # type: ignore[arg-type]

    threads = [threading.Thread(target=release) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(done) == [False] * 7 + [True]
    assert _spent(engine, kh) == 0
