"""``python -m worker.serving``: run a provider endpoint on the serving plane.

Settings from the environment (``HEARTH_SERVING_*``, see :class:`ServingSettings`); the
operator key from ``HEARTH_WORKER_KEY`` (or, on a devnet, ``HEARTH_SERVING_DEVNET_ROLE`` and the
accounts file). With ``HEARTH_SERVING_ANNOUNCE=1`` the node first writes its public URL and
region on-chain (``updateProvider``) and quotes ``HEARTH_SERVING_PRICE`` when given, so
gateways route to it.

Models (``HEARTH_SERVING_MODELS``, comma-separated registry names or 0x ids; default
``all-MiniLM-L6-v2``): with ``SmolLM2-135M-Instruct`` among them the node also serves
``/v1/chat/completions`` and ``/v1/completions``, loading SmolLM2 at start (about 10 s; a node
without it never loads it). Announcing quotes ``HEARTH_SERVING_LLM_PRICE`` (default
``HEARTH_SERVING_PRICE``) for SmolLM2 and declares it served on-chain (``setServing``).

With ``HEARTH_SERVING_VERIFY=1`` the process also runs the verifier duty on other providers'
batches and on leaf committees (:mod:`worker.serving.verifier`, its settings
``HEARTH_VERIFIER_*``) with the same key and transaction sender, so one staked account needs one
process.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

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
    #: registry names (or 0x ids) of the models to serve, comma-separated
    models: str = "all-MiniLM-L6-v2"
    #: per-token price to quote for SmolLM2 when announcing (None: ``price``)
    llm_price: int | None = None
    #: KV cache pages of 16 positions for generation (46 KB per position: 512 pages ~ 377 MB)
    llm_kv_pages: int = 512
    #: requests decoding at once in the LLM engine
    llm_max_running: int = 32
    backend: str = "torch"
    dtype: str = "fp32"
    device: str | None = None
    max_wait_s: float = 0.002
    #: payment-token wei of unsettled, challengeable value each whole staking token backs
    #: (default one hUSD per HST; see ``worker.serving.capacity``)
    capacity_per_stake_token: int = Field(default=10**6, gt=0)
    log_level: str = "INFO"
    #: also run the verifier duty (``worker.serving.verifier``) in this process, with this key
    verify: bool = False
    #: run embedding batches on Celery workers through this broker (``worker.serving.fanout``);
    #: None: in this process
    broker_url: str | None = None
    #: the Celery queue the workers of this endpoint listen on
    queue: str = "hearth-serving"
    #: tasks each batch is cut into (one per worker process is a good start)
    fanout_parts: int = Field(default=2, ge=1)
    #: a batch whose tasks are not all back by then fails (503 to the caller, nothing charged)
    fanout_timeout_s: float = Field(default=30.0, gt=0)


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
    ap.add_argument("--models", help="comma-separated model names to serve")
    ap.add_argument("--llm-price", type=int)
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
    from worker.workloads.generation import runtime_hash as llm_runtime_hash

    wanted = [m.strip() for m in st.models.split(",") if m.strip()]
    entries = []
    for name in wanted:
        found = [m for m in manifest.models if name in (m.name, m.model_id) or name.lower() == m.model_id.lower()]
        if not found:
            raise SystemExit(f"model {name!r} is not in the manifest (registered: "
                             f"{', '.join(m.name or m.model_id for m in manifest.models)})")
        entries.append(found[0])
    if not entries:
        raise SystemExit("HEARTH_SERVING_MODELS names no model")
    llm_rt = "0x" + llm_runtime_hash().hex()
    llm_entry = next((m for m in entries if m.runtime_hash.lower() == llm_rt), None)
    emb_entries = [m for m in entries if m is not llm_entry]
    model = emb_entries[0] if emb_entries else next(
        (m for m in manifest.models if m.runtime_hash.lower() != llm_rt), manifest.models[0])
    model_id = bytes.fromhex(model.model_id[2:])
    llm_id = bytes.fromhex(llm_entry.model_id[2:]) if llm_entry is not None else None
    public = st.public_url or f"http://{st.host}:{st.port}"
    if st.announce:
        sender = h.sender(key)
        sender.send(h.staking.functions.updateProvider(public, st.region, st.gpu_class))
        if st.price is not None and emb_entries:
            s.quote_price(key, model_id, st.price)
        if llm_id is not None:
            if not h.staking.functions.serves(address, llm_id).call():
                sender.send(h.staking.functions.setServing(llm_id, True))
            llm_price = st.llm_price if st.llm_price is not None else st.price
            if llm_price is not None:
                s.quote_price(key, llm_id, llm_price)
        log.info("announced %s at %s (region %s, prices %s)", address, public, st.region,
                 {m.name: s.price_of(address, bytes.fromhex(m.model_id[2:])) for m in entries})
    encoder = None
    if emb_entries:
        encoder = shared_encoder(st.backend, st.dtype, st.device)
        if encoder.runtime_hash().hex() != model.runtime_hash[2:]:
            log.warning("this runtime %s differs from the model's registered runtime %s",
                        encoder.runtime_hash().hex(), model.runtime_hash)
    generator, llm = None, None
    if llm_entry is not None and llm_id is not None:
        generator, llm = load_generator(llm_entry.name or llm_entry.model_id, llm_id, st)
    ledger = Ledger(st.ledger_path or st.data_dir / f"serving-{address.lower()}.sqlite", address)
    cfg = ProviderConfig(model_id=model_id, model_name=model.name or model.model_id,
                         runtime_hash=encoder.runtime_hash() if encoder is not None else b"\0" * 32,
                         numerics_class=gpu_class_bytes(st.gpu_class),
                         max_leaves=st.max_leaves, max_batch_age_s=st.max_batch_age_s,
                         collect_threshold=st.collect_threshold, default_aggregator=st.default_aggregator,
                         max_wait_s=st.max_wait_s, capacity_per_stake_token=st.capacity_per_stake_token)
    fanout = None
    if encoder is not None and st.broker_url:
        from contracts.jobio import EMBEDDING_DIM
        from worker.celery_app import make_app
        from worker.serving.fanout import CeleryEmbedder
        from worker.settings import WorkerSettings

        app = make_app(WorkerSettings(data_dir=st.data_dir, broker_url=st.broker_url, queue=st.queue))
        fanout = CeleryEmbedder(app, st.queue, encoder.runtime_hash(), EMBEDDING_DIM, parts=st.fanout_parts,
                                timeout_s=st.fanout_timeout_s)
        log.info("embedding batches go to Celery queue %s at %s in %d parts", st.queue, st.broker_url,
                 st.fanout_parts)
    svc = ProviderService(s, key, encoder, ledger, cfg, generator=generator, llm=llm, fanout=fanout)
    svc.start()
    duty_stop = threading.Event()
    duty = None
    if st.verify:
        from worker.serving.verifier import VerifierSettings, build

        vst = VerifierSettings(key=SecretStr(key), data_dir=st.data_dir, manifest_path=st.manifest,
                               backend=st.backend, dtype=st.dtype, device=st.device, gpu_class=st.gpu_class)
        # Its own encoder instance (the batcher's runs in another thread), the endpoint's sender,
        # and the endpoint's SmolLM2 weights when it serves them (the forward keeps no state).
        duty = build(vst, encoder=shared_encoder(st.backend, st.dtype, st.device), settlement=s,
                     llm_forward=generator.engine.forward if generator is not None else None,
                     llm_tokenizer=generator.tokenizer if generator is not None else None)
        duty.start(duty_stop, vst.poll_s)
        log.info("verifier duty on: sampling %d bps of other providers' batches", vst.sample_rate_bps)
    log.info("provider endpoint %s serving %s on %s:%d (pid %d)", address, ", ".join(m.name for m in entries),
             st.host, st.port, os.getpid())
    try:
        uvicorn.run(svc.app, host=st.host, port=st.port, log_level="warning", access_log=False)
    finally:
        duty_stop.set()
        svc.stop()
        if duty is not None:
            duty.close()


def load_generator(name: str, model_id: bytes, st: ServingSettings) -> tuple[Any, Any]:
    """SmolLM2's engine thread and what the registry calls it (loads the weights: ~10 s)."""
    import time

    from worker.model.llm import ChatTokenizer, Engine, LlamaForward, load_weights, model_hash
    from worker.serving.generate import GenerationService, LlmModel
    from worker.workloads.generation import runtime_hash

    t0 = time.perf_counter()
    if model_hash() != model_id:
        log.warning("the installed GGUF hashes to 0x%s, not the registered id 0x%s", model_hash().hex(),
                    model_id.hex())
    tokenizer = ChatTokenizer.from_gguf()
    engine = Engine(LlamaForward(load_weights()), tokenizer, num_pages=st.llm_kv_pages,
                    max_running=st.llm_max_running)
    log.info("loaded %s in %.1f s (%d KV pages)", name, time.perf_counter() - t0, st.llm_kv_pages)
    return GenerationService(engine, tokenizer), LlmModel(model_id, name, runtime_hash())


if __name__ == "__main__":
    main()
