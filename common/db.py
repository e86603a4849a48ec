"""Engines, sessions and Alembic migrations for the services' databases (the indexer's and the
gateway's).

URLs are SQLAlchemy URLs; PostgreSQL URLs (``postgresql://``, ``postgres://``) are driven by
psycopg 3, SQLite files run in WAL mode. Each service keeps its migrations in its own folder
and its own Alembic version table, so two services can share one database.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session


def sqlite_url(path: Path) -> str:
    """The URL of a SQLite file."""
    return f"sqlite:///{path}"


def normalize_url(url: str) -> str:
    """Points bare PostgreSQL URLs at the psycopg 3 driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for ``url``.

    SQLite runs in WAL mode with a busy timeout, so readers (the gateway) never block the
    indexer's writes and the other way round."""
    url = normalize_url(url)
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
def session(engine: Engine) -> Iterator[Session]:
    """A SQLModel session that commits when the block ends and rolls back on an exception."""
    with Session(engine, expire_on_commit=False) as s:
        try:
            yield s
            s.commit()
        except BaseException:
            s.rollback()
            raise


def alembic_config(migrations: Path, engine: Engine | None = None) -> Any:
    """An Alembic configuration for the migrations in the folder ``migrations``."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations))
    if engine is not None:
        cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    return cfg


def migrate(engine: Engine, migrations: Path, revision: str = "head") -> None:
    """Upgrades the schema of ``migrations`` to ``revision`` (idempotent)."""
    from alembic import command

    cfg = alembic_config(migrations, engine)
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Several processes may start on one database at once (two gateways): one migrates,
            # the others wait for its transaction and find the schema at head.
            import zlib

            lock = zlib.crc32(f"hearth.migrate.{migrations.resolve().parent.name}".encode())
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": lock})
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def downgrade(engine: Engine, migrations: Path, revision: str = "base") -> None:
    from alembic import command

    cfg = alembic_config(migrations, engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)
