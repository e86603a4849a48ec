"""Celery fan-out on the embedded SQLite transport and on Redis: a real worker process runs
``hearth.embed_batch`` tasks, redelivered tasks do no work twice, and a node delivers jobs
through the queue."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from common.blobs import LocalBlobStore
from contracts import jobio
from contracts.types import Status
from worker.celery_app import make_app
from worker.model import output_hash
from worker.model.encoder import runtime_hash
from worker.node.executor import EMBED_TASK, CeleryExecutor
from worker.settings import WorkerSettings

ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = "redis://127.0.0.1:6379/14"
RUNTIME = "0x" + runtime_hash("torch", "fp32").hex()


def _redis_up() -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_timeout=1).ping())
    except redis.RedisError:
        return False


def ensure_redis() -> None:
    """Redis on 127.0.0.1:6379, started if it is not running; fails loudly if impossible."""
    if _redis_up():
        return
    server = shutil.which("redis-server")
    if server is None:
        pytest.fail("Redis is not running on 127.0.0.1:6379 and redis-server is not installed")
    for d in ("/var/lib/redis", "/var/log/redis"):
        Path(d).mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            server,
            "--daemonize",
            "yes",
            "--bind",
            "127.0.0.1",
            "-::1",
            "--port",
            "6379",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            "/var/lib/redis",
            "--logfile",
            "/var/log/redis/ci.log",
        ],
        check=False,
        timeout=30,
    )
    for _ in range(50):
        if _redis_up():
            return
        time.sleep(0.1)
    pytest.fail("could not start redis-server on 127.0.0.1:6379 (see /var/log/redis/ci.log)")


@dataclass
class CeleryEnv:
    transport: str
    settings: WorkerSettings
    app: Any
    store: LocalBlobStore
    log: Path


@pytest.fixture(scope="module", params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def celery_env(
    request: pytest.FixtureRequest, devnet: Any, tmp_path_factory: pytest.TempPathFactory, encoder: Any
) -> Iterator[CeleryEnv]:
    """A real ``celery worker`` process (solo pool) on its own queue, sharing the data dir."""
    transport = request.param
    data = tmp_path_factory.mktemp(f"celery-{transport}")
    devnet.manifest.save(data / "manifest.json")
    queue = f"hearth-test-{uuid.uuid4().hex[:8]}"
    env = {"HEARTH_DATA_DIR": str(data), "HEARTH_WORKER_QUEUE": queue}
    if transport == "redis":
        ensure_redis()
        env |= {"HEARTH_WORKER_BROKER_URL": REDIS_URL, "HEARTH_WORKER_RESULT_BACKEND": REDIS_URL}
    else:
        env |= {"HEARTH_WORKER_BROKER_URL": "sqlite"}
    settings = WorkerSettings(
        data_dir=data, queue=queue, broker_url=env["HEARTH_WORKER_BROKER_URL"],
        result_backend=env.get("HEARTH_WORKER_RESULT_BACKEND"),
    )
    log = data / "worker.log"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "worker.celery_app",
            "worker",
            "--pool=solo",
            "-c",
            "1",
            "-Q",
            queue,
            "-n",
            f"{queue}@%h",
            "--loglevel=INFO",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while b" ready." not in log.read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"celery worker did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield CeleryEnv(transport, settings, make_app(settings), LocalBlobStore(data / "blobs"), log)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _send(env: CeleryEnv, items: list[list[Any]], owner: str | None = None) -> list[dict[str, Any]]:
    res = env.app.send_task(EMBED_TASK, args=[items, RUNTIME, owner], queue=env.settings.queue)
    out: list[dict[str, Any]] = res.get(timeout=90, interval=0.1)
    return out


def test_embed_batch_task_runs_and_is_idempotent_when_delivered_twice(celery_env: CeleryEnv, encoder: Any) -> None:
    texts = [[f"{celery_env.transport} first job", "two texts"], ["a second job, longer than the first one"]]
    blobs = [celery_env.store.put(jobio.encode_input(t)) for t in texts]
    items = [[101, blobs[0]], [102, blobs[1]]]

    first = _send(celery_env, items)
    assert [d["computed"] for d in first] == [True, True]
    for d, t in zip(first, texts, strict=True):
        expected = output_hash(encoder.encode(t))
        assert d["output_hash"] == "0x" + expected.hex()
        assert celery_env.store.get(d["output_blob"]) == jobio.encode_output(encoder.encode(t))
        assert d["units"] == sum(encoder.count_tokens(t))

    # The same message again (a redelivery): same answer, no model run.
    second = _send(celery_env, items)
    assert [d["computed"] for d in second] == [False, False]
    assert [d["output_blob"] for d in second] == [d["output_blob"] for d in first]
    assert [d["units"] for d in second] == [d["units"] for d in first]


def test_embed_batch_reports_a_tampered_input_as_a_permanent_failure(celery_env: CeleryEnv) -> None:
    blob = celery_env.store.put(jobio.encode_input(["will be tampered"]))
    celery_env.store.path(blob).write_bytes(b'{"texts":["something else"]}')
    (out,) = _send(celery_env, [[7, blob]])
    assert out["permanent"] is True and "tampered" in out["error"]


def test_node_delivers_through_celery_and_a_delivered_job_is_not_recomputed(
    celery_env: CeleryEnv, fresh: Any, encoder: Any, tmp_path: Path
) -> None:
    from deploy.demo import post_embedding_job
    from worker.node.config import NodeConfig
    from worker.node.node import Node

    h, acc = fresh.hearth, fresh.accounts
    texts = [f"through {celery_env.transport}", "fan-out over GPU processes"]
    job_id, blob = post_embedding_job(h, celery_env.store, acc["client"].key, texts, 10**6)
    ex = CeleryExecutor(celery_env.app, queue=celery_env.settings.queue, timeout_s=90)
    node = Node(h, acc["provider"].key, celery_env.store, ex, NodeConfig(name="provider"), state_dir=tmp_path)
    try:
        rep = node.tick()
    finally:
        node.close()
    assert rep.delivered == [job_id]
    assert h.status(job_id) == Status.DELIVERED
    assert h.job(job_id).output_hash == output_hash(encoder.encode(texts))

    # Asked again for the provider's own job (a duplicate batch): answered from the chain.
    (again,) = _send(celery_env, [[job_id, blob]], owner=acc["provider"].address)
    assert again["computed"] is False
    assert again["output_hash"] == "0x" + h.job(job_id).output_hash.hex()
