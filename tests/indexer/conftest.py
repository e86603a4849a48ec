"""Fixtures for the indexer tests: an Anvil of their own (reorgs would disturb the shared
devnet's snapshots), the database matrix (SQLite and PostgreSQL), and indexer factories."""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from indexer_protocol import AnvilStateLost, Protocol, ReorgChain

PG_HOST = os.environ.get("HEARTH_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("HEARTH_TEST_PG_PORT", "5432"))


def _pg_connect(user: str) -> Any:
    import psycopg

    return psycopg.connect(host=PG_HOST, port=PG_PORT, user=user, dbname="test", autocommit=True,
                           connect_timeout=3)


def _pg_admin() -> tuple[Any, str]:
    errors = []
    for user in ("postgres", "root"):
        try:
            return _pg_connect(user), user
        except Exception as exc:  # noqa: BLE001 - try the next user, then start the server
            errors.append(f"{user}: {exc}")
    raise ConnectionError("; ".join(errors))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A protocol action after Anvil lost its EVM state on a rewind (see AnvilStateLost) is
    reported as a skip with the reason, not as an indexer failure."""
    outcome = yield
    rep = outcome.get_result()  # type: ignore[attr-defined]
    if call.excinfo is not None and call.excinfo.errisinstance(AnvilStateLost) and rep.failed:
        rep.outcome = "skipped"
        rep.longrepr = (str(item.path), item.location[1] or 0, f"Skipped: {call.excinfo.value}")


@pytest.fixture(scope="session")
def pg_base_url() -> Iterator[str]:
    """A fresh, uniquely named PostgreSQL database for this session, dropped at the end.

    PostgreSQL is part of the supported matrix: if it is down and cannot be started, the
    session fails rather than skipping the PostgreSQL half of the suite."""
    try:
        admin, user = _pg_admin()
    except ConnectionError:
        versions = sorted(os.listdir("/etc/postgresql")) if Path("/etc/postgresql").is_dir() else []
        if versions:
            subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main",
                            "start"], check=False, capture_output=True, timeout=60)
        for _ in range(50):
            try:
                admin, user = _pg_admin()
                break
            except ConnectionError as exc:
                last = exc
                time.sleep(0.2)
        else:
            pytest.fail(f"PostgreSQL is not running on {PG_HOST}:{PG_PORT} and could not be "
                        f"started: {last}", pytrace=False)
    name = f"hearth_idx_{secrets.token_hex(6)}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://{user}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of each kind, per test."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'indexer.db'}"
        return
    base: str = request.getfixturevalue("pg_base_url")
    engine = sa.create_engine(base)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP SCHEMA public CASCADE"))
        conn.execute(sa.text("CREATE SCHEMA public"))
    engine.dispose()
    yield base


@pytest.fixture(scope="session")
def idevnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from deploy.devnet import bring_up, free_port

    dn = bring_up(port=free_port(), write=False,
                  anvil_log=tmp_path_factory.mktemp("anvil-indexer") / "anvil.log")
    try:
        yield dn
    finally:
        dn.anvil.stop()


@pytest.fixture
def ichain(idevnet: Any) -> Iterator[ReorgChain]:
    """The indexer tests' chain, reverted to its deployed state after each test."""
    chain = ReorgChain(idevnet.hearth)
    snap = chain.snapshot()
    chain.resync()
    try:
        yield chain
    finally:
        chain.revert(snap)
        chain.rpc("evm_setAutomine", [True])
        chain.resync()


@pytest.fixture
def proto(idevnet: Any, ichain: ReorgChain) -> Protocol:
    return Protocol(idevnet, ichain)


@pytest.fixture
def make_indexer(idevnet: Any, db_url: str) -> Iterator[Callable[..., Any]]:
    """Builds indexers over the test's database (each one as a fresh process would)."""
    from common.db import make_engine
    from indexer.settings import IndexerSettings
    from indexer.sync import Indexer

    made: list[Any] = []

    def make(**overrides: Any) -> Indexer:
        settings = IndexerSettings(**{"database_url": db_url, "poll_interval": 0.05,
                                      "rpc_retries": 2, **overrides})
        ix = Indexer(settings, manifest=idevnet.manifest, engine=make_engine(db_url))
        made.append(ix)
        return ix

    yield make
    for ix in made:
        ix.close()
        ix.engine.dispose()
