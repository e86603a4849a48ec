"""Claimable jobs from the indexer's database, with the chain as the fallback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa

from worker.node.node import Node, NodeConfig
from worker.node.service import build_node
from worker.node.sources import IndexerJobSource
from worker.settings import WorkerSettings


def _jobs_table(meta: sa.MetaData) -> sa.Table:
    """The indexer's real ``jobs`` table when its package is importable, else its columns."""
    try:
        from common.index_models import Job

        return Job.__table__.to_metadata(meta)  # type: ignore[attr-defined,no-any-return]
    except ImportError:
        return sa.Table(
            "jobs",
            meta,
            sa.Column("job_id", sa.BigInteger, primary_key=True),
            sa.Column("model_id", sa.String),
            sa.Column("status", sa.String),
            sa.Column("input_hash", sa.String),
            sa.Column("deadline", sa.BigInteger),
        )


def _indexer_db(path: Path, rows: list[dict[str, Any]]) -> str:
    url = f"sqlite:///{path}"
    engine = sa.create_engine(url)
    meta = sa.MetaData()
    jobs = _jobs_table(meta)
    meta.create_all(engine)
    defaults = {"client": "0x" + "11" * 20, "max_payment": 1, "price_per_unit": 1, "payment": 0, "collateral": 0}
    with engine.begin() as conn:
        conn.execute(jobs.insert(), [{**{k: v for k, v in defaults.items() if k in jobs.c}, **r} for r in rows])
    return url


def test_node_claims_the_jobs_the_indexer_lists_as_posted(
    fresh: Any, tmp_path: Path, store: Any, executor: Any, post_job: Any
) -> None:
    h = fresh.hearth
    listed, _ = post_job(["listed by the indexer"])
    unlisted, _ = post_job(["not yet indexed"])
    job = h.job(listed)
    url = _indexer_db(
        tmp_path / "indexer.sqlite",
        [
            {
                "job_id": listed,
                "model_id": "0x" + job.model_id.hex().upper(),
                "status": "posted",
                "input_hash": "0x" + job.input_hash.hex(),
                "deadline": job.deadline,
            },
            {
                "job_id": 999,
                "model_id": "0x" + job.model_id.hex(),
                "status": "finalized",
                "input_hash": "0x" + "00" * 32,
                "deadline": 0,
            },
        ],
    )
    source = IndexerJobSource(url, h, [executor.model_hash])
    node = Node(
        h,
        fresh.accounts["provider"].key,
        store,
        executor,
        NodeConfig(name="provider"),
        state_dir=tmp_path / "state",
        job_source=source,
    )
    try:
        assert node.tick().delivered == [listed]
        assert h.job(unlisted).provider == "0x" + "00" * 20
    finally:
        node.close()


def test_build_node_falls_back_to_chain_logs_without_an_indexer_table(
    fresh: Any, tmp_path: Path, store: Any, executor: Any
) -> None:
    settings = WorkerSettings(data_dir=tmp_path, indexer_database_url=f"sqlite:///{tmp_path / 'empty.sqlite'}")
    node = build_node(settings, fresh.accounts["provider"].key, hearth=fresh.hearth, store=store, executor=executor)
    try:
        assert node.source.name == "chain"
    finally:
        node.close()
