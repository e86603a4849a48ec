"""Devnet accounts. Each devnet gets a fresh random mnemonic; its keys are written to
``$HEARTH_DATA_DIR/devnet-accounts.json`` (:data:`ACCOUNTS_FILE`, mode 0600), never to a file
in the repository."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from eth_account import Account

from contracts.errors import ManifestError

ROLES = (
    "deployer", "client", "provider", "verifier", "verifier2", "cheater", "treasury", "relayer", "client2", "spare",
    # the serving-plane providers `make up` runs (deploy.devnet.SERVING_PROVIDERS); appended so
    # that every older role keeps its address
    "provider-eu", "provider-us",
)
#: the accounts file's name in the data directory
ACCOUNTS_FILE = "devnet-accounts.json"
Account.enable_unaudited_hdwallet_features()


@dataclass(frozen=True)
class DevAccount:
    role: str
    address: str
    key: str


def new_mnemonic() -> str:
    _, mnemonic = Account.create_with_mnemonic()
    return str(mnemonic)


def derive(mnemonic: str) -> dict[str, DevAccount]:
    out = {}
    for i, role in enumerate(ROLES):
        acct = Account.from_mnemonic(mnemonic, account_path=f"m/44'/60'/0'/0/{i}")
        out[role] = DevAccount(role, acct.address, "0x" + bytes(acct.key).hex())
    return out


def save(accounts: dict[str, DevAccount], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({r: {"address": a.address, "key": a.key} for r, a in accounts.items()}, f, indent=2)
    return path


def load(path: Path) -> dict[str, DevAccount]:
    if not path.exists():
        raise ManifestError(f"no devnet accounts at {path}: start the devnet (`make up`) first")
    raw = json.loads(path.read_text())
    return {r: DevAccount(r, v["address"], v["key"]) for r, v in raw.items()}
