"""The schema: migrations match the models on both databases, big integers survive exactly and
sort numerically, and the gateway-facing helpers work."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import SQLModel, select

import common.index_models as m
from common.db import make_engine, normalize_url, session
from indexer.db import VERSION_TABLE, downgrade, migrate


def test_migrations_build_exactly_the_models_and_downgrade_cleanly(db_url: str) -> None:
    engine = make_engine(db_url)
    migrate(engine)
    migrate(engine)  # idempotent
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        indexer_tables = [*m.PROJECTION_TABLES, m.RawEvent, m.Block, m.Checkpoint, m.UndoEntry]
        names = {t.__table__.name for t in indexer_tables}  # type: ignore[attr-defined]
        diffs = [d for d in compare_metadata(ctx, SQLModel.metadata)
                 if not (d[0] == "remove_table" and d[1].name not in names)
                 and not (d[0] == "add_table" and d[1].name not in names)]
    assert diffs == []
    downgrade(engine)
    assert not set(sa.inspect(engine).get_table_names()) & names
    engine.dispose()


@pytest.mark.parametrize("value", [0, 1, 10**18, 2**96 - 1, 2**255 + 12345, 2**256 - 1])
def test_u256_round_trips_exactly(db_url: str, value: int) -> None:
    engine = make_engine(db_url)
    migrate(engine)
    with session(engine) as s:
        s.add(m.Balance(account="0x" + "ab" * 20, credited=value, withdrawn=0, balance=value))
    with session(engine) as s:
        row = s.exec(select(m.Balance)).one()
        assert row.credited == value and isinstance(row.credited, int)
        assert s.exec(select(m.Balance).where(m.Balance.balance == value)).one()
    engine.dispose()


def test_u256_orders_and_filters_numerically(db_url: str) -> None:
    engine = make_engine(db_url)
    migrate(engine)
    values = [5, 10**20, 7, 2**200, 0, 999]
    with session(engine) as s:
        for i, v in enumerate(values):
            s.add(m.Balance(account=f"0x{i:040x}", credited=v, withdrawn=0, balance=v))
    with session(engine) as s:
        by_balance = select(m.Balance).order_by(m.Balance.balance)  # type: ignore[arg-type]
        ordered = [b.balance for b in s.exec(by_balance)]
        over = select(m.Balance).where(m.Balance.balance > 1000)
        big = [b.balance for b in s.exec(over)]
    assert ordered == sorted(values)
    assert sorted(big) == [10**20, 2**200]
    engine.dispose()


def test_u256_refuses_negative_values(db_url: str) -> None:
    engine = make_engine(db_url)
    migrate(engine)
    with pytest.raises(sa.exc.StatementError), session(engine) as s:
        s.add(m.Balance(account="0x" + "cd" * 20, credited=-1, withdrawn=0, balance=0))
    engine.dispose()


def test_database_urls_default_to_sqlite_under_the_data_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object,
) -> None:
    from indexer.settings import IndexerSettings

    monkeypatch.delenv("HEARTH_INDEXER_DATABASE_URL", raising=False)
    monkeypatch.setenv("HEARTH_DATA_DIR", str(tmp_path))
    assert IndexerSettings().database_url == f"sqlite:///{tmp_path}/indexer.db"
    monkeypatch.setenv("HEARTH_INDEXER_DATABASE_URL", "postgres://u@h/db")
    assert normalize_url(IndexerSettings().database_url) == "postgresql+psycopg://u@h/db"
    assert normalize_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
