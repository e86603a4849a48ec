"""`hearth indexer status` with the chain down: it still shows what the database holds, says the
chain does not answer, and exits non-zero (a health check must not read it as fine)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from deploy.cli import app
from deploy.devnet import free_port

runner = CliRunner()


@pytest.fixture
def chain_down(devnet: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A manifest whose RPC URL is a loopback port nobody listens on."""
    m = devnet.manifest.model_copy(update={"rpc_url": f"http://127.0.0.1:{free_port()}"})
    m.save(tmp_path / "manifest.json")
    monkeypatch.setenv("HEARTH_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("HEARTH_MANIFEST", str(tmp_path / "manifest.json"))
    monkeypatch.setenv("HEARTH_INDEXER_DATABASE_URL", f"sqlite:///{tmp_path / 'indexer.db'}")
    return tmp_path


def test_indexer_status_with_the_chain_down_exits_1_and_says_so(chain_down: Path) -> None:
    r = runner.invoke(app, ["indexer", "status"])
    assert r.exit_code == 1, r.output
    assert "the chain does not answer" in r.output
    assert "Traceback" not in r.output


def test_indexer_status_json_with_the_chain_down_still_prints_the_database_part_and_exits_1(chain_down: Path) -> None:
    r = runner.invoke(app, ["indexer", "status", "--json"])
    assert r.exit_code == 1, r.output
    body = json.loads(r.stdout)
    assert body["head"] is None and body["chain_error"]
    assert body["database"].startswith("sqlite:///")


def test_indexer_status_with_the_chain_up_exits_0(devnet: Any, chain_down: Path) -> None:
    devnet.manifest.save(chain_down / "manifest.json")
    r = runner.invoke(app, ["indexer", "status", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["head"] == devnet.hearth.w3.eth.block_number


def test_indexer_status_names_the_chain_it_could_not_reach_on_one_line(chain_down: Path) -> None:
    r = runner.invoke(app, ["indexer", "status"])
    assert r.exit_code == 1, r.output
    [line] = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
    assert line.startswith("error: the chain does not answer, so the lag is unknown: RPC http://127.0.0.1:")
    assert line.rstrip().endswith("Connection refused"), line


def test_indexer_status_without_a_manifest_says_there_is_no_chain_to_ask(chain_down: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEARTH_MANIFEST", str(chain_down / "missing.json"))
    r = runner.invoke(app, ["indexer", "status"])
    assert r.exit_code == 1, r.output
    assert "error: no chain to ask, so the lag is unknown: no deployment manifest at" in r.output
