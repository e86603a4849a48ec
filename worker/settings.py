"""Settings of the worker node and its Celery processes, from ``HEARTH_WORKER_*`` environment
variables (plus the shared ``HEARTH_DATA_DIR``, ``HEARTH_MANIFEST``, ``HEARTH_LOG_LEVEL``; see
:mod:`common.settings`). The operator key is a secret: it comes from ``HEARTH_WORKER_KEY`` (or
a key file / the devnet accounts file, see ``worker.cli``), never from a file in the repository."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import SettingsConfigDict

from common.blobs import BlobStore
from common.settings import BlobStoreSettings, HearthSettings

Role = Literal["provider", "verifier", "both"]

#: ``--broker sqlite`` (or ``HEARTH_WORKER_BROKER_URL=sqlite``) means the embedded default below.
SQLITE_BROKER = "sqlite"


class WorkerSettings(HearthSettings, BlobStoreSettings):
    model_config = SettingsConfigDict(env_prefix="HEARTH_WORKER_", extra="ignore", populate_by_name=True)

    # -- where things are (data_dir, manifest_path: common.settings.HearthSettings; blob_*: BlobStoreSettings)
    rpc_url: str | None = None
    """Overrides the manifest's RPC URL."""
    gateway_url: str | None = None
    """A gateway whose public API lists posted jobs (``GET /v1/jobs?status=posted``): claimable
    jobs are read from it instead of the market's ``JobPosted`` logs (the chain is the fallback
    whenever it cannot be read). Never another service's database."""

    # -- who and what
    worker_key: SecretStr | None = Field(default=None, validation_alias=AliasChoices("HEARTH_WORKER_KEY", "worker_key"))
    node_name: str | None = None
    """A label for log lines (default: the start of the operator address)."""
    role: Role = "provider"
    sample_all: bool = False
    """Verifier: re-execute every receipt instead of the protocol's sample."""

    # -- runtime
    backend: Literal["torch", "triton"] = "torch"
    dtype: Literal["fp32", "fp16", "bf16"] = "fp32"
    device: str | None = None
    gpu_class: str | None = None
    """The receipt's GPU class; default derived from the device (``cpu``, ``h100``...)."""
    max_tokens: int = 16384
    """Padded-token budget of one model batch (batches span jobs)."""
    max_batch_size: int = 64

    # -- Celery (off unless a broker is configured: inference then runs in the node process)
    broker_url: str | None = None
    """``sqlite`` for the embedded SQLAlchemy/SQLite transport, or a redis:// / amqp:// URL."""
    result_backend: str | None = None
    queue: str = "hearth"
    jobs_per_task: int = 16
    task_timeout_s: float = 600.0

    # -- node loop
    poll_interval_s: float = Field(default=2.0, ge=0, allow_inf_nan=False)
    confirmations: int = 0
    """Blocks to trail the head by before acting on a log (0 on an automining devnet)."""
    log_chunk_blocks: int = 5000
    max_open_jobs: int = 64
    min_deadline_margin_s: int = 30
    withdraw_interval_s: float = 3600.0
    min_withdraw: int = 1
    max_input_bytes: int = 1 << 20
    max_duty_failures: int = Field(default=20, ge=1)
    """A duty (provider, verifier, committee...) that fails this many ticks in a row stops the
    node with an error naming it, instead of logging the same failure forever."""

    def open_blob_store(self) -> BlobStore:
        """The configured blob store; uploads to a gateway sign in with the operator key."""
        return self.open_blobs(self.data_dir, self.worker_key.get_secret_value() if self.worker_key else None)

    def broker(self) -> str | None:
        """The Celery broker URL, or None for in-process inference."""
        if not self.broker_url:
            return None
        if self.broker_url == SQLITE_BROKER:
            return default_broker_url(self.data_dir)
        return self.broker_url

    def backend_url(self) -> str:
        if self.result_backend:
            return self.result_backend
        broker = self.broker() or ""
        if broker.startswith(("redis://", "rediss://")):
            return broker
        return f"db+sqlite:///{(self.data_dir / 'celery' / 'results.sqlite').resolve()}"


def default_broker_url(data_dir: Path) -> str:
    return f"sqla+sqlite:///{(data_dir / 'celery' / 'broker.sqlite').resolve()}"
