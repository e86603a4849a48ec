"""The provider's ledger on its own: a recorded leaf is on disk when its future resolves, a
request id is recorded once, batches take the oldest leaves, and a ledger file is refused by a
node of another provider or another schema version."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from eth_utils import keccak

from contracts.settlement import PaymentReceipt, WorkReceipt
from worker.serving.ledger import Ledger, LedgerError

ME = "0x" + "aa" * 20
PAYER = "0x" + "bb" * 20


def leaf(n: int, value: int = 700) -> tuple[PaymentReceipt, WorkReceipt]:
    rid = keccak(text=f"request {n}")
    pay = PaymentReceipt(PAYER, ME, rid, value, 1_700_000_000 + n)
    work = WorkReceipt(rid, PAYER, b"\x01" * 32, keccak(text=f"in {n}"), keccak(text=f"out {n}"), 7, value,
                       b"\x02" * 32, b"\x03" * 32)
    return pay, work


def record(ledger: Ledger, n: int, value: int = 700) -> int:
    pay, work = leaf(n, value)
    return ledger.record(pay, PAYER, b"\x04" * 65, work, b"\x05" * 65, "http://gw").result(10)


def test_a_recorded_leaf_is_on_disk_and_counted_when_its_future_resolves(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite", ME)
    for n in range(5):
        record(ledger, n, value=100 + n)
    # Read the file with a separate connection, as a restarted node would.
    rows = sqlite3.connect(tmp_path / "l.sqlite").execute("SELECT COUNT(*) FROM leaves").fetchone()
    assert rows[0] == 5
    ledger.close()
    again = Ledger(tmp_path / "l.sqlite", ME)
    assert again.totals_by_payer() == {PAYER: sum(100 + n for n in range(5))}
    got = again.leaf(keccak(text="request 3"))
    assert got is not None and got.work == leaf(3, 103)[1] and got.payment == leaf(3, 103)[0]
    again.close()


def test_a_request_id_is_recorded_once(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite", ME)
    record(ledger, 1)
    with pytest.raises(LedgerError, match="already recorded"):
        record(ledger, 1)
    assert ledger.count() == 1 and ledger.totals_by_payer() == {PAYER: 700}
    ledger.close()


def test_a_batch_takes_the_oldest_unbatched_leaves_in_order(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite", ME)
    for n in range(5):
        record(ledger, n)
    cut = ledger.cut_batch(3, 10, lambda rs: (b"\x09" * 32, sum(r.units for r in rs), sum(r.value for r in rs)))
    assert cut is not None
    row, leaves = cut
    assert [lf.work.request_id for lf in leaves] == [keccak(text=f"request {n}") for n in range(3)]
    assert (row.count, row.units, row.value) == (3, 21, 2100)
    assert [lf.batch_index for lf in ledger.leaves_of_batch(row.seq)] == [0, 1, 2]
    assert ledger.unbatched()[0] == 2
    ledger.close()


def test_a_ledger_is_refused_by_another_provider_or_schema_version(tmp_path: Path) -> None:
    Ledger(tmp_path / "l.sqlite", ME).close()
    with pytest.raises(LedgerError, match="is the ledger of provider"):
        Ledger(tmp_path / "l.sqlite", "0x" + "cc" * 20)
    db = sqlite3.connect(tmp_path / "l.sqlite")
    db.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    db.commit()
    db.close()
    with pytest.raises(LedgerError, match="schema version 99"):
        Ledger(tmp_path / "l.sqlite", ME)
