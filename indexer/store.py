"""Database side of a batch: cached row access for the projector, bulk writes, the undo log.

One :class:`BatchStore` lives for one database transaction. Rows the batch reads are fetched in
bulk up front (``prefetch``), changed in memory, and written back once at ``flush`` with a
multi-row upsert, so a batch of thousands of events costs a handful of statements per table.

For blocks a reorg may still remove (``block >= undo_from``) the store records each row's image
before its first change in that block; :func:`revert_to` restores those images newest first,
which leaves every row as it was at the end of the common ancestor.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlmodel import SQLModel

from common.index_models import PROJECTION_TABLES, UndoEntry
from indexer.projector import PRIMARY_KEYS, Key


def _table(model: type[SQLModel]) -> sa.Table:
    return model.__table__  # type: ignore[attr-defined,no-any-return]


TABLES: dict[str, sa.Table] = {_table(m).name: _table(m) for m in PROJECTION_TABLES}
_CHUNK = 500


def upsert(conn: Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    """INSERT ... ON CONFLICT (primary key) DO UPDATE, many rows at once."""
    if not rows:
        return
    pk = [c.name for c in table.primary_key.columns]
    ins: Any = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    stmt = ins(table)
    cols = [c.name for c in table.columns if c.name not in pk]
    stmt = stmt.on_conflict_do_update(index_elements=pk, set_={c: stmt.excluded[c] for c in cols})
    conn.execute(stmt, rows)


def bulk_insert(conn: Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    """Plain INSERT of many rows; on PostgreSQL through COPY (several times faster than an
    executemany of INSERTs), inside the caller's transaction."""
    if not rows:
        return
    if conn.dialect.name != "postgresql" or len(rows) < 64:
        conn.execute(sa.insert(table), rows)
        return
    cols = list(rows[0])
    quote = conn.dialect.identifier_preparer.quote
    json_cols = {c.name for c in table.columns if isinstance(c.type, sa.JSON)}
    raw = conn.connection.driver_connection
    assert raw is not None
    with raw.cursor() as cur, cur.copy(
        f"COPY {quote(table.name)} ({', '.join(quote(c) for c in cols)}) FROM STDIN"
    ) as copy:
        for r in rows:
            copy.write_row([json.dumps(r[c]) if c in json_cols and r[c] is not None else r[c]
                            for c in cols])


def delete_keys(conn: Connection, table: sa.Table, keys: list[Key]) -> None:
    if not keys:
        return
    pk = list(table.primary_key.columns)
    for i in range(0, len(keys), _CHUNK):
        part = keys[i:i + _CHUNK]
        if len(pk) == 1:
            conn.execute(table.delete().where(pk[0].in_([k[0] for k in part])))
        else:
            conn.execute(table.delete().where(sa.tuple_(*pk).in_(part)))


def _json_key(key: Key) -> list[Any]:
    return list(key)


class BatchStore:
    """A :class:`~indexer.projector.RowStore` over one open transaction."""

    def __init__(self, conn: Connection, undo_from: int) -> None:
        self.conn = conn
        self.undo_from = undo_from
        self._cache: dict[str, dict[Key, dict[str, Any] | None]] = {t: {} for t in TABLES}
        self._dirty: dict[str, set[Key]] = {t: set() for t in TABLES}
        self._undo_seen: set[tuple[str, Key, int]] = set()
        self._undo: list[dict[str, Any]] = []

    # ------------------------------------------------------------ reads

    def prefetch(self, wanted: Iterable[tuple[str, Key]]) -> None:
        by_table: dict[str, set[Key]] = {}
        for table, key in wanted:
            if key not in self._cache[table]:
                by_table.setdefault(table, set()).add(key)
        for table, keys in by_table.items():
            self._load(table, list(keys))

    def _load(self, table: str, keys: list[Key]) -> None:
        t = TABLES[table]
        pk = list(t.primary_key.columns)
        names = PRIMARY_KEYS[table]
        cache = self._cache[table]
        for i in range(0, len(keys), _CHUNK):
            part = keys[i:i + _CHUNK]
            cond = (pk[0].in_([k[0] for k in part]) if len(pk) == 1
                    else sa.tuple_(*pk).in_(part))
            for r in self.conn.execute(t.select().where(cond)).mappings():
                cache[tuple(r[n] for n in names)] = dict(r)
            for k in part:
                cache.setdefault(k, None)

    def get(self, table: str, key: Key) -> dict[str, Any] | None:
        cache = self._cache[table]
        if key not in cache:
            self._load(table, [key])
        row = cache[key]
        return None if row is None else dict(row)

    # ------------------------------------------------------------ writes

    def _record_undo(self, table: str, key: Key, block: int, before: dict[str, Any] | None) -> None:
        if block < self.undo_from:
            return
        mark = (table, key, block)
        if mark in self._undo_seen:
            return
        self._undo_seen.add(mark)
        self._undo.append({"block_number": block, "table_name": table, "key": _json_key(key),
                           "before": before})

    def put(self, table: str, key: Key, row: dict[str, Any], block: int) -> None:
        cache = self._cache[table]
        if key not in cache:
            self._load(table, [key])
        self._record_undo(table, key, block, cache[key])
        cache[key] = row
        self._dirty[table].add(key)

    def insert(self, table: str, key: Key, row: dict[str, Any], block: int) -> None:
        self._record_undo(table, key, block, None)
        self._cache[table][key] = row
        self._dirty[table].add(key)

    def restore(self, table: str, key: Key, before: dict[str, Any] | None) -> None:
        """Sets a row to an earlier image (``None`` deletes it); used by reorg rollback."""
        self._cache[table][key] = before
        self._dirty[table].add(key)

    def flush(self) -> int:
        """Writes every changed row and the undo entries; returns the number of rows written."""
        n = 0
        for table, keys in self._dirty.items():
            if not keys:
                continue
            cache = self._cache[table]
            rows = [cache[k] for k in keys if cache[k] is not None]
            gone = [k for k in keys if cache[k] is None]
            delete_keys(self.conn, TABLES[table], gone)
            upsert(self.conn, TABLES[table], rows)  # type: ignore[arg-type]
            n += len(keys)
            keys.clear()
        if self._undo:
            bulk_insert(self.conn, _table(UndoEntry), self._undo)
            self._undo = []
        return n


def revert_to(conn: Connection, ancestor: int) -> int:
    """Rolls every projection back to the end of block ``ancestor`` from the undo log; returns
    the number of undo entries applied (and deletes them)."""
    undo = _table(UndoEntry)
    entries = conn.execute(
        sa.select(undo.c.table_name, undo.c.key, undo.c.before)
        .where(undo.c.block_number > ancestor).order_by(undo.c.id.desc())
    ).all()
    store = BatchStore(conn, undo_from=1 << 62)  # no undo of the undo
    for table, key, before in entries:
        store.restore(table, tuple(key), before)
    store.flush()
    conn.execute(undo.delete().where(undo.c.block_number > ancestor))
    return len(entries)


def clear_projections(conn: Connection) -> None:
    for t in TABLES.values():
        conn.execute(t.delete())
    conn.execute(_table(UndoEntry).delete())
