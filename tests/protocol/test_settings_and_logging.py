"""One settings story and one log format: per-service prefixes over one base class, the two
databases named by their owners, no environment read outside a Settings class, and log lines
that carry job id, block and transaction hash from ``extra``."""

from __future__ import annotations

import ast
import io
import logging
from pathlib import Path

import pytest

from common.log import NOISY, setup_logging
from deploy.settings import CliSettings
from gateway.settings import GatewaySettings
from indexer.settings import IndexerSettings
from worker.settings import WorkerSettings

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("contracts", "common", "indexer", "worker", "gateway", "deploy")
#: the only places that touch ``os.environ``, and why
ALLOWED = {
    "deploy/up.py": "passes the supervisor's environment through to the services it starts",
    "deploy/cli_serving.py": "`provider join --run` hands its environment (plus the key) to the endpoint it execs",
    "worker/model/_mkl.py": "writes MKL_CBWR before torch loads (a library switch, not a setting)",
}


def test_each_service_reads_its_own_prefix_and_the_shared_names(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    monkeypatch.setenv("HEARTH_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("HEARTH_WORKER_POLL_INTERVAL_S", "7")
    monkeypatch.setenv("HEARTH_INDEXER_CONFIRMATIONS", "3")
    monkeypatch.setenv("HEARTH_GATEWAY_PORT", "9001")
    monkeypatch.setenv("HEARTH_POLL_INTERVAL_S", "99")  # the worker's old unprefixed name: ignored
    w, i, g = WorkerSettings(), IndexerSettings(), GatewaySettings()
    assert w.poll_interval_s == 7 and i.confirmations == 3 and g.port == 9001
    assert w.data_dir == i.data_dir == g.data_dir == CliSettings().data_dir == tmp_path
    assert i.manifest_file() == g.manifest_file() == w.manifest_file() == tmp_path / "manifest.json"


def test_the_two_databases_are_named_by_their_owners_and_a_bare_database_url_means_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    monkeypatch.setenv("HEARTH_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("DATABASE_URL", "postgresql://elsewhere/db")
    assert IndexerSettings().database_url == f"sqlite:///{tmp_path / 'indexer.db'}"
    assert GatewaySettings().index_database_url() == f"sqlite:///{tmp_path / 'indexer.db'}"
    assert GatewaySettings().gateway_database_url() == f"sqlite:///{tmp_path / 'gateway.db'}"
    assert not hasattr(WorkerSettings(), "indexer_database_url")  # the worker reads no other service's database
    monkeypatch.setenv("HEARTH_INDEXER_DATABASE_URL", "postgresql://idx/db")
    monkeypatch.setenv("HEARTH_GATEWAY_DATABASE_URL", "postgresql://gw/db")
    assert IndexerSettings().database_url == GatewaySettings().index_database_url() == "postgresql://idx/db"
    assert GatewaySettings().gateway_database_url() == "postgresql://gw/db"


def test_a_bad_log_level_is_refused_by_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEARTH_LOG_LEVEL", "LOUD")
    with pytest.raises(ValueError, match="log level 'LOUD'"):
        WorkerSettings()


def test_no_module_reads_the_environment_outside_a_settings_class() -> None:
    readers = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if "node_modules" in rel or rel in ALLOWED:
                continue
            for node in ast.walk(ast.parse(path.read_text(), rel)):
                if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "os"
                        and node.attr in ("environ", "getenv", "putenv")):
                    readers.append(f"{rel}:{node.lineno}")
    assert readers == []


def test_log_lines_carry_job_block_and_tx_from_extra_once() -> None:
    out = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    quiet = {name: logging.getLogger(name).level for name in NOISY}
    try:
        setup_logging("INFO", stream=out)
        logging.getLogger("worker.node.node").info("claimed", extra={"job_id": 7, "block": 112, "tx": "0xab"})
        logging.getLogger("web3.providers").info("chatty library line")
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
        for name, lvl in quiet.items():
            logging.getLogger(name).setLevel(lvl)
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    assert lines[0].endswith("INFO worker.node.node: claimed job_id=7 block=112 tx=0xab")
    assert lines[0].count("job_id=") == 1
