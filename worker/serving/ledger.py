"""The provider's durable ledger of served requests (SQLite, versioned schema).

Every answered request is one row of ``leaves``: its signed ``PaymentReceipt`` and the signed
``WorkReceipt`` the provider answered with. The row is committed (``synchronous=FULL``, WAL)
before the answer leaves the process, so a crash (``kill -9``) or a power cut after an answer
never loses a leaf or a receipt. Rows are written by one writer thread that commits every
queued row in one transaction (group commit): under load one fsync covers many requests.

``batches`` holds each batch the committer cut (its leaves point at it), with the commit
transaction and, once mined, the on-chain batch id; ``vouchers`` the latest voucher per payer
and what was collected with it.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contracts.settlement import PaymentReceipt, Voucher, WorkReceipt

SCHEMA_VERSION = 1

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS leaves (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        request_id BLOB NOT NULL UNIQUE,
        payer TEXT NOT NULL,
        signer TEXT NOT NULL,
        pay_value TEXT NOT NULL,
        pay_timestamp INTEGER NOT NULL,
        pay_signature BLOB NOT NULL,
        model_id BLOB NOT NULL,
        input_hash BLOB NOT NULL,
        output_hash BLOB NOT NULL,
        units INTEGER NOT NULL,
        value TEXT NOT NULL,
        runtime_hash BLOB NOT NULL,
        numerics_class BLOB NOT NULL,
        work_signature BLOB NOT NULL,
        aggregator TEXT,
        created_at REAL NOT NULL,
        batch_seq INTEGER,
        batch_index INTEGER)""",
    """CREATE INDEX IF NOT EXISTS leaves_unbatched ON leaves (batch_seq, seq)""",
    """CREATE INDEX IF NOT EXISTS leaves_payer ON leaves (payer)""",
    """CREATE TABLE IF NOT EXISTS batches (
        seq INTEGER PRIMARY KEY,
        root BLOB NOT NULL,
        count INTEGER NOT NULL,
        units INTEGER NOT NULL,
        value TEXT NOT NULL,
        created_block INTEGER NOT NULL,
        tx_hash TEXT,
        batch_id INTEGER,
        committed_at INTEGER,
        gas_used INTEGER)""",
    """CREATE TABLE IF NOT EXISTS vouchers (
        payer TEXT PRIMARY KEY,
        cumulative TEXT NOT NULL,
        timestamp INTEGER NOT NULL,
        signature BLOB NOT NULL,
        collect_tx TEXT,
        collected INTEGER NOT NULL DEFAULT 0,
        gas_used INTEGER NOT NULL DEFAULT 0)""",
]


class LedgerError(RuntimeError):
    """The ledger's file belongs to another schema version or another provider."""


@dataclass(frozen=True)
class Leaf:
    seq: int
    payment: PaymentReceipt
    signer: str
    pay_signature: bytes
    work: WorkReceipt
    work_signature: bytes
    aggregator: str | None
    batch_seq: int | None
    batch_index: int | None


@dataclass(frozen=True)
class BatchRow:
    seq: int
    root: bytes
    count: int
    units: int
    value: int
    created_block: int
    tx_hash: str | None
    batch_id: int | None
    committed_at: int | None
    gas_used: int | None


@dataclass(frozen=True)
class VoucherRow:
    voucher: Voucher
    signature: bytes
    collect_tx: str | None
    collected: bool
    gas_used: int


