"""The service in a thread (realtime following, health, metrics, restarts, the writer lock) and
the CLI in a subprocess (killed mid-backfill, then resumed)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from indexer_checks import assert_index_matches_chain, checkpoint
from indexer_protocol import Protocol, ReorgChain
from test_indexer_reorgs import busy

from common.db import make_engine
from deploy.devnet import free_port
from indexer.lock import IndexerLockedError
from indexer.service import IndexerService
from indexer.settings import IndexerSettings
from indexer.sync import Indexer

MakeIndexer = Callable[..., Indexer]
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def service(idevnet: Any, db_url: str) -> Iterator[Callable[..., IndexerService]]:
    made: list[IndexerService] = []

    def make(**overrides: Any) -> IndexerService:
        settings = IndexerSettings(**{"database_url": db_url, "poll_interval": 0.05, **overrides})
        svc = IndexerService(settings, manifest=idevnet.manifest, engine=make_engine(db_url))
        made.append(svc)
        return svc

    yield make
    for svc in made:
        svc.close()


def test_the_service_follows_the_head_within_one_block(
    service: Callable[..., IndexerService], proto: Protocol, ichain: ReorgChain,
) -> None:
    svc = service(poll_interval=0.2)
    svc.start()
    svc.wait_for(ichain.head, timeout=30)
    ichain.rpc("evm_setIntervalMining", [1])
    lags = []
    end = time.monotonic() + 4
    while time.monotonic() < end:
        proto.post()  # waits for its block
        head = ichain.head
        time.sleep(0.1)
        assert svc.indexer.cp is not None
        lags.append(head - svc.indexer.cp.block_number)
    ichain.rpc("evm_setAutomine", [True])
    svc.wait_for(ichain.head, timeout=30)
    svc.stop()
    assert max(lags) <= 1, lags
    assert_index_matches_chain(svc.indexer)


def test_health_and_metrics_report_progress(
    service: Callable[..., IndexerService], proto: Protocol, ichain: ReorgChain,
) -> None:
    port = free_port()
    svc = service(metrics_port=port)
    assert not svc.health().ok
    svc.start()
    proto.post()
    svc.wait_for(ichain.head, timeout=30)  # returns once a finished step reached the head
    h = svc.health()
    assert h.ok and h.running and h.lag <= 1 and h.last_error is None
    body = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    for name in ("hearth_indexer_head_block", "hearth_indexer_indexed_block",
                 "hearth_indexer_lag_blocks", "hearth_indexer_reorgs_total",
                 "hearth_indexer_events_total", "hearth_indexer_events_per_second"):
        assert name in body
    indexed = next(line for line in body.splitlines()
                   if line.startswith("hearth_indexer_indexed_block "))
    assert float(indexed.split()[1]) >= ichain.head - 1
    svc.stop()
    assert not svc.health().ok


def test_stop_restart_and_a_reorg_while_following(
    service: Callable[..., IndexerService], proto: Protocol, ichain: ReorgChain,
) -> None:
    svc = service()
    svc.start()
    busy(proto, ichain, 6)
    svc.wait_for(ichain.head, timeout=30)
    svc.stop()
    busy(proto, ichain, 3)
    svc2 = service()
    svc2.start()
    svc2.wait_for(ichain.head, timeout=30)
    ichain.reorg(5)
    busy(proto, ichain, 2)
    deadline = time.monotonic() + 30
    while svc2.indexer.reorgs == 0 or svc2.indexer.cp is None \
            or svc2.indexer.cp.block_hash != "0x" + bytes(ichain.w3.eth.get_block("latest")["hash"]).hex():
        assert time.monotonic() < deadline, "the service did not follow the reorg"
        time.sleep(0.05)
    svc2.stop()
    assert_index_matches_chain(svc2.indexer)


def test_a_second_writer_on_the_same_database_is_refused(
    service: Callable[..., IndexerService], ichain: ReorgChain,
) -> None:
    first = service()
    first.start()
    with pytest.raises(IndexerLockedError):
        service().start()
    first.stop()
    second = service()
    second.start()  # the lock went with the first one
    second.stop()


def _cli_env(idevnet: Any, db_url: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    manifest = idevnet.manifest.save(tmp_path / "manifest.json")
    return {**os.environ, "HEARTH_INDEXER_DATABASE_URL": db_url, "HEARTH_MANIFEST": str(manifest),
            "HEARTH_DATA_DIR": str(tmp_path), "PYTHONPATH": str(REPO), **extra}


def test_the_cli_killed_mid_backfill_resumes_without_gaps_or_duplicates(
    idevnet: Any, db_url: str, proto: Protocol, ichain: ReorgChain, tmp_path: Path,
    make_indexer: MakeIndexer,
) -> None:
    busy(proto, ichain, 30)
    ichain.mine(150)
    env = _cli_env(idevnet, db_url, tmp_path, HEARTH_INDEXER_MAX_RANGE="1",
                   HEARTH_INDEXER_INITIAL_RANGE="1")
    cmd = [sys.executable, "-m", "indexer", "run", "--poll-interval", "0.05"]
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    engine = make_engine(db_url)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            try:
                if checkpoint(engine)["block_number"] > 20:
                    break
            except Exception:  # noqa: BLE001 - tables not there yet
                pass
            assert time.monotonic() < deadline
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert checkpoint(engine)["block_number"] < ichain.head  # really mid-backfill
    finally:
        if proc.poll() is None:
            proc.kill()
        engine.dispose()
    out = subprocess.run([sys.executable, "-m", "indexer", "status", "--json"], env=env, cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    status = json.loads(out.stdout)
    assert status["indexed_block"] < status["head"] and status["lag"] > 0
    ix = make_indexer()
    ix.sync()
    assert_index_matches_chain(ix)


def test_the_cli_reports_a_missing_manifest_in_one_line(tmp_path: Path, db_url: str) -> None:
    env = {**os.environ, "HEARTH_INDEXER_DATABASE_URL": db_url, "HEARTH_MANIFEST": str(tmp_path / "none.json"),
           "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-m", "indexer", "run"], env=env, cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "no deployment manifest" in out.stderr and "Traceback" not in out.stderr
