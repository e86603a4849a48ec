"""The scale-out configuration, started by one command with the URLs given, as README documents:

    HEARTH_INDEXER_DATABASE_URL=postgresql+psycopg://... HEARTH_GATEWAY_DATABASE_URL=postgresql+psycopg://...
    HEARTH_WORKER_BROKER_URL=redis://... HEARTH_UP_GATEWAYS=2 python -m deploy up

against this machine's PostgreSQL (a fresh database each for the indexer and the gateways,
dropped afterwards) and Redis (database 13, a queue of its own). Two gateways share one
database: an API key registered at the first is charged at the second, for a job that the
provider's node fans out to one of its two Celery worker processes. Stopping the supervisor
leaves no process behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from backing_services import ensure_redis, fresh_pg_databases

pytestmark = [pytest.mark.postgres, pytest.mark.redis]
ROOT = Path(__file__).resolve().parents[2]
REDIS_DB = 13


def _wait(what: str, cond: Callable[[], object], proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            pytest.fail(f"the stack exited ({proc.returncode}) before {what}:\n"
                        f"{log.read_text(errors='replace')[-4000:]}")
        try:
            if cond():
                return
        except (httpx.TransportError, ValueError, KeyError):
            pass
        time.sleep(0.3)
    pytest.fail(f"no {what} within {timeout:.0f}s:\n{log.read_text(errors='replace')[-4000:]}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_the_stack_on_postgresql_and_redis_serves_through_two_gateways_and_two_celery_workers(
        tmp_path: Path) -> None:
    from deploy.devnet import free_port, free_port_run
    from worker.celery_app import make_app
    from worker.settings import WorkerSettings

    redis_url = ensure_redis(REDIS_DB)
    queue = f"hearth-scale-{uuid.uuid4().hex[:8]}"
    with fresh_pg_databases(2) as (index_url, gateway_url):
        # The second gateway listens on the port after the first: both free, and outside the
        # ephemeral range, or a service's outgoing connection may take the second meanwhile.
        rpc_port, gw = free_port(), free_port_run(2)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "HEARTH_DATA_DIR": str(tmp_path),
               "HEARTH_INDEXER_DATABASE_URL": index_url, "HEARTH_GATEWAY_DATABASE_URL": gateway_url,
               "HEARTH_WORKER_BROKER_URL": redis_url, "HEARTH_WORKER_QUEUE": queue, "HEARTH_UP_GATEWAYS": "2",
               "HEARTH_UP_CELERY_WORKERS": "2", "HEARTH_WORKER_POLL_INTERVAL_S": "0.5",
               # the per-job path, so the request becomes a job the node fans out to Celery (the
               # serving plane's endpoints run their model in-process)
               "HEARTH_GATEWAY_SERVING_MODE": "per_job",
               "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        log = tmp_path / "up.log"
        provider_ports = f"{free_port()},{free_port()}"
        proc = subprocess.Popen([sys.executable, "-m", "deploy", "up", "--port", str(rpc_port), "--gateway-port",
                                 str(gw), "--block-time", "0", "--provider-ports", provider_ports], cwd=ROOT,
                                env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
        gateways = [f"http://127.0.0.1:{gw}", f"http://127.0.0.1:{gw + 1}"]
        try:
            for url in gateways:
                def healthy(url: str = url) -> bool:
                    return bool(httpx.get(f"{url}/healthz", timeout=2).json()["index_ok"])

                _wait(f"healthy gateway at {url}", healthy, proc, log, 240)
            app = make_app(WorkerSettings(data_dir=tmp_path, broker_url=redis_url, queue=queue))
            names: set[str] = set()

            def two_workers() -> bool:
                names.update(n for reply in app.control.ping(timeout=1.0) for n in reply)
                return {n.split("@")[0] for n in names} >= {"celery1", "celery2"}

            _wait("two Celery workers answering on Redis", two_workers, proc, log, 120)

            # An API key registered at the first gateway ...
            made = subprocess.run([sys.executable, "-c", "from deploy.cli import main; main()", "api-key", "create",
                                   "--as", "client", "--cap", "1", "--gateway", gateways[0]], cwd=ROOT, env=env,
                                  capture_output=True, text=True, timeout=120)
            assert made.returncode == 0, made.stdout + made.stderr
            key = made.stdout.split()[-1]
            assert key.startswith("hk-")
            # ... is known to and charged by the second: one database behind both.
            r = httpx.post(f"{gateways[1]}/v1/embeddings", headers={"authorization": f"Bearer {key}"},
                           json={"model": "all-MiniLM-L6-v2", "input": ["scale out", "on PostgreSQL and Redis"]},
                           timeout=180)
            assert r.status_code == 200, r.text
            assert len(r.json()["data"]) == 2 and len(r.json()["data"][0]["embedding"]) == 384
            gw_db = sa.create_engine(gateway_url)
            idx_db = sa.create_engine(index_url)
            try:
                with gw_db.connect() as c:
                    spent = c.execute(sa.text("SELECT spent FROM gw_api_keys")).scalars().all()
                with idx_db.connect() as c:
                    delivered = c.execute(sa.text("SELECT count(*) FROM jobs WHERE status = 'delivered'")).scalar_one()
            finally:
                gw_db.dispose()
                idx_db.dispose()
            assert len(spent) == 1 and int(spent[0]) > 0
            assert delivered >= 1  # the indexer on PostgreSQL followed the job
            # The job's model ran in a Celery worker process, not in the node.
            _wait("the Celery task's log line", lambda: re.search(
                r"celery[12] \| .*Task hearth\.embed_batch\[.*\] succeeded", log.read_text(errors="replace")),
                proc, log, 30)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(90)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(10)
            text = log.read_text(errors="replace")
            pids = [int(p) for p in re.findall(r"started \S+ \(pid (\d+)\)", text)]
            left = [p for p in pids if _alive(p)]
            for p in left:
                os.killpg(p, signal.SIGKILL)
            import redis

            redis.Redis.from_url(redis_url).flushdb()
        assert pids, text[-3000:]
        assert not left, f"processes left running after the stack stopped: {left}"
        assert "stopped." in text


def test_a_run_of_free_ports_lies_below_the_ephemeral_range_and_every_port_of_it_binds() -> None:
    import socket

    from deploy.devnet import free_port_run

    for n in (1, 2, 5):
        start = free_port_run(n)
        assert start >= 20_000 and start + n <= 32_768
        socks = [socket.socket() for _ in range(n)]
        try:
            for i, s in enumerate(socks):
                s.bind(("127.0.0.1", start + i))
        finally:
            for s in socks:
                s.close()