class Ledger:
    def __init__(self, path: Path, provider: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.provider = provider
        self._db = sqlite3.connect(str(path), timeout=30, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._lock = threading.RLock()
        with self._tx() as c:
            for stmt in _SCHEMA:
                c.execute(stmt)
            rows = dict(c.execute("SELECT key, value FROM meta").fetchall())
            if not rows:
                c.execute("INSERT INTO meta VALUES ('schema_version', ?), ('provider', ?)",
                          (str(SCHEMA_VERSION), provider))
            else:
                if int(rows.get("schema_version", "0")) != SCHEMA_VERSION:
                    raise LedgerError(f"{path} has schema version {rows.get('schema_version')}; "
                                      f"this node reads version {SCHEMA_VERSION}")
                if rows.get("provider", "").lower() != provider.lower():
                    raise LedgerError(f"{path} is the ledger of provider {rows.get('provider')}, not {provider}")
        self._totals: dict[str, int] = {}
        for payer, value in self._db.execute("SELECT payer, value FROM leaves").fetchall():
            self._totals[payer] = self._totals.get(payer, 0) + int(value)
        self._queue: list[tuple[tuple[Any, ...], Future[int]]] = []
        self._cond = threading.Condition()
        self._running = True
        self._writer = threading.Thread(target=self._write_loop, name="ledger-writer", daemon=True)
        self._writer.start()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def close(self) -> None:
        with self._cond:
            self._running = False
            self._cond.notify_all()
        self._writer.join(10)
        with self._lock:
            self._db.close()

    def healthy(self) -> bool:
        return self._running and self._writer.is_alive()

    # ------------------------------------------------------------ recording (group commit)

    _INSERT = ("INSERT INTO leaves (request_id, payer, signer, pay_value, pay_timestamp, pay_signature, model_id, "
               "input_hash, output_hash, units, value, runtime_hash, numerics_class, work_signature, aggregator, "
               "created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)")

    def record(self, payment: PaymentReceipt, signer: str, pay_signature: bytes, work: WorkReceipt,
               work_signature: bytes, aggregator: str | None) -> Future[int]:
        """Writes a leaf; the future resolves to its sequence number once it is on disk.

        When nothing else is being written the row is committed here, in the caller's thread
        (one short fsync'd transaction: no hand-over to another thread on the answer's path);
        under load rows queue for the writer thread, which commits all of them in one
        transaction (group commit)."""
        row = (work.request_id, payment.payer, signer, str(payment.value), payment.timestamp, pay_signature,
               work.model_id, work.input_hash, work.output_hash, work.units, str(work.value), work.runtime_hash,
               work.numerics_class, work_signature, aggregator, time.time())
        fut: Future[int] = Future()
        with self._cond:
            if not self._running:
                raise LedgerError("the ledger is closed")
            inline = not self._queue and self._lock.acquire(blocking=False)
            if not inline:
                self._queue.append((row, fut))
                self._cond.notify()
                return fut
        try:
            self._write([(row, fut)])
        finally:
            self._lock.release()
        return fut

    def _write_loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue and self._running:
                    self._cond.wait()
                if not self._queue and not self._running:
                    return
                taken, self._queue = self._queue, []
            self._write(taken)

    def _write(self, taken: list[tuple[tuple[Any, ...], Future[int]]]) -> None:
        try:
            seqs: list[int | BaseException] = []
            with self._tx() as c:
                for row, _ in taken:
                    try:
                        seqs.append(int(c.execute(self._INSERT, row).lastrowid or 0))
                    except sqlite3.IntegrityError as exc:
                        seqs.append(LedgerError(f"request {bytes(row[0]).hex()} is already recorded ({exc})"))
        except BaseException as exc:  # noqa: BLE001 - handed to every waiter
            for _, fut in taken:
                fut.set_exception(exc)
            return
        with self._lock:
            for (row, _), s in zip(taken, seqs, strict=True):
                if not isinstance(s, BaseException):
                    self._totals[row[1]] = self._totals.get(row[1], 0) + int(row[10])  # the work value
        for (_, fut), s in zip(taken, seqs, strict=True):
            if isinstance(s, BaseException):
                fut.set_exception(s)
            else:
                fut.set_result(s)

    # ------------------------------------------------------------ reading

    def has_request(self, request_id: bytes) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM leaves WHERE request_id=?", (request_id,)).fetchone() is not None

    def totals_by_payer(self) -> dict[str, int]:
        """Value of every recorded leaf, per payer (what the provider has served each payer); kept
        in memory (read from the file on open, added to on every commit)."""
        with self._lock:
            return dict(self._totals)

    def aggregators(self) -> dict[str, str]:
        """The latest aggregator URL each payer's receipts named."""
        with self._lock:
            rows = self._db.execute(
                "SELECT payer, aggregator FROM leaves WHERE seq IN (SELECT MAX(seq) FROM leaves "
                "WHERE aggregator IS NOT NULL GROUP BY payer)").fetchall()
        return {str(p): str(a) for p, a in rows}

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM leaves").fetchone()[0])

    def unbatched(self) -> tuple[int, float | None]:
        """How many leaves wait for a batch, and when the oldest was recorded."""
        with self._lock:
            n, oldest = self._db.execute(
                "SELECT COUNT(*), MIN(created_at) FROM leaves WHERE batch_seq IS NULL").fetchone()
        return int(n), (float(oldest) if oldest is not None else None)

    def _leaf(self, r: tuple[Any, ...]) -> Leaf:
        (seq, rid, payer, signer, pv, pts, psig, mid, ih, oh, units, value, rh, nc, wsig, agg, bseq, bidx) = r
        pay = PaymentReceipt(str(payer), self.provider, bytes(rid), int(str(pv)), int(str(pts)))
        work = WorkReceipt(bytes(rid), str(payer), bytes(mid), bytes(ih), bytes(oh), int(str(units)),
                           int(str(value)), bytes(rh), bytes(nc))
        return Leaf(int(str(seq)), pay, str(signer), bytes(psig), work, bytes(wsig),
                    None if agg is None else str(agg), None if bseq is None else int(str(bseq)),
                    None if bidx is None else int(str(bidx)))

    _COLS = ("seq, request_id, payer, signer, pay_value, pay_timestamp, pay_signature, model_id, input_hash, "
             "output_hash, units, value, runtime_hash, numerics_class, work_signature, aggregator, batch_seq, "
             "batch_index")

    def leaves_of_batch(self, batch_seq: int) -> list[Leaf]:
        with self._lock:
            rows = self._db.execute(f"SELECT {self._COLS} FROM leaves WHERE batch_seq=? ORDER BY batch_index",
                                    (batch_seq,)).fetchall()
        return [self._leaf(r) for r in rows]

    def leaf(self, request_id: bytes) -> Leaf | None:
        with self._lock:
            r = self._db.execute(f"SELECT {self._COLS} FROM leaves WHERE request_id=?", (request_id,)).fetchone()
        return self._leaf(r) if r else None

    # ------------------------------------------------------------ batches

    def cut_batch(self, max_leaves: int, created_block: int,
                  root_of: Callable[[list[WorkReceipt]], tuple[bytes, int, int]]) -> tuple[BatchRow, list[Leaf]] | None:
        """Assigns the oldest unbatched leaves (at most ``max_leaves``) to a new batch, in one
        transaction. ``root_of(receipts) -> (root, units, value)`` builds the tree."""
        with self._tx() as c:
            rows = c.execute(f"SELECT {self._COLS} FROM leaves WHERE batch_seq IS NULL ORDER BY seq LIMIT ?",
                             (max_leaves,)).fetchall()
            if not rows:
                return None
            leaves = [self._leaf(r) for r in rows]
            root, units, value = root_of([lf.work for lf in leaves])
            seq = int(c.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM batches").fetchone()[0])
            c.execute("INSERT INTO batches (seq, root, count, units, value, created_block) VALUES (?,?,?,?,?,?)",
                      (seq, root, len(leaves), units, str(value), created_block))
            c.executemany("UPDATE leaves SET batch_seq=?, batch_index=? WHERE seq=?",
                          [(seq, i, lf.seq) for i, lf in enumerate(leaves)])
        return BatchRow(seq, root, len(leaves), units, value, created_block, None, None, None, None), leaves

    def set_batch_tx(self, seq: int, tx_hash: str) -> None:
        with self._tx() as c:
            c.execute("UPDATE batches SET tx_hash=? WHERE seq=?", (tx_hash, seq))

    def set_batch_committed(self, seq: int, batch_id: int, committed_at: int, gas_used: int | None) -> None:
        with self._tx() as c:
            c.execute("UPDATE batches SET batch_id=?, committed_at=?, gas_used=? WHERE seq=?",
                      (batch_id, committed_at, gas_used, seq))

    def reopen_batch(self, seq: int) -> None:
        """Forgets that batch ``seq`` was committed (a reorg dropped its commit): it is sent again."""
        with self._tx() as c:
            c.execute("UPDATE batches SET batch_id=NULL, committed_at=NULL, gas_used=NULL WHERE seq=?", (seq,))

    def committed_since(self, created_block: int) -> list[BatchRow]:
        """Committed batches cut at ``created_block`` or later (those a reorg may still drop)."""
        with self._lock:
            return [self._batch(r) for r in self._db.execute(
                "SELECT seq, root, count, units, value, created_block, tx_hash, batch_id, committed_at, gas_used "
                "FROM batches WHERE batch_id IS NOT NULL AND created_block >= ? ORDER BY seq",
                (created_block,)).fetchall()]

    @staticmethod
    def _batch(r: tuple[Any, ...]) -> BatchRow:
        seq, root, count, units, value, cb, tx, bid, cat, gas = r
        return BatchRow(int(str(seq)), bytes(root), int(str(count)), int(str(units)), int(str(value)),
                        int(str(cb)), None if tx is None else str(tx), None if bid is None else int(str(bid)),
                        None if cat is None else int(str(cat)), None if gas is None else int(str(gas)))

    def batches(self, *, open_only: bool = False) -> list[BatchRow]:
        q = "SELECT seq, root, count, units, value, created_block, tx_hash, batch_id, committed_at, gas_used " \
            "FROM batches" + (" WHERE batch_id IS NULL" if open_only else "") + " ORDER BY seq"
        with self._lock:
            return [self._batch(r) for r in self._db.execute(q).fetchall()]

    def batch_by_id(self, batch_id: int) -> BatchRow | None:
        with self._lock:
            r = self._db.execute("SELECT seq, root, count, units, value, created_block, tx_hash, batch_id, "
                                 "committed_at, gas_used FROM batches WHERE batch_id=?", (batch_id,)).fetchone()
        return self._batch(r) if r else None

    def exposure(self, now: int, window: int) -> tuple[int, int | None]:
        """Value still challengeable at chain time ``now``: every leaf not in a committed batch,
        and every committed batch whose challenge window (``committed_at + window``) is still
        open. Returns (value, the earliest chain time at which part of it is released, or None
        when all of it waits for a commit)."""
        with self._lock:
            rows = self._db.execute("SELECT value, committed_at FROM batches WHERE committed_at IS NULL "
                                    "OR committed_at + ? > ?", (window, now)).fetchall()
            loose = self._db.execute("SELECT value FROM leaves WHERE batch_seq IS NULL").fetchall()
        total = sum(int(str(v)) for v, _ in rows) + sum(int(str(v)) for (v,) in loose)
        ends = [int(c) + window for _, c in rows if c is not None]
        return total, (min(ends) if ends else None)

    # ------------------------------------------------------------ vouchers

    def voucher(self, payer: str) -> VoucherRow | None:
        with self._lock:
            r = self._db.execute("SELECT payer, cumulative, timestamp, signature, collect_tx, collected, gas_used "
                                 "FROM vouchers WHERE payer=?", (payer,)).fetchone()
        if r is None:
            return None
        v = Voucher(str(r[0]), self.provider, int(r[1]), int(r[2]))
        return VoucherRow(v, bytes(r[3]), r[4], bool(r[5]), int(r[6]))

    def vouchers(self) -> list[VoucherRow]:
        with self._lock:
            payers = [str(r[0]) for r in self._db.execute("SELECT payer FROM vouchers").fetchall()]
        return [v for p in payers if (v := self.voucher(p)) is not None]

    def put_voucher(self, v: Voucher, signature: bytes) -> None:
        with self._tx() as c:
            c.execute("INSERT INTO vouchers (payer, cumulative, timestamp, signature) VALUES (?,?,?,?) "
                      "ON CONFLICT(payer) DO UPDATE SET cumulative=excluded.cumulative, timestamp=excluded.timestamp,"
                      " signature=excluded.signature, collect_tx=NULL, collected=0",
                      (v.payer, str(v.cumulative_value), v.timestamp, signature))

    def set_voucher_collected(self, payer: str, cumulative: int, tx_hash: str, gas_used: int) -> None:
        with self._tx() as c:
            c.execute("UPDATE vouchers SET collect_tx=?, collected=1, gas_used=gas_used+? "
                      "WHERE payer=? AND cumulative=?", (tx_hash, gas_used, payer, str(cumulative)))
