"""The indexer's settings, from the environment (``HEARTH_INDEXER_*``) or arguments."""

from __future__ import annotations

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from common.settings import HearthSettings
from indexer.decode import PROTOCOL_CONTRACTS


class IndexerSettings(HearthSettings):
    """Everything the indexer service reads; defaults suit the local devnet.

    Variables take the ``HEARTH_INDEXER_`` prefix (``HEARTH_INDEXER_CONFIRMATIONS=12``,
    ``HEARTH_INDEXER_DATABASE_URL``); ``HEARTH_DATA_DIR``, ``HEARTH_MANIFEST`` and
    ``HEARTH_LOG_LEVEL`` are shared with the other services."""

    model_config = SettingsConfigDict(env_prefix="HEARTH_INDEXER_", extra="ignore", populate_by_name=True)

    #: the index's SQLAlchemy URL; default: the SQLite file ``indexer.db`` in the data directory
    database_url: str = ""
    #: overrides the manifest's RPC URL
    rpc_url: str | None = None
    #: blocks to trail the head by: 0 for a live view on the devnet, N for final data
    confirmations: int = Field(default=0, ge=0)
    #: seconds between head polls once caught up
    poll_interval: float = Field(default=0.25, gt=0, allow_inf_nan=False)
    #: Prometheus exporter port (None: no exporter)
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    metrics_host: str = "127.0.0.1"
    #: first block to index in an empty database (default: the manifest's deployment block)
    from_block: int | None = Field(default=None, ge=0)
    #: deepest reorg the indexer can roll back; block hashes and the undo log are kept this far
    max_reorg_depth: int = Field(default=256, ge=1)
    #: eth_getLogs range: the first try, and the bounds it adapts within
    initial_range: int = Field(default=1000, ge=1)
    min_range: int = Field(default=1, ge=1)
    max_range: int = Field(default=50_000, ge=1)
    #: logs per eth_getLogs answer to aim for (the range grows below half and shrinks above)
    target_logs: int = Field(default=10_000, ge=1)
    contracts: tuple[str, ...] = PROTOCOL_CONTRACTS
    #: what to do when the database indexes another deployment or a reorg is deeper than
    #: max_reorg_depth: wipe and re-index (True) or stop with an error (False)
    reset_on_mismatch: bool = True
    rpc_timeout: float = 30.0
    rpc_retries: int = 5

    @model_validator(mode="after")
    def _default_database(self) -> IndexerSettings:
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'indexer.db'}"
        return self
