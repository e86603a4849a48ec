"""PostgreSQL and Redis for the scale-out tests: this machine runs both (PostgreSQL on
127.0.0.1:5432 with trust auth and a database ``test``, Redis on 6379). A test that needs one
starts it if it is down, or fails loudly; it never skips."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

PG_HOST = os.environ.get("HEARTH_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("HEARTH_TEST_PG_PORT", "5432"))
REDIS_PORT = 6379


def _pg_admin() -> tuple[Any, str]:
    import psycopg

    errors = []
    for user in ("postgres", "root"):
        try:
            conn = psycopg.connect(host=PG_HOST, port=PG_PORT, user=user, dbname="test", autocommit=True,
                                   connect_timeout=3)
            return conn, user
        except Exception as exc:  # noqa: BLE001 - try the next user, then start the server
            errors.append(f"{user}: {exc}")
    raise ConnectionError("; ".join(errors))


def pg_admin() -> tuple[Any, str]:
    """An autocommit connection to the ``test`` database, starting the server if it is down."""
    try:
        return _pg_admin()
    except ConnectionError:
        versions = sorted(os.listdir("/etc/postgresql")) if Path("/etc/postgresql").is_dir() else []
        if versions:
            subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "start"],
                           check=False, capture_output=True, timeout=60)
        last: Exception | None = None
        for _ in range(50):
            try:
                return _pg_admin()
            except ConnectionError as exc:
                last = exc
                time.sleep(0.2)
        pytest.fail(f"PostgreSQL is not running on {PG_HOST}:{PG_PORT} and could not be started: {last}",
                    pytrace=False)


@contextmanager
def fresh_pg_databases(n: int, prefix: str = "hearth_scale") -> Iterator[list[str]]:
    """``n`` new, uniquely named PostgreSQL databases (URLs for psycopg 3), dropped afterwards."""
    admin, user = pg_admin()
    names = [f"{prefix}_{secrets.token_hex(5)}" for _ in range(n)]
    try:
        for name in names:
            admin.execute(f'CREATE DATABASE "{name}"')
        yield [f"postgresql+psycopg://{user}@{PG_HOST}:{PG_PORT}/{name}" for name in names]
    finally:
        for name in names:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def _redis_up(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_timeout=1).ping())
    except redis.RedisError:
        return False


def ensure_redis(db: int) -> str:
    """The URL of Redis database ``db`` on 127.0.0.1:6379, starting redis-server if it is down."""
    url = f"redis://127.0.0.1:{REDIS_PORT}/{db}"
    if _redis_up(url):
        return url
    server = shutil.which("redis-server")
    if server is None:
        pytest.fail(f"Redis is not running on 127.0.0.1:{REDIS_PORT} and redis-server is not installed")
    for d in ("/var/lib/redis", "/var/log/redis"):
        Path(d).mkdir(parents=True, exist_ok=True)
    subprocess.run([server, "--daemonize", "yes", "--bind", "127.0.0.1", "-::1", "--port", str(REDIS_PORT),
                    "--save", "", "--appendonly", "no", "--dir", "/var/lib/redis",
                    "--logfile", "/var/log/redis/ci.log"], check=False, timeout=30)
    for _ in range(50):
        if _redis_up(url):
            return url
        time.sleep(0.1)
    pytest.fail(f"could not start redis-server on 127.0.0.1:{REDIS_PORT} (see /var/log/redis/ci.log)")
