"""Engines, sessions and migrations for the indexer's database.

``DATABASE_URL`` selects the database; the default is the SQLite file
``$HEARTH_DATA_DIR/indexer.db`` (``HEARTH_DATA_DIR`` defaults to ``./.hearth``). PostgreSQL URLs
(``postgresql://``, ``postgres://``) are driven by psycopg 3. Schema changes go through Alembic
(:func:`migrate`); the indexer keeps its own version table, ``indexer_alembic_version``, so it
can share a database with other services' migrations.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
VERSION_TABLE = "indexer_alembic_version"


def data_dir() -> Path:
    return Path(os.environ.get("HEARTH_DATA_DIR", ".hearth")).resolve()


def default_database_url() -> str:
    """``DATABASE_URL`` if set, else the SQLite file under the data directory."""
    env = os.environ.get("DATABASE_URL")
    if env:
        return normalize_url(env)
    return f"sqlite:///{data_dir() / 'indexer.db'}"


def normalize_url(url: str) -> str:
    """Points bare PostgreSQL URLs at the psycopg 3 driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def make_engine(url: str | None = None, **kwargs: Any) -> Engine:
    """An engine for ``url`` (default: :func:`default_database_url`).

    SQLite runs in WAL mode with a busy timeout, so readers (the gateway) never block the
    indexer's writes and the other way round."""
    url = normalize_url(url) if url else default_database_url()
    u = sa.make_url(url)
    if u.get_backend_name() == "sqlite":
        if u.database and u.database != ":memory:":
            Path(u.database).parent.mkdir(parents=True, exist_ok=True)
        connect_args = {"check_same_thread": False, "timeout": 30}
        connect_args.update(kwargs.pop("connect_args", {}))
        engine = sa.create_engine(url, connect_args=connect_args, **kwargs)

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return sa.create_engine(url, **kwargs)


@contextmanager
def session(engine: Engine | None = None) -> Iterator[Session]:
    """A SQLModel session that commits when the block ends and rolls back on an exception."""
    eng = engine or make_engine()
    with Session(eng, expire_on_commit=False) as s:
        try:
            yield s
            s.commit()
        except BaseException:
            s.rollback()
            raise


def alembic_config(engine: Engine | None = None) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if engine is not None:
        cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    return cfg


def migrate(engine: Engine, revision: str = "head") -> None:
    """Upgrades the schema to ``revision`` (idempotent)."""
    from alembic import command

    cfg = alembic_config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def downgrade(engine: Engine, revision: str = "base") -> None:
    from alembic import command

    cfg = alembic_config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)
