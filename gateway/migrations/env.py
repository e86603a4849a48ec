"""Alembic environment for the gateway's own tables (version table ``gateway_alembic_version``)."""

from __future__ import annotations

from typing import Any

from alembic import context

from gateway.store import METADATA, VERSION_TABLE, make_engine

config = context.config
target_metadata = METADATA


def _include(obj: object, name: str | None, type_: str, reflected: bool, compare_to: object) -> bool:
    # The database may be shared with other services: only the gateway's tables are ours.
    if type_ == "table":
        return name in METADATA.tables
    return True


def _run(conn: Any) -> None:
    context.configure(
        connection=conn, target_metadata=target_metadata, version_table=VERSION_TABLE,
        include_object=_include, render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    conn = config.attributes.get("connection")
    if conn is None:
        engine = make_engine(str(config.get_main_option("sqlalchemy.url")))
        with engine.begin() as c:
            _run(c)
        return
    _run(conn)


if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata,
                      literal_binds=True, version_table=VERSION_TABLE, include_object=_include)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_online()
