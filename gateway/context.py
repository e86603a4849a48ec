"""Everything a request handler needs, built once per app from :class:`GatewaySettings`."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Depends, Request
from sqlalchemy.engine import Engine
from sqlmodel import Session

from contracts.bindings import Hearth
from contracts.manifest import Manifest
from gateway import store
from gateway.blobs import BlobStore, GatewayBlobs
from gateway.feed import JobFeed
from gateway.metrics import Metrics
from gateway.ratelimit import RateLimiter
from gateway.relay import ChainAccess, RelayTracker
from gateway.retention import BlobPolicy, BlobSweeper, check_retention
from gateway.settings import GatewaySettings

log = logging.getLogger(__name__)


T = TypeVar("T")


class LoadOnce(Generic[T]):
    """A value loaded on first use, once, however many threads ask at the same time: the others
    wait for that one load instead of each running their own (five concurrent first chat
    requests each parsed the 100 MB GGUF for its tokenizer, 20 s instead of 4)."""

    def __init__(self, load: Callable[[], T]) -> None:
        self._load = load
        self._value: T | None = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._value is not None

    def get(self) -> T:
        value = self._value
        if value is None:
            with self._lock:
                if self._value is None:
                    self._value = self._load()
                value = self._value
        return value


def _text_tokenizer() -> Any:
    from common.tokenizer import TextTokenizer

    return TextTokenizer()


def _chat_tokenizer() -> Any:
    from common.chat_tokenizer import ChatTokenizer

    return ChatTokenizer.from_gguf()


@dataclass
class Context:
    settings: GatewaySettings
    manifest: Manifest
    chain: ChainAccess
    index_engine: Engine
    db_engine: Engine
    blobs: GatewayBlobs
    feed: JobFeed
    metrics: Metrics
    ip_limiter: RateLimiter
    wallet_limiter: RateLimiter
    blob_policy: BlobPolicy
    sweeper: BlobSweeper
    #: waits for relayed transactions and records their outcomes (``gw_relays``)
    relays: RelayTracker
    _tokenizer: LoadOnce[Any] = field(default_factory=lambda: LoadOnce(_text_tokenizer))
    #: the serving plane (``gateway.serving.ServingPlane``), None when this gateway has no signer
    serving: Any = None
    #: in-flight bounds of the inference routes (``gateway.admission.Admission``)
    admission: Any = None

    @property
    def chain_id(self) -> int:
        return self.manifest.chain_id

    def tokenizer(self) -> Any:
        """The model's tokenizer (billing units, token ids), loaded on first use; the same
        implementation the worker counts receipt units with, without torch."""
        return self._tokenizer.get()

    _chat_tokenizer: LoadOnce[Any] = field(default_factory=lambda: LoadOnce(_chat_tokenizer))

    def chat_tokenizer(self) -> Any:
        """SmolLM2's tokenizer and chat template (:class:`common.chat_tokenizer.ChatTokenizer`),
        loaded once on first use (about 2-4 s): the prompt ids the provider's receipt must commit to."""
        return self._chat_tokenizer.get()

    def check_wallet_rate(self, wallet: str) -> None:
        self.wallet_limiter.check(wallet, "wallet")


def build_context(settings: GatewaySettings, manifest: Manifest | None = None,
                  blobs: BlobStore | None = None) -> Context:
    from common.db import make_engine as index_engine

    manifest = manifest or Manifest.load(settings.manifest_file())
    if settings.rpc_url:
        manifest = manifest.model_copy(update={"rpc_url": settings.rpc_url})
    hearth = Hearth(manifest)
    chain = ChainAccess(hearth, settings.resolve_relayer_key(manifest.chain_id))
    metrics = Metrics()
    ie = index_engine(settings.index_database_url())
    db = store.make_engine(settings.gateway_database_url())
    store.migrate(db)
    policy = BlobPolicy(settings.blob_retention_s, settings.blob_quota_bytes, settings.blob_provider_quota_bytes,
                        settings.blob_store_max_bytes)
    check_retention(policy, _challenge_window(hearth))
    gw_blobs = GatewayBlobs(blobs or settings.open_blob_store(), settings.max_blob_bytes)
    ctx = Context(
        settings=settings, manifest=manifest, chain=chain, index_engine=ie, db_engine=db,
        blobs=gw_blobs,
        feed=JobFeed(ie, manifest.chain_id, settings.feed_poll_interval_s, metrics),
        metrics=metrics,
        ip_limiter=RateLimiter(settings.rate_limit_ip_per_min),
        wallet_limiter=RateLimiter(settings.rate_limit_wallet_per_min),
        blob_policy=policy,
        sweeper=BlobSweeper(gw_blobs, db, ie, policy, settings.blob_sweep_interval_s),
        relays=RelayTracker(chain, db),
    )
    from gateway.admission import Admission
    from gateway.serving import build_plane

    ctx.serving = build_plane(ctx)
    ctx.admission = Admission(settings.max_inflight, settings.max_client_inflight, settings.shed_retry_after_s)
    return ctx


def _challenge_window(hearth: Hearth) -> int | None:
    """The market's challenge window, or None when the chain cannot be read now."""
    try:
        return hearth.market_params().challenge_window
    except Exception as exc:  # noqa: BLE001 - the RPC may be down at start; the check is then skipped
        log.warning("cannot read the market's challenge window (%s): blob retention not checked", exc)
        return None


def get_ctx(request: Request) -> Context:
    ctx: Context = request.app.state.ctx
    return ctx


CtxDep = Annotated[Context, Depends(get_ctx)]


def index_session(ctx: CtxDep) -> Any:
    with Session(ctx.index_engine) as s:
        yield s


IndexDep = Annotated[Session, Depends(index_session)]
