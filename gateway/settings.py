"""The gateway's settings, from the environment (pydantic-settings).

Gateway variables carry the ``HEARTH_GATEWAY_`` prefix (``HEARTH_GATEWAY_PORT``,
``HEARTH_GATEWAY_RELAYER_KEY``, ``HEARTH_GATEWAY_DATABASE_URL`` for its own tables, ...). The
indexer's database, which the gateway reads, is the indexer's variable
``HEARTH_INDEXER_DATABASE_URL``; ``HEARTH_DATA_DIR``, ``HEARTH_MANIFEST`` and ``HEARTH_LOG_LEVEL``
are shared by every service (:class:`common.settings.HearthSettings`).

The relayer key pays gas only (clients pay for jobs from their own wallets). It is a secret:
from the environment, or on a devnet from the devnet accounts file that ``deploy`` writes under
the data directory (mode 0600); never from a file in the repository.
"""

from __future__ import annotations

import logging
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from common.blobs import BlobStore
from common.settings import BlobStoreSettings, HearthSettings

log = logging.getLogger(__name__)

#: Chain ids on which the relayer key may come from the devnet accounts file.
DEVNET_CHAIN_IDS = frozenset({31337, 1337})


class GatewaySettings(HearthSettings, BlobStoreSettings):
    model_config = SettingsConfigDict(
        env_prefix="HEARTH_GATEWAY_", populate_by_name=True, extra="ignore",
    )

    #: the indexer's database (read only), named by the indexer's variable; default: the
    #: indexer's default SQLite file
    indexer_database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("HEARTH_INDEXER_DATABASE_URL", "indexer_database_url"))
    #: pays gas only
    relayer_key: SecretStr | None = None
    #: overrides the manifest's RPC URL (one manifest for every host, each with its own RPC endpoint)
    rpc_url: str | None = None

    # ------------------------------------------------------------ the gateway's own
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    #: the gateway's own tables (API keys, spend, sessions); default: ``gateway.db`` in the data dir
    database_url: str | None = None
    #: on a devnet chain, take the relayer key of this role from the devnet accounts file when
    #: ``HEARTH_GATEWAY_RELAYER_KEY`` is not set ("" disables)
    devnet_role: str = "relayer"
    max_blob_bytes: int = Field(default=1 << 20, ge=1)
    #: blobs are kept this long after their last upload (or after the last open job naming them
    #: was seen by the sweeper); must exceed the market's challenge window, checked on start
    blob_retention_s: int = Field(default=7 * 24 * 3600, ge=60)
    #: bytes of unexpired uploads one identity (wallet, through a session or an API key) may hold
    blob_quota_bytes: int = Field(default=64 << 20, ge=1)
    #: the same for a registered provider (its delivered outputs)
    blob_provider_quota_bytes: int = Field(default=4 << 30, ge=1)
    #: bytes of unexpired blobs the gateway holds for everyone together beyond which clients'
    #: uploads are refused (507); providers' uploads and paid jobs' inputs are not
    blob_store_max_bytes: int = Field(default=64 << 30, ge=1)
    #: how often the sweeper deletes expired blobs
    blob_sweep_interval_s: float = Field(default=300, gt=0)
    #: texts per job / embeddings request
    max_texts: int = Field(default=256, ge=1)
    #: whole request bodies above this are refused before they are read (413)
    max_request_bytes: int = Field(default=4 << 20, ge=1024)
    #: requests per minute per client IP, and per wallet (signed jobs, API keys, sessions)
    rate_limit_ip_per_min: float = Field(default=1200, gt=0)
    rate_limit_wallet_per_min: float = Field(default=240, gt=0)
    #: jobs must leave providers at least this long before their deadline
    min_deadline_margin_s: int = Field(default=30, ge=0)
    #: deadline the gateway proposes (typed data, embeddings jobs)
    default_deadline_s: int = Field(default=900, ge=60)
    #: how long POST /v1/embeddings waits for a provider's delivery
    embeddings_timeout_s: float = Field(default=120, gt=0)
    #: how often live feeds poll the indexer's tables
    feed_poll_interval_s: float = Field(default=0.5, gt=0)
    #: SIWE: the domain messages must name (default: the request's Host header)
    siwe_domain: str | None = None
    session_ttl_s: int = Field(default=24 * 3600, ge=60)
    siwe_nonce_ttl_s: int = Field(default=600, ge=30)
    #: longest API key grant the gateway accepts
    max_grant_ttl_s: int = Field(default=365 * 24 * 3600, ge=60)
    #: trust X-Forwarded-For for the client IP (only behind a proxy you run)
    trust_proxy: bool = False

    # ------------------------------------------------------------ serving plane (gateway.serving)
    #: auto: serving plane when a provider endpoint is routable, else per job; serving; per_job
    serving_mode: Literal["auto", "serving", "per_job"] = "auto"
    #: the key that signs payment receipts and vouchers for wallets that authorized it on-chain
    #: (``PaymentEscrow.authorizeSigner``); on a devnet chain the relayer key when unset
    signer_key: SecretStr | None = None
    #: this gateway's URL as providers reach it (where they ask for vouchers)
    public_url: str | None = None
    provider_timeout_s: float = Field(default=10.0, gt=0)
    serving_attempts: int = Field(default=3, ge=1)
    latency_budget_ms: float = Field(default=50.0, ge=0)
    #: requests this gateway has in flight at one provider; a provider at it is skipped, and when
    #: every one is, the request is shed with 503 ``providers_saturated`` (gateway.admission)
    max_provider_inflight: int = Field(default=128, ge=1)
    #: requests in flight on the inference routes, for the whole gateway (503 ``overloaded`` beyond)
    max_inflight: int = Field(default=1024, ge=1)
    #: the same per client (API key, else IP address) (429 ``too_many_requests_in_flight`` beyond)
    max_client_inflight: int = Field(default=256, ge=1)
    #: the ``Retry-After`` of a shed request, in seconds
    shed_retry_after_s: float = Field(default=1.0, ge=0)
    #: a serving-plane reservation older than this is from a gateway that died mid-request and is
    #: given back (gateway.reservations); default: provider timeout x attempts + 30 s
    reservation_ttl_s: float | None = Field(default=None, gt=0)
    serving_refresh_s: float = Field(default=1.0, gt=0)
    #: lane top-ups (:mod:`gateway.lanes`), for payers that let this gateway's signer allocate:
    #: a lane to a routed provider whose free balance falls below the threshold is topped up to
    #: the target from the payer's deposit, all of a payer's lanes in one ``allocate``; token wei
    #: (a target of 0 turns top-ups off)
    lane_topup_threshold: int = Field(default=1_000_000, ge=0)
    lane_topup_target: int = Field(default=5_000_000, ge=0)
    lane_topup_interval_s: float = Field(default=2.0, gt=0)

    @model_validator(mode="after")
    def _topup_target_covers_threshold(self) -> GatewaySettings:
        if self.lane_topup_target and self.lane_topup_target < self.lane_topup_threshold:
            raise ValueError(f"lane_topup_target ({self.lane_topup_target}) must be at least lane_topup_threshold "
                             f"({self.lane_topup_threshold})")
        return self

    # ------------------------------------------------------------ derived
    def reservation_ttl(self) -> float:
        """``reservation_ttl_s``, or its default: provider timeout x attempts + 30 s."""
        return self.reservation_ttl_s or self.provider_timeout_s * self.serving_attempts + 30

    def gateway_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'gateway.db'}"

    def index_database_url(self) -> str:
        return self.indexer_database_url or f"sqlite:///{self.data_dir / 'indexer.db'}"

    def open_blob_store(self) -> BlobStore:
        """The configured store (``HEARTH_GATEWAY_BLOB_STORE``: local files by default, or s3)."""
        return self.open_blobs(self.data_dir)

    def resolve_relayer_key(self, chain_id: int) -> SecretStr | None:
        """``HEARTH_GATEWAY_RELAYER_KEY``, else (devnet chains only) the devnet accounts file's key."""
        if self.relayer_key is not None and self.relayer_key.get_secret_value():
            return self.relayer_key
        if not self.devnet_role or chain_id not in DEVNET_CHAIN_IDS:
            return None
        from common import accounts
        from contracts.errors import ContractsError

        try:
            acc = accounts.load(self.data_dir / "devnet-accounts.json")
        except (ContractsError, OSError, ValueError, KeyError):
            return None
        if self.devnet_role not in acc:
            return None
        log.warning("relayer key: devnet role %r from %s", self.devnet_role, self.data_dir / "devnet-accounts.json")
        return SecretStr(acc[self.devnet_role].key)

    def resolve_signer_key(self, chain_id: int) -> SecretStr | None:
        """``HEARTH_GATEWAY_SIGNER_KEY``, else (devnet chains only) the relayer key."""
        if self.signer_key is not None and self.signer_key.get_secret_value():
            return self.signer_key
        if chain_id not in DEVNET_CHAIN_IDS:
            return None
        return self.resolve_relayer_key(chain_id)
