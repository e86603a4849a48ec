"""``python -m worker``: key resolution, clear errors; and the cheater demo (``hearth demo``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from common import accounts as accts
from worker.cli import app, resolve_key
from worker.node.errors import NodeConfigError
from worker.settings import WorkerSettings

KEY = "0x" + "11" * 32


def test_key_comes_from_env_file_or_devnet_accounts_never_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = WorkerSettings(data_dir=tmp_path)
    monkeypatch.delenv("HEARTH_WORKER_KEY", raising=False)
    with pytest.raises(NodeConfigError, match="no operator key"):
        resolve_key(s, None, None)
    monkeypatch.setenv("HEARTH_WORKER_KEY", KEY + "\n")
    assert resolve_key(WorkerSettings(data_dir=tmp_path), None, None) == KEY
    f = tmp_path / "key"
    f.write_text(KEY)
    os.chmod(f, 0o600)
    assert resolve_key(s, f, None) == KEY
    acc = accts.derive(accts.new_mnemonic())
    accts.save(acc, tmp_path / "devnet-accounts.json")
    assert resolve_key(s, None, "verifier2") == acc["verifier2"].key
    with pytest.raises(NodeConfigError, match="no devnet account"):
        resolve_key(s, None, "nobody")
    # HEARTH_WORKER_KEY also reaches the settings as a secret.
    monkeypatch.setenv("HEARTH_WORKER_KEY", KEY)
    settings = WorkerSettings()
    assert settings.worker_key is not None and KEY not in repr(settings)


def test_run_without_a_devnet_fails_with_a_clear_message(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["run", "--once", "--data-dir", str(tmp_path)], env={"HEARTH_WORKER_KEY": KEY})
    assert result.exit_code == 1
    assert "no deployment manifest" in result.output


def test_demo_shows_the_cheater_slashed_and_the_honest_node_paid(tmp_path: Path) -> None:
    from deploy.demo import run_cheater_demo

    out = run_cheater_demo(tmp_path)
    d: dict[str, Any] = {
        r: {k: out.balances_after[r][k] - out.balances_before[r][k] for k in v} for r, v in out.balances_before.items()
    }
    from contracts.types import MarketParams

    p = MarketParams()  # the devnet's parameters
    slash = p.collateral_for(10**6)  # the demo's job B escrows 1 hUSD
    assert d["cheater"]["staked"] == -slash
    assert d["verifier"]["hst"] == min(slash * p.challenger_reward_bps // 10_000, p.max_challenger_reward)
    assert d["provider"]["usd"] > 0 and d["provider"]["staked"] == 0
    assert out.cheater_jailed_until > 0
