"""The deployment manifest: chain id, RPC URL, addresses, deployment block and ABIs.

``deploy`` writes it; every service reads it. Where it is comes from each service's settings
(``HEARTH_MANIFEST``, default ``$HEARTH_DATA_DIR/manifest.json``; see :mod:`common.settings`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from contracts.errors import ManifestError

CONTRACT_NAMES = ("HearthUSD", "HearthStake", "ModelRegistry", "DisputeGame", "Staking", "JobMarket")
#: Batched settlement, deployed after the others (see ``deploy.devnet.deploy_settlement``).
SETTLEMENT_CONTRACT_NAMES = ("PaymentEscrow", "BatchSettlement")
#: Version of the manifest's layout. 2: the DisputeGame library, userdoc/devdoc per contract,
#: numerics classes, the batch settlement contracts.
SCHEMA_VERSION = 2


class DeployedContract(BaseModel):
    address: str
    abi: list[dict[str, Any]]
    #: NatSpec for users and developers, as solc emits it (``userdoc`` / ``devdoc``).
    userdoc: dict[str, Any] = {}
    devdoc: dict[str, Any] = {}


class ModelEntry(BaseModel):
    model_id: str
    name: str
    runtime_hash: str
    price_per_unit: int


class Manifest(BaseModel):
    schema_version: int = SCHEMA_VERSION
    chain_id: int
    rpc_url: str
    deployment_block: int
    contracts: dict[str, DeployedContract]
    models: list[ModelEntry] = []
    #: Numerics classes governance listed (names, e.g. "cpu").
    numerics_classes: list[str] = []

    def address(self, name: str) -> str:
        if name not in self.contracts:
            raise ManifestError(f"manifest has no contract {name!r}")
        return self.contracts[name].address

    def save(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(self.model_dump_json(indent=2))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: Path) -> Manifest:
        if not path.exists():
            raise ManifestError(f"no deployment manifest at {path}: start the devnet (`make up`) first")
        try:
            raw = json.loads(path.read_text())
            m = cls.model_validate(raw)
        except (json.JSONDecodeError, ValidationError) as exc:
            raise ManifestError(f"malformed manifest {path}: {exc}") from None
        version = raw.get("schema_version", 1)
        if version != SCHEMA_VERSION:
            raise ManifestError(
                f"manifest {path} has schema version {version}, this code reads {SCHEMA_VERSION}: "
                "redeploy the devnet (`make up`)")
        return m
