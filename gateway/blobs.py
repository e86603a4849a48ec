"""The gateway's blob storage: the worker's content-addressed :class:`worker.blobs.BlobStore`
(id = ``0x`` + keccak256 of the bytes, hash checked on the way in and out) behind a size limit
and the gateway's errors.

By default the blobs are files under ``$HEARTH_DATA_DIR/blobs`` (:class:`worker.blobs.LocalBlobStore`,
the same directory the CLI and a local worker use). :class:`S3BlobStore` implements the same
protocol over any S3-compatible bucket.
"""

from __future__ import annotations

from typing import Any

from gateway.errors import BlobCorruptError, BlobNotFoundError, BlobTooLargeError, MalformedRequestError
from worker.blobs import (
    BlobIntegrityError,
    BlobStore,
    InvalidBlobIdError,
    LocalBlobStore,
    blob_id,
    check,
    normalize_id,
)
from worker.blobs import BlobNotFoundError as _Missing
from worker.blobs import BlobTooLargeError as _TooLarge

__all__ = ["BlobStore", "GatewayBlobs", "LocalBlobStore", "S3BlobStore", "blob_id", "parse_blob_id"]


def parse_blob_id(value: str) -> str:
    """Normalises a blob id (or any bytes32 hash) to ``0x`` + 64 lower-case hex."""
    try:
        return normalize_id(value)
    except (InvalidBlobIdError, AttributeError):
        raise MalformedRequestError(f"not a 32-byte hex id: {value!r}", reason="invalid_blob_id") from None


class GatewayBlobs:
    """A :class:`BlobStore` with the gateway's size limit, errors, and undo of a fresh put."""

    def __init__(self, store: BlobStore, max_bytes: int) -> None:
        self.store = store
        self.max_bytes = max_bytes

    def put(self, data: bytes) -> str:
        if len(data) > self.max_bytes:
            raise BlobTooLargeError(f"blob of {len(data)} bytes exceeds the limit of {self.max_bytes}",
                                    size=len(data), limit=self.max_bytes)
        try:
            return self.store.put(data)
        except BlobIntegrityError as exc:
            raise BlobCorruptError(str(exc)) from None

    def get(self, bid: str) -> bytes:
        bid = parse_blob_id(bid)
        try:
            return self.store.get(bid)
        except _Missing:
            raise BlobNotFoundError(f"no blob {bid}", blob_id=bid) from None
        except _TooLarge as exc:
            raise BlobTooLargeError(str(exc)) from None
        except BlobIntegrityError as exc:
            raise BlobCorruptError(str(exc), blob_id=bid) from None

    def has(self, bid: str) -> bool:
        return bool(self.store.has(parse_blob_id(bid)))

    def delete(self, bid: str) -> None:
        """Removes a blob that was stored for a request that then failed."""
        bid = parse_blob_id(bid)
        if isinstance(self.store, LocalBlobStore):
            self.store.path(bid).unlink(missing_ok=True)
        elif hasattr(self.store, "delete"):
            self.store.delete(bid)


class S3BlobStore:
    """Blobs as objects ``<prefix><id>`` in an S3-compatible bucket (the worker's protocol).

    ``client`` is a boto3 S3 client, or anything with ``put_object``, ``get_object``,
    ``head_object`` and ``delete_object`` of the same shape (MinIO, R2, Ceph by endpoint URL)."""

    def __init__(self, client: Any, bucket: str, prefix: str = "blobs/") -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix

    def _key(self, blob: str | bytes) -> str:
        return self.prefix + normalize_id(blob)

    def put(self, data: bytes) -> str:
        bid = blob_id(data)
        self.client.put_object(Bucket=self.bucket, Key=self._key(bid), Body=data,
                               ContentType="application/octet-stream")
        return bid

    def get(self, blob: str | bytes, max_bytes: int | None = None) -> bytes:
        bid = normalize_id(blob)
        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=self._key(bid))
        except Exception as exc:
            if _is_missing(exc):
                raise _Missing(f"no blob {bid} in s3://{self.bucket}/{self.prefix}") from None
            raise
        if max_bytes is not None and int(obj.get("ContentLength", 0)) > max_bytes:
            raise _TooLarge(f"blob {bid} is more than {max_bytes} bytes")
        return check(bid, obj["Body"].read())

    def has(self, blob: str | bytes) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(blob))
        except Exception as exc:
            if _is_missing(exc):
                return False
            raise
        return True

    def delete(self, blob: str | bytes) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(blob))


def _is_missing(exc: Exception) -> bool:
    """boto3 reports a missing key as ``ClientError`` with code ``NoSuchKey`` / ``404``."""
    code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
    return code in {"NoSuchKey", "404", "NotFound"} or isinstance(exc, KeyError)
