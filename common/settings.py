"""The one settings base class of the services (pydantic-settings), and the blob store setting
they share.

Every service's ``Settings`` derives from :class:`HearthSettings` and sets its own prefix
(``HEARTH_WORKER_``, ``HEARTH_INDEXER_``, ``HEARTH_GATEWAY_``). A few variables mean the same
thing to every service and keep one name without a service prefix: ``HEARTH_DATA_DIR``,
``HEARTH_MANIFEST`` and ``HEARTH_LOG_LEVEL``. Nothing outside a Settings class reads the
environment; validation happens in the class (fastapi/full-stack-fastapi-template's
``core/config.py`` does the same).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.blobs import BlobBackend, BlobError, BlobStore, open_blob_store
from common.log import LOG_LEVELS


def shared(name: str, field: str) -> AliasChoices:
    """The aliases of a variable shared by every service: its one environment name, and the
    field name for keyword arguments."""
    return AliasChoices(name, field)


class HearthSettings(BaseSettings):
    """What every service reads: where its data and the deployment manifest are, and how much to log."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    data_dir: Path = Field(default=Path(".hearth"), validation_alias=shared("HEARTH_DATA_DIR", "data_dir"))
    """Databases, local blobs, node state and the devnet's files live here."""
    manifest_path: Path | None = Field(default=None, validation_alias=shared("HEARTH_MANIFEST", "manifest_path"))
    """The deployment manifest; default ``<data_dir>/manifest.json``."""
    log_level: str = Field(default="INFO", validation_alias=shared("HEARTH_LOG_LEVEL", "log_level"))

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, v: Path) -> Path:
        return v.expanduser().resolve()

    @field_validator("log_level")
    @classmethod
    def _level(cls, v: str) -> str:
        if v.upper() not in LOG_LEVELS:
            raise ValueError(f"log level {v!r}: one of {', '.join(LOG_LEVELS)}")
        return v.upper()

    def manifest_file(self) -> Path:
        return (self.manifest_path or self.data_dir / "manifest.json").resolve()


class BlobStoreSettings(BaseSettings):
    """Which blob store a service uses (``<PREFIX>BLOB_STORE``): ``local`` files (the default),
    a gateway's ``http`` blob API, or an ``s3``-compatible bucket."""

    blob_store: BlobBackend | None = None
    """Default: ``http`` when ``blob_url`` is set, else ``local``."""
    blob_dir: Path | None = None
    """Local store directory; default ``<data_dir>/blobs``."""
    blob_url: str | None = None
    """A gateway's base URL (the ``http`` store)."""
    s3_bucket: str | None = None
    s3_endpoint_url: str | None = None
    """An S3-compatible endpoint (MinIO, R2...); default AWS. Credentials: boto3's usual chain."""
    s3_prefix: str = "blobs/"
    s3_region: str | None = None

    def blob_backend(self) -> BlobBackend:
        if self.blob_store is not None:
            return self.blob_store
        return "http" if self.blob_url else "local"

    def open_blobs(self, data_dir: Path, key: str | None = None) -> BlobStore:
        """The configured store (``key`` signs uploads to a gateway)."""
        backend = self.blob_backend()
        if backend == "s3" and not self.s3_bucket:
            raise BlobError("the s3 blob store needs a bucket (<PREFIX>S3_BUCKET)")
        return open_blob_store(
            backend, root=self.blob_dir or data_dir / "blobs", url=self.blob_url, key=key,
            s3_bucket=self.s3_bucket, s3_endpoint_url=self.s3_endpoint_url, s3_prefix=self.s3_prefix,
            s3_region=self.s3_region,
        )
