"""Alembic environment for the indexer's schema (its own version table)."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection
from sqlmodel import SQLModel

import common.index_models  # noqa: F401 - registers the tables
from common.db import make_engine
from indexer.db import VERSION_TABLE

config = context.config
target_metadata = SQLModel.metadata
_TABLES = {t.name for t in SQLModel.metadata.sorted_tables if t.name in {
    "providers", "provider_models", "models", "jobs", "receipts", "challenges", "votes", "balances",
    "withdrawals", "slashes", "params", "raw_events", "blocks", "checkpoints", "undo_log",
    "escrow_deposits", "escrow_lanes", "escrow_signers", "provider_bonds", "escrow_collections", "batches",
    "leaf_cases", "provider_prices", "price_ceilings",
}}


def _include(
    obj: object, name: str | None, type_: str, reflected: bool, compare_to: object,
) -> bool:
    # Other services may share the database: only the indexer's tables are ours.
    if type_ == "table":
        return name in _TABLES
    return True


def run_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata,
        literal_binds=True, version_table=VERSION_TABLE, include_object=_include,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    conn = config.attributes.get("connection")
    if conn is None:
        url = config.get_main_option("sqlalchemy.url")
        if not url:
            raise RuntimeError("no database URL: run the migrations through indexer.db.migrate")
        engine = make_engine(url)
        with engine.begin() as c:
            _run(c)
        return
    _run(conn)


def _run(conn: Connection) -> None:
    context.configure(
        connection=conn, target_metadata=target_metadata, version_table=VERSION_TABLE,
        include_object=_include, render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
