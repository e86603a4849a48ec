"""The gateway's blob storage: the content-addressed :class:`common.blobs.BlobStore`
(id = ``0x`` + keccak256 of the bytes, hash checked on the way in and out) behind a size limit
and the gateway's errors.

By default the blobs are files under ``$HEARTH_DATA_DIR/blobs`` (:class:`common.blobs.LocalBlobStore`,
the same directory the CLI and a local worker use); ``HEARTH_GATEWAY_BLOB_STORE=s3`` keeps them in
an S3-compatible bucket (:class:`common.blobs.S3BlobStore`).
"""

from __future__ import annotations

from common.blobs import (
    BlobIntegrityError,
    BlobStore,
    InvalidBlobIdError,
    LocalBlobStore,
    S3BlobStore,
    blob_id,
    normalize_id,
)
from common.blobs import BlobNotFoundError as _Missing
from common.blobs import BlobTooLargeError as _TooLarge
from gateway.errors import BlobCorruptError, BlobNotFoundError, BlobTooLargeError, MalformedRequestError

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
