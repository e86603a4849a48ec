"""One writer per index: a PostgreSQL advisory lock, or a file lock beside the SQLite file.

Two indexers writing the same database would each apply every batch; the checkpoint check
would make one of them fail, but only after wasted work and noisy errors. The lock turns that
into a clear error at start."""

from __future__ import annotations

import fcntl
import os
from typing import IO, Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from indexer.errors import IndexerError

#: arbitrary constant: "hearth-indexer" as a 63-bit number
_PG_LOCK_KEY = 0x6865617274680001


class IndexerLockedError(IndexerError):
    """Another indexer holds this database."""


class WriterLock:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._conn: Any = None
        self._file: IO[bytes] | None = None

    def acquire(self) -> None:
        url = self.engine.url
        if url.get_backend_name() == "postgresql":
            conn = self.engine.connect()
            got = conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": _PG_LOCK_KEY}).scalar()
            conn.commit()
            if not got:
                conn.close()
                raise IndexerLockedError(f"another indexer is writing {url.render_as_string()}")
            self._conn = conn
        elif url.database and url.database != ":memory:":
            f = open(url.database + ".lock", "ab")  # noqa: SIM115 - held for the lock's life
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.close()
                raise IndexerLockedError(f"another indexer is writing {url.database}") from None
            f.truncate(0)
            f.write(str(os.getpid()).encode())
            f.flush()
            self._file = f

    def release(self) -> None:
        if self._conn is not None:
            try:
                self._conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_LOCK_KEY})
                self._conn.commit()
            finally:
                self._conn.close()
                self._conn = None
        if self._file is not None:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None
