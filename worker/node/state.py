"""The node's local state: one SQLite file per (chain, market, operator address).

It records every step *before* the transaction that makes it (``claiming``, ``submitting``,
a vote's salt) and again after it is mined, so a node killed at any point restarts, compares
each open record with the chain (the source of truth) and carries on without repeating a
claim, a receipt or a vote. The chain is re-read on restart because the last transaction may
have been mined after the process died.

The file holds unrevealed vote salts, so it is created with mode 0600.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from dataclasses import dataclass, fields
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class Phase(StrEnum):
    """Where one of this node's own jobs is."""

    CLAIMING = "claiming"  # claim tx about to be / being sent
    CLAIMED = "claimed"  # claimed on chain, output not computed yet
    COMPUTED = "computed"  # output stored, receipt not sent
    SUBMITTING = "submitting"  # receipt signed, tx about to be / being sent
    DELIVERED = "delivered"  # receipt on chain, challenge window running
    CHALLENGED = "challenged"  # a verifier challenged it
    FINALIZED = "finalized"  # paid (terminal)
    REFUNDED = "refunded"  # lost a dispute or refunded after its deadline (terminal)
    ABANDONED = "abandoned"  # lost the claim race or ran out of time (terminal)


OPEN_PHASES = (Phase.CLAIMING, Phase.CLAIMED, Phase.COMPUTED, Phase.SUBMITTING, Phase.DELIVERED, Phase.CHALLENGED)
TERMINAL_PHASES = (Phase.FINALIZED, Phase.REFUNDED, Phase.ABANDONED)


@dataclass
class JobRow:
    job_id: int
    phase: str
    input_hash: str
    deadline: int
    output_blob: str | None = None
    output_hash: str | None = None
    units: int | None = None
    signature: str | None = None
    challenge_end: int | None = None
    claim_tx: str | None = None
    receipt_tx: str | None = None
    finalize_tx: str | None = None
    attempts: int = 0
    note: str | None = None
    updated_at: float = 0.0


@dataclass
class CandidateRow:
    job_id: int
    input_hash: str
    deadline: int
    state: str = "open"  # open | gone
    attempts: int = 0
    next_try: float = 0.0
    note: str | None = None


@dataclass
class CheckRow:
    """A receipt this node (as verifier) considered for re-execution."""

    job_id: int
    provider: str
    block: int
    output_hash: str
    runtime_hash: str
    gpu_class: str
    challenge_end: int
    verdict: str = "pending"  # pending | unsampled | match | mismatch | challenged | incomparable | moot
    challenge_tx: str | None = None
    note: str | None = None
    updated_at: float = 0.0


@dataclass
class DisputeRow:
    """A dispute this node sits on (``member``) or is a party to (provider or challenger)."""

    job_id: int
    member: int
    commit_end: int
    reveal_end: int
    vote: str = "none"  # none | pending | committed | revealed | abstained | missed
    output_hash: str | None = None
    units: int | None = None  # the units this node computed: the vote is on (output, units)
    salt: str | None = None
    commit_tx: str | None = None
    reveal_tx: str | None = None
    resolved: int = 0
    outcome: str | None = None
    updated_at: float = 0.0


_TABLES: dict[str, tuple[type[Any], str]] = {
    "jobs": (JobRow, "job_id"),
    "candidates": (CandidateRow, "job_id"),
    "checks": (CheckRow, "job_id"),
    "disputes": (DisputeRow, "job_id"),
}


def _ddl(name: str, cls: type[Any], key: str) -> str:
    cols = []
    for f in fields(cls):
        base = str(f.type).split(" |")[0]
        sql = {"int": "INTEGER", "str": "TEXT", "float": "REAL"}[base]
        cols.append(f"{f.name} {sql}" + (" PRIMARY KEY" if f.name == key else ""))
    return f"CREATE TABLE IF NOT EXISTS {name} ({', '.join(cols)})"


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
            self._db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            for name, (cls, key) in _TABLES.items():
                self._db.execute(_ddl(name, cls, key))
                # A state file from an older version lacks newer columns: add them (nullable).
                have = {r[1] for r in self._db.execute(f"PRAGMA table_info({name})")}
                for f in fields(cls):
                    if f.name not in have:
                        sql = {"int": "INTEGER", "str": "TEXT", "float": "REAL"}[str(f.type).split(" |")[0]]
                        self._db.execute(f"ALTER TABLE {name} ADD COLUMN {f.name} {sql}")

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
        for name, (c, _) in _TABLES.items():
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
        with self._lock:
            self._db.execute(sql, [getattr(row, n) for n in names])

    def insert_new(self, row: Any) -> bool:
        """Inserts ``row`` unless its key exists; returns whether it was inserted."""
        names = [f.name for f in fields(row)]
        sql = (
            f"INSERT OR IGNORE INTO {self._table(type(row))} ({', '.join(names)}) "
            f"VALUES ({', '.join('?' for _ in names)})"
        )
        with self._lock:
            return self._db.execute(sql, [getattr(row, n) for n in names]).rowcount == 1

    def get(self, cls: type[T], key: int) -> T | None:
        rows = self.select(cls, "job_id=?", (key,))
        return rows[0] if rows else None

    def select(self, cls: type[T], where: str = "1", params: tuple[Any, ...] = (), order: str = "job_id") -> list[T]:
        names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
        sql = f"SELECT {', '.join(names)} FROM {self._table(cls)} WHERE {where} ORDER BY {order}"
        with self._lock:
            rows = self._db.execute(sql, params).fetchall()
        return [cls(**dict(zip(names, r, strict=True))) for r in rows]

    def jobs(self, *phases: str) -> list[JobRow]:
        if not phases:
            return self.select(JobRow)
        return self.select(JobRow, f"phase IN ({', '.join('?' for _ in phases)})", tuple(phases))

    def count_jobs(self, *phases: str) -> int:
        return len(self.jobs(*phases))
