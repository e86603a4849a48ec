"""A provider endpoint's embedding batches on Celery workers (``worker.serving.fanout``), against
this machine's Redis (database 12, a queue of its own) and a real prefork Celery worker with two
processes: rows come back bitwise equal to the in-process encoder whatever the cut, a worker
process SIGKILLed in the middle of a task has that task run again by another (nothing lost),
and a worker of another runtime, or no worker at all, fails the batch with a named reason
instead of answering wrong or hanging."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from backing_services import ensure_redis

from worker.serving.fanout import SERVE_EMBED_TASK, CeleryEmbedder, FanoutError, decode_rows, parts_of

pytestmark = [pytest.mark.redis]
ROOT = Path(__file__).resolve().parents[2]
REDIS_DB = 12
DIM = 384


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str, Path]]:
    from worker.celery_app import make_app
    from worker.settings import WorkerSettings

    tmp = tmp_path_factory.mktemp("fanout")
    redis_url = ensure_redis(REDIS_DB)
    queue = f"serve-test-{secrets.token_hex(4)}"
    log = tmp / "celery.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HEARTH_WORKER_BROKER_URL": redis_url, "HEARTH_WORKER_QUEUE": queue,
           "HEARTH_DATA_DIR": str(tmp), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "--pool=prefork",
                             "-c", "2", "-Q", queue, "-n", f"fanout-{queue}@%h", "--without-gossip",
                             "--without-mingle", "--loglevel=INFO"],
                            cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    app = make_app(WorkerSettings(data_dir=tmp, broker_url=redis_url, queue=queue))
    try:
        end = time.monotonic() + 120
        while not app.control.ping(timeout=1.0, destination=[f"fanout-{queue}@{os.uname().nodename}"]):
            if proc.poll() is not None or time.monotonic() > end:
                pytest.fail(f"the Celery worker never answered:\n{log.read_text(errors='replace')[-3000:]}")
        yield app, queue, log
    finally:
        for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
            if proc.poll() is None:
                os.killpg(proc.pid, sig)
                try:
                    proc.wait(wait)
                except subprocess.TimeoutExpired:
                    continue
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # its pool processes, if any outlived it
        import redis

        redis.Redis.from_url(redis_url).flushdb()


@pytest.fixture(scope="module")
def encoder() -> Any:
    from worker.node.compute import shared_encoder

    return shared_encoder()


def _texts(n: int, words: int) -> list[str]:
    rng = np.random.default_rng(n * 1000 + words)
    vocab = ["hearth", "celery", "worker", "killed", "batch", "row", "bitwise", "redis", "queue", "again"]
    return [" ".join(rng.choice(vocab, size=int(rng.integers(1, words + 1)))) for _ in range(n)]


def test_parts_are_consecutive_runs_that_cover_the_batch_once() -> None:
    for n in range(0, 12):
        for k in range(1, 6):
            cut = parts_of(n, k)
            assert [i for sl in cut for i in range(sl.start, sl.stop)] == list(range(n))
            assert len(cut) == min(k, n)
            assert all(sl.stop > sl.start for sl in cut)


def test_a_batch_cut_into_parts_on_celery_workers_equals_the_in_process_encoder_bitwise(
        workers: tuple[Any, str, Path], encoder: Any) -> None:
    app, queue, _ = workers
    texts = _texts(7, 20)
    fan = CeleryEmbedder(app, queue, encoder.runtime_hash(), DIM, parts=3, timeout_s=120)
    rows = fan(texts)
    assert fan.tasks == 3 and fan.batches == 1
    assert np.stack(rows).astype("<f4").tobytes() == np.ascontiguousarray(encoder.encode(texts), dtype="<f4").tobytes()


def test_a_worker_process_killed_in_the_middle_of_a_task_has_it_run_again_and_loses_nothing(
        workers: tuple[Any, str, Path], encoder: Any) -> None:
    app, queue, log = workers
    texts = _texts(48, 120)  # long enough to be caught running
    res = app.send_task(SERVE_EMBED_TASK, args=[texts, "0x" + encoder.runtime_hash().hex()], queue=queue)
    end = time.monotonic() + 60
    while not (res.state == "STARTED" and isinstance(res.info, dict) and res.info.get("pid")):
        assert time.monotonic() < end, f"the task never started: {res.state}"
        time.sleep(0.005)
    pid = int(res.info["pid"])
    assert pid != os.getpid()
    os.kill(pid, signal.SIGKILL)
    rows = decode_rows(res.get(timeout=180), DIM)
    assert np.stack(rows).astype("<f4").tobytes() == np.ascontiguousarray(encoder.encode(texts), dtype="<f4").tobytes()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    text = log.read_text(errors="replace")
    assert f"pid:{pid} exited with 'signal 9 (SIGKILL)'" in text, text[-3000:]


def test_a_worker_of_another_runtime_fails_the_batch_with_the_reason(workers: tuple[Any, str, Path]) -> None:
    app, queue, _ = workers
    fan = CeleryEmbedder(app, queue, b"\x01" * 32, DIM, parts=1, timeout_s=120)
    with pytest.raises(FanoutError, match="RuntimeMismatchError.*runtime"):
        fan(["a text"])


def test_with_no_worker_on_the_queue_a_batch_fails_within_its_timeout(workers: tuple[Any, str, Path],
                                                                        encoder: Any) -> None:
    app, _, _ = workers
    fan = CeleryEmbedder(app, f"nobody-{secrets.token_hex(4)}", encoder.runtime_hash(), DIM, parts=2, timeout_s=1.0)
    t0 = time.monotonic()
    with pytest.raises(FanoutError, match="TimeoutError"):
        fan(["a text", "another"])
    assert time.monotonic() - t0 < 5
