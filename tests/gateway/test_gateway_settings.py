"""Gateway settings: from the environment, the relayer key a secret that never prints, and on
a devnet chain only, taken from the devnet accounts file when HEARTH_GATEWAY_RELAYER_KEY is unset."""

from __future__ import annotations

from pathlib import Path

import pytest

from common import accounts as accts
from common.blobs import LocalBlobStore
from gateway.settings import GatewaySettings


def test_settings_come_from_the_environment_and_the_key_never_prints(monkeypatch: pytest.MonkeyPatch,
                                                                      tmp_path: Path) -> None:
    key = "0x" + "11" * 32
    monkeypatch.setenv("HEARTH_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("HEARTH_GATEWAY_RELAYER_KEY", key)
    monkeypatch.setenv("HEARTH_GATEWAY_PORT", "9123")
    monkeypatch.setenv("HEARTH_INDEXER_DATABASE_URL", "sqlite:////tmp/x.db")
    s = GatewaySettings()
    assert s.port == 9123 and s.data_dir == tmp_path and s.index_database_url() == "sqlite:////tmp/x.db"
    store = s.open_blob_store()
    assert isinstance(store, LocalBlobStore) and store.root == tmp_path / "blobs"
    assert s.gateway_database_url().endswith("gateway.db")
    assert key not in repr(s) and key not in str(s.model_dump())
    assert s.resolve_relayer_key(1) is not None and s.resolve_relayer_key(1).get_secret_value() == key  # type: ignore[union-attr]


def test_the_devnet_accounts_file_supplies_the_relayer_key_on_devnet_chains_only(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    monkeypatch.delenv("HEARTH_GATEWAY_RELAYER_KEY", raising=False)
    acc = accts.derive(accts.new_mnemonic())
    accts.save(acc, tmp_path / "devnet-accounts.json")
    s = GatewaySettings(data_dir=tmp_path)
    got = s.resolve_relayer_key(31337)
    assert got is not None and got.get_secret_value() == acc["relayer"].key
    assert s.resolve_relayer_key(1) is None
    assert GatewaySettings(data_dir=tmp_path, devnet_role="").resolve_relayer_key(31337) is None
