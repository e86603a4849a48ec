"""The indexer's database: its migrations and Alembic version table, over :mod:`common.db`.

The URL comes from :class:`indexer.settings.IndexerSettings` (``HEARTH_INDEXER_DATABASE_URL``;
default: the SQLite file ``<data dir>/indexer.db``). The indexer keeps its own version table,
``indexer_alembic_version``, so it can share a database with the gateway's migrations.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import Engine

from common import db

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
VERSION_TABLE = "indexer_alembic_version"


def migrate(engine: Engine, revision: str = "head") -> None:
    """Upgrades the index schema to ``revision`` (idempotent)."""
    db.migrate(engine, MIGRATIONS_DIR, revision)


def downgrade(engine: Engine, revision: str = "base") -> None:
    db.downgrade(engine, MIGRATIONS_DIR, revision)
