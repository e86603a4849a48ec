"""The node's local state: one SQLite file per (chain, market, operator address).

It records every step *before* the transaction that makes it (``claiming``, ``submitting``,
a vote's salt) and again after it is mined, so a node killed at any point restarts, compares
each open record with the chain (the source of truth) and carries on without repeating a
claim, a receipt or a vote. The chain is re-read on restart because the last transaction may
have been mined after the process died.

The file holds unrevealed vote salts, so it is created with mode 0600.

Schema: versioned. :data:`MIGRATIONS` lists the schema changes in order, each applied once in
its own transaction; the file's ``PRAGMA user_version`` says how many have run. A node refuses a
file written by a newer node (a higher version) instead of guessing. State columns hold the
values of :class:`Phase`, :class:`CandidateState`, :class:`Verdict` and :class:`Vote` only;
anything else is refused on write.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from dataclasses import fields
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from worker.node.errors import NodeConfigError
from worker.node.records import (
    CandidateRow,
    CandidateState,
    CheckRow,
    DisputeRow,
    JobRow,
    Phase,
    Verdict,
    Vote,
)

T = TypeVar("T")

__all__ = [
    "MIGRATIONS", "SCHEMA_VERSION", "CandidateRow", "CandidateState", "CheckRow", "DisputeRow", "JobRow",
    "NodeState", "Phase", "Verdict", "Vote", "migrate", "schema_version",
]


_TABLES: dict[str, type[Any]] = {"jobs": JobRow, "candidates": CandidateRow, "checks": CheckRow, "disputes": DisputeRow}
#: the enum each state column holds
_ENUMS: dict[tuple[type[Any], str], type[StrEnum]] = {
    (JobRow, "phase"): Phase,
    (CandidateRow, "state"): CandidateState,
    (CheckRow, "verdict"): Verdict,
    (DisputeRow, "vote"): Vote,
}

#: The schema's history, oldest first: ``MIGRATIONS[i]`` takes a file from version ``i`` to
#: ``i + 1``. Append, never edit: files in the field are at every version. Version 1 is the
#: schema state files had before it was versioned (``IF NOT EXISTS``: such a file has it already).
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS jobs (job_id INTEGER PRIMARY KEY, phase TEXT, input_hash TEXT,"
        " deadline INTEGER, output_blob TEXT, output_hash TEXT, units INTEGER, signature TEXT,"
        " challenge_end INTEGER, claim_tx TEXT, receipt_tx TEXT, finalize_tx TEXT, attempts INTEGER,"
        " note TEXT, updated_at REAL)",
        "CREATE TABLE IF NOT EXISTS candidates (job_id INTEGER PRIMARY KEY, input_hash TEXT, deadline INTEGER,"
        " state TEXT, attempts INTEGER, next_try REAL, note TEXT)",
        "CREATE TABLE IF NOT EXISTS checks (job_id INTEGER PRIMARY KEY, provider TEXT, block INTEGER,"
        " output_hash TEXT, runtime_hash TEXT, gpu_class TEXT, challenge_end INTEGER, verdict TEXT,"
        " challenge_tx TEXT, note TEXT, updated_at REAL)",
        "CREATE TABLE IF NOT EXISTS disputes (job_id INTEGER PRIMARY KEY, member INTEGER, commit_end INTEGER,"
        " reveal_end INTEGER, vote TEXT, output_hash TEXT, salt TEXT, commit_tx TEXT, reveal_tx TEXT,"
        " resolved INTEGER, outcome TEXT, updated_at REAL)",
    ),
    # 2: committee members vote on (output, units): the units this node computed.
    ("ALTER TABLE disputes ADD COLUMN units INTEGER",),
)
SCHEMA_VERSION = len(MIGRATIONS)


def schema_version(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def migrate(db: sqlite3.Connection, path: Path) -> int:
    """Brings the file to :data:`SCHEMA_VERSION` (each step in one transaction); returns the
    version it found. Refuses a file from a newer node."""
    found = schema_version(db)
    if found > SCHEMA_VERSION:
        raise NodeConfigError(
            f"state file {path} has schema version {found}; this node knows up to {SCHEMA_VERSION}: "
            "run the newer node, or move the file away to start from the chain"
        )
    for version in range(found, SCHEMA_VERSION):
        db.execute("BEGIN IMMEDIATE")
        try:
            for statement in MIGRATIONS[version]:
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {version + 1}")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
    return found


def _stored(row: Any) -> list[Any]:
    """The row's values for SQL, each state column checked against its enum."""
    values = []
    for f in fields(row):
        v = getattr(row, f.name)
        enum = _ENUMS.get((type(row), f.name))
        if enum is not None:
            try:
                v = enum(v).value
            except ValueError:
                raise ValueError(f"{type(row).__name__}.{f.name} = {v!r} is not one of "
                                 f"{', '.join(e.value for e in enum)}") from None
        values.append(v)
    return values


class NodeState:
    """Thread-safe access to the state file (one connection, autocommit, WAL, full sync)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        self._db = sqlite3.connect(str(path), timeout=30, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._lock = threading.RLock()
        with self._lock:
            migrate(self._db, path)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- meta

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return str(row[0]) if row else default

    def set_meta(self, key: str, value: str) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def cursor(self, name: str, default: int) -> int:
        v = self.get_meta(f"cursor:{name}")
        return int(v) if v is not None else default

    def set_cursor(self, name: str, block: int) -> None:
        self.set_meta(f"cursor:{name}", str(block))

    # -- rows

    def _table(self, cls: type[Any]) -> str:
        for name, c in _TABLES.items():
            if c is cls:
                return name
        raise KeyError(cls)

    def upsert(self, row: Any) -> None:
        if hasattr(row, "updated_at"):
            row.updated_at = time.time()
        names = [f.name for f in fields(row)]
        sql = (
            f"INSERT OR REPLACE INTO {self._table(type(row))} ({', '.join(names)}) "
            f"VALUES ({', '.join('?' for _ in names)})"
        )
        values = _stored(row)
        with self._lock:
            self._db.execute(sql, values)

    def insert_new(self, row: Any) -> bool:
        """Inserts ``row`` unless its key exists; returns whether it was inserted."""
        names = [f.name for f in fields(row)]
        sql = (
            f"INSERT OR IGNORE INTO {self._table(type(row))} ({', '.join(names)}) "
            f"VALUES ({', '.join('?' for _ in names)})"
        )
        values = _stored(row)
        with self._lock:
            return self._db.execute(sql, values).rowcount == 1

    def get(self, cls: type[T], key: int) -> T | None:
        rows = self.select(cls, "job_id=?", (key,))
        return rows[0] if rows else None

    def select(self, cls: type[T], where: str = "1", params: tuple[Any, ...] = (), order: str = "job_id") -> list[T]:
        names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
        sql = f"SELECT {', '.join(names)} FROM {self._table(cls)} WHERE {where} ORDER BY {order}"
        with self._lock:
            rows = self._db.execute(sql, params).fetchall()
        out = []
        for r in rows:
            values = dict(zip(names, r, strict=True))
            for (table, name), enum in _ENUMS.items():
                if table is cls and values[name] is not None:
                    values[name] = enum(values[name])
            out.append(cls(**values))
        return out

    def jobs(self, *phases: Phase) -> list[JobRow]:
        if not phases:
            return self.select(JobRow)
        return self.select(JobRow, f"phase IN ({', '.join('?' for _ in phases)})", tuple(phases))

    def count_jobs(self, *phases: Phase) -> int:
        return len(self.jobs(*phases))
