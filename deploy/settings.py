"""Settings of the ``hearth`` CLI and the ``make up`` supervisor (``HEARTH_CLI_*``, plus the
shared ``HEARTH_DATA_DIR``, ``HEARTH_MANIFEST`` and ``HEARTH_LOG_LEVEL``)."""

from __future__ import annotations

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import SettingsConfigDict

from common.settings import HearthSettings


class CliSettings(HearthSettings):
    model_config = SettingsConfigDict(env_prefix="HEARTH_CLI_", extra="ignore", populate_by_name=True)

    log_level: str = Field(default="WARNING", validation_alias=AliasChoices("HEARTH_LOG_LEVEL", "log_level"))
    key: SecretStr | None = Field(default=None, validation_alias=AliasChoices("HEARTH_KEY", "key"))
    """The signing key outside the devnet (``--as ROLE`` takes a devnet account's instead)."""
    up_restart: bool = Field(default=False, validation_alias=AliasChoices("HEARTH_UP_RESTART", "up_restart"))
    """``make up``: restart a crashed service with backoff instead of stopping the stack."""
    up_celery_workers: int = Field(default=2, ge=1,
                                   validation_alias=AliasChoices("HEARTH_UP_CELERY_WORKERS", "up_celery_workers"))
    """``make up`` with ``HEARTH_WORKER_BROKER_URL`` set: Celery worker processes for the provider."""
    up_gateways: int = Field(default=1, ge=1, validation_alias=AliasChoices("HEARTH_UP_GATEWAYS", "up_gateways"))
    """``make up``: gateways on consecutive ports from ``--gateway-port``, sharing one database."""


class UpSettings(CliSettings):
    """``python -m deploy up|devnet``: the same, logging at INFO unless told otherwise."""

    log_level: str = Field(default="INFO", validation_alias=AliasChoices("HEARTH_LOG_LEVEL", "log_level"))
