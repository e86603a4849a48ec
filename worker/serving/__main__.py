"""``python -m worker.serving``: run a provider endpoint on the serving plane.

Settings from the environment (``HEARTH_SERVING_*``, see :class:`ServingSettings`); the
operator key from ``HEARTH_WORKER_KEY`` (or, on a devnet, ``HEARTH_SERVING_DEVNET_ROLE`` and the
accounts file). With ``HEARTH_SERVING_ANNOUNCE=1`` the node first writes its public URL and
region on-chain (``updateProvider``) and quotes ``HEARTH_SERVING_PRICE`` when given, so
gateways route to it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

log = logging.getLogger("worker.serving")


class ServingSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HEARTH_SERVING_", extra="ignore", populate_by_name=True)

    data_dir: Path = Field(default=Path(".hearth"), validation_alias=AliasChoices("HEARTH_DATA_DIR"))
    manifest: Path | None = Field(default=None, validation_alias=AliasChoices("HEARTH_MANIFEST"))
    #: overrides the manifest's RPC URL
    rpc_url: str | None = None
    worker_key: SecretStr | None = Field(default=None, validation_alias=AliasChoices("HEARTH_WORKER_KEY"))
    devnet_role: str | None = None
    host: str = "127.0.0.1"
    port: int = 8100
    #: the URL gateways reach this endpoint at (default ``http://host:port``)
    public_url: str | None = None
    region: str = "local"
    gpu_class: str = "cpu"
    announce: bool = False
    #: per-unit price to quote on-chain when announcing (None: keep the current quote)
    price: int | None = None
    ledger_path: Path | None = None
    max_leaves: int = 256
    max_batch_age_s: float = 2.0
    collect_threshold: int = 10**6
    default_aggregator: str | None = None
    backend: str = "torch"
    dtype: str = "fp32"
    device: str | None = None
    max_wait_s: float = 0.002
    log_level: str = "INFO"


def settings_from(argv: list[str]) -> ServingSettings:
    """Settings from the environment, overridden by ``--devnet-role R --port N --region X --price P
    --announce --public-url URL --data-dir D`` (what ``make up`` passes to each endpoint)."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m worker.serving", description=__doc__)
    ap.add_argument("--devnet-role")
    ap.add_argument("--port", type=int)
    ap.add_argument("--region")
    ap.add_argument("--price", type=int)
    ap.add_argument("--public-url")
    ap.add_argument("--data-dir", type=Path)
    ap.add_argument("--announce", action="store_true", default=None)
    args = ap.parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if v is not None}
    return ServingSettings(**overrides)


def main(argv: list[str] | None = None) -> None:
    import sys

    import uvicorn
    from eth_account import Account

    from contracts.bindings import Hearth
    from contracts.manifest import Manifest
    from contracts.settlement import Settlement
    from contracts.types import gpu_class_bytes
    from worker.node.compute import shared_encoder
    from worker.serving.ledger import Ledger
    from worker.serving.provider import ProviderConfig, ProviderService

    # Hand the GIL over within 1 ms (default 5 ms): the event loop, the batcher and the ledger's
    # writer pass every request between them, and each hand-over waited up to a switch interval.
    sys.setswitchinterval(0.001)
    st = settings_from(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=st.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    for noisy in ("web3", "urllib3", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    key = st.worker_key.get_secret_value() if st.worker_key else ""
    if not key and st.devnet_role:
        from common import accounts

        key = accounts.load(st.data_dir / accounts.ACCOUNTS_FILE)[st.devnet_role].key
    if not key:
        raise SystemExit("no operator key: set HEARTH_WORKER_KEY (or HEARTH_SERVING_DEVNET_ROLE on a devnet)")
    manifest = Manifest.load(st.manifest or st.data_dir / "manifest.json")
    if st.rpc_url:
        manifest = manifest.model_copy(update={"rpc_url": st.rpc_url})
    h = Hearth(manifest)
    s = Settlement(h)
    address = Account.from_key(key).address
    model = manifest.models[0]
    model_id = bytes.fromhex(model.model_id[2:])
    public = st.public_url or f"http://{st.host}:{st.port}"
    if st.announce:
        sender = h.sender(key)
        sender.send(h.staking.functions.updateProvider(public, st.region, st.gpu_class))
        if st.price is not None:
            s.quote_price(key, model_id, st.price)
        log.info("announced %s at %s (region %s, price %s)", address, public, st.region, s.price_of(address, model_id))
    encoder = shared_encoder(st.backend, st.dtype, st.device)
    if encoder.runtime_hash().hex() != model.runtime_hash[2:]:
        log.warning("this runtime %s differs from the model's registered runtime %s", encoder.runtime_hash().hex(),
                    model.runtime_hash)
    ledger = Ledger(st.ledger_path or st.data_dir / f"serving-{address.lower()}.sqlite", address)
    cfg = ProviderConfig(model_id=model_id, model_name=model.name or model.model_id,
                         runtime_hash=encoder.runtime_hash(), numerics_class=gpu_class_bytes(st.gpu_class),
                         max_leaves=st.max_leaves, max_batch_age_s=st.max_batch_age_s,
                         collect_threshold=st.collect_threshold, default_aggregator=st.default_aggregator,
                         max_wait_s=st.max_wait_s)
    svc = ProviderService(s, key, encoder, ledger, cfg)
    svc.start()
    log.info("provider endpoint %s serving %s on %s:%d (pid %d)", address, cfg.model_name, st.host, st.port,
             os.getpid())
    try:
        uvicorn.run(svc.app, host=st.host, port=st.port, log_level="warning", access_log=False)
    finally:
        svc.stop()


if __name__ == "__main__":
    main()
