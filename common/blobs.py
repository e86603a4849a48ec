"""Content-addressed blob storage for job inputs and outputs.

A blob's id is the keccak256 of its bytes, written ``0x`` + 64 lowercase hex digits: the same
value a job's ``inputHash`` / a receipt's ``outputHash`` carries on chain, so a job names its
blobs without any extra mapping. Every implementation checks the hash on the way in and on
the way out; a store can therefore be untrusted (a gateway, a shared disk) without a node
ever computing on, or delivering, bytes other than the ones the chain committed to.

Implementations:

* :class:`LocalBlobStore` - files under ``$HEARTH_DATA_DIR/blobs`` (one machine, the default);
* :class:`S3BlobStore` - objects in an S3-compatible bucket (AWS S3, MinIO, R2, Ceph by endpoint URL);
* :class:`HttpBlobStore` - a gateway's blob API: ``POST /v1/blobs`` with the raw bytes as the
  body answers ``{"id": "0x..."}``; ``GET /v1/blobs/{id}`` answers the raw bytes (404 when
  unknown); ``HEAD /v1/blobs/{id}`` answers 200 or 404 (a ``GET`` is used when the gateway
  does not allow ``HEAD``). Uploads need a session: given the operator key, the store signs in
  with Ethereum (EIP-4361: ``GET /v1/auth/nonce``, ``POST /v1/auth/verify``) and sends the
  session token as ``Authorization: Bearer``; it signs in again when the session expires.

:func:`open_blob_store` picks one by a setting (``local``, ``http`` or ``s3``), so the gateway,
the worker and the CLI choose their store the same way.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import httpx
from eth_hash.auto import keccak

_ID_RE = re.compile(r"^(0x)?([0-9a-fA-F]{64})$")


class BlobError(Exception):
    """Root of everything the blob stores raise."""


class InvalidBlobIdError(BlobError, ValueError):
    """Not a blob id (32 bytes as hex)."""


class BlobNotFoundError(BlobError, LookupError):
    """No blob with that id in the store."""


class BlobIntegrityError(BlobError, ValueError):
    """Stored or received bytes do not hash to the id they were filed under."""


class BlobTooLargeError(BlobError, ValueError):
    """A blob exceeds the size the caller accepts."""


class BlobUnavailableError(BlobError, ConnectionError):
    """The store could not be reached or answered with a server error (worth retrying)."""


def blob_id(data: bytes) -> str:
    """The id of ``data``: ``0x`` + keccak256 hex."""
    return "0x" + keccak(data).hex()


def normalize_id(value: str | bytes) -> str:
    """A blob id in canonical form from hex (with or without ``0x``) or 32 raw bytes."""
    if isinstance(value, bytes):
        if len(value) != 32:
            raise InvalidBlobIdError(f"a blob id is 32 bytes, got {len(value)}")
        return "0x" + value.hex()
    m = _ID_RE.match(value.strip())
    if not m:
        raise InvalidBlobIdError(f"not a blob id: {value!r}")
    return "0x" + m.group(2).lower()


def check(blob: str, data: bytes) -> bytes:
    """Returns ``data`` if it hashes to ``blob``, else raises :class:`BlobIntegrityError`."""
    actual = blob_id(data)
    if actual != blob:
        raise BlobIntegrityError(f"blob {blob} has bytes hashing to {actual}: tampered or corrupt")
    return data


@runtime_checkable
class BlobStore(Protocol):
    """Content-addressed storage: ``put`` returns the id, ``get`` returns checked bytes."""

    def put(self, data: bytes) -> str: ...

    def get(self, blob: str | bytes, max_bytes: int | None = None) -> bytes: ...

    def has(self, blob: str | bytes) -> bool: ...


class LocalBlobStore:
    """Blobs as files ``<root>/<id[2:4]>/<id>``, written atomically (temp file + rename)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, blob: str | bytes) -> Path:
        bid = normalize_id(blob)
        return self.root / bid[2:4] / bid[2:]

    def put(self, data: bytes) -> str:
        bid = blob_id(data)
        path = self.path(bid)
        if path.exists():
            try:
                check(bid, path.read_bytes())
                return bid
            except BlobIntegrityError:
                pass  # a corrupt copy is replaced below by the good bytes
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            # Check what actually reached the disk before it becomes visible under its id.
            check(bid, Path(tmp).read_bytes())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return bid

    def get(self, blob: str | bytes, max_bytes: int | None = None) -> bytes:
        bid = normalize_id(blob)
        path = self.path(bid)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise BlobNotFoundError(f"no blob {bid} in {self.root}") from None
        if max_bytes is not None and size > max_bytes:
            raise BlobTooLargeError(f"blob {bid} is {size} bytes, more than {max_bytes}")
        return check(bid, path.read_bytes())

    def has(self, blob: str | bytes) -> bool:
        return self.path(blob).is_file()


class HttpBlobStore:
    """Client of a gateway's blob API (see the module docstring for the contract)."""

    def __init__(self, base_url: str, *, timeout: float = 30.0, client: httpx.Client | None = None,
                 key: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._client = client or httpx.Client(timeout=timeout)
        self._key = key
        self._token: str | None = None

    def _sign_in(self) -> str:
        """A gateway session for the operator key (Sign-In with Ethereum)."""
        import warnings
        from datetime import UTC, datetime

        from eth_account import Account
        from eth_account.messages import encode_defunct

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # abnf's grammar warnings
            from siwe import SiweMessage

        assert self._key is not None
        resp = self._request("GET", f"{self.base_url}/v1/auth/nonce")
        if resp.status_code >= 400:
            raise BlobError(f"GET /v1/auth/nonce: HTTP {resp.status_code} {resp.text[:200]}")
        n = resp.json()
        account = Account.from_key(self._key)
        msg = SiweMessage(
            domain=n["domain"], address=account.address, statement="Store blobs as a Hearth provider.",
            uri=n["uri"], version="1", chain_id=int(n["chain_id"]), nonce=n["nonce"],
            issued_at=datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        ).prepare_message()
        sig = "0x" + bytes(account.sign_message(encode_defunct(text=msg)).signature).hex()
        resp = self._request("POST", f"{self.base_url}/v1/auth/verify", json={"message": msg, "signature": sig})
        if resp.status_code >= 400:
            raise BlobError(f"sign-in at {self.base_url} refused: HTTP {resp.status_code} {resp.text[:200]}")
        self._token = str(resp.json()["token"])
        return self._token

    def _upload(self, data: bytes) -> httpx.Response:
        headers = {"content-type": "application/octet-stream"}
        if self._key is not None:
            headers["authorization"] = f"Bearer {self._token or self._sign_in()}"
        resp = self._request("POST", self._url(), content=data, headers=headers)
        if resp.status_code == 401 and self._key is not None:  # the session expired: once more
            headers["authorization"] = f"Bearer {self._sign_in()}"
            resp = self._request("POST", self._url(), content=data, headers=headers)
        return resp

    def _url(self, blob: str | None = None) -> str:
        return f"{self.base_url}/v1/blobs" + (f"/{blob}" if blob else "")

    def _request(self, method: str, url: str, **kw: object) -> httpx.Response:
        try:
            resp = self._client.request(method, url, **kw)  # type: ignore[arg-type]
        except httpx.TransportError as exc:
            raise BlobUnavailableError(f"{method} {url}: {exc}") from exc
        if resp.status_code >= 500:
            raise BlobUnavailableError(f"{method} {url}: HTTP {resp.status_code}")
        return resp

    def put(self, data: bytes) -> str:
        bid = blob_id(data)
        resp = self._upload(data)
        if resp.status_code == 413:
            raise BlobTooLargeError(f"gateway refused a {len(data)}-byte blob as too large")
        if resp.status_code >= 400:
            raise BlobError(f"POST {self._url()}: HTTP {resp.status_code} {resp.text[:200]}")
        got = normalize_id(str(resp.json().get("id", "")))
        if got != bid:
            raise BlobIntegrityError(f"gateway filed blob {bid} under {got}")
        return bid

    def get(self, blob: str | bytes, max_bytes: int | None = None) -> bytes:
        bid = normalize_id(blob)
        url = self._url(bid)
        try:
            with self._client.stream("GET", url) as resp:
                if resp.status_code == 404:
                    raise BlobNotFoundError(f"no blob {bid} at {self.base_url}")
                if resp.status_code >= 500:
                    raise BlobUnavailableError(f"GET {url}: HTTP {resp.status_code}")
                if resp.status_code >= 400:
                    raise BlobError(f"GET {url}: HTTP {resp.status_code}")
                chunks: list[bytes] = []
                size = 0
                for chunk in resp.iter_bytes():
                    size += len(chunk)
                    if max_bytes is not None and size > max_bytes:
                        raise BlobTooLargeError(f"blob {bid} is more than {max_bytes} bytes")
                    chunks.append(chunk)
        except httpx.TransportError as exc:
            raise BlobUnavailableError(f"GET {url}: {exc}") from exc
        return check(bid, b"".join(chunks))

    def has(self, blob: str | bytes) -> bool:
        url = self._url(normalize_id(blob))
        resp = self._request("HEAD", url)
        if resp.status_code == 405:
            resp = self._request("GET", url)
        if resp.status_code == 404:
            return False
        if resp.status_code >= 400:
            raise BlobError(f"HEAD {url}: HTTP {resp.status_code}")
        return True

    def close(self) -> None:
        self._client.close()


class S3BlobStore:
    """Blobs as objects ``<prefix><id>`` in an S3-compatible bucket.

    ``client`` is a boto3 S3 client (:func:`s3_client` makes one for an endpoint URL)."""

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
                raise BlobNotFoundError(f"no blob {bid} in s3://{self.bucket}/{self.prefix}") from None
            raise BlobUnavailableError(f"s3://{self.bucket}/{self._key(bid)}: {exc}") from exc
        if max_bytes is not None and int(obj.get("ContentLength", 0)) > max_bytes:
            raise BlobTooLargeError(f"blob {bid} is more than {max_bytes} bytes")
        return check(bid, obj["Body"].read())

    def has(self, blob: str | bytes) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(blob))
        except Exception as exc:
            if _is_missing(exc):
                return False
            raise BlobUnavailableError(f"s3://{self.bucket}/{self._key(blob)}: {exc}") from exc
        return True

    def delete(self, blob: str | bytes) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(blob))


def _is_missing(exc: Exception) -> bool:
    """boto3 reports a missing key as ``ClientError`` with code ``NoSuchKey`` / ``404``."""
    code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
    return code in {"NoSuchKey", "404", "NotFound"}


def s3_client(endpoint_url: str | None = None, region: str | None = None) -> Any:
    """A boto3 S3 client; credentials come from boto3's usual chain (``AWS_ACCESS_KEY_ID``...)."""
    try:
        import boto3
    except ImportError:
        raise BlobError("the s3 blob store needs boto3 (pip install boto3)") from None
    return boto3.client("s3", endpoint_url=endpoint_url, region_name=region)


BlobBackend = Literal["local", "http", "s3"]


def open_blob_store(
    backend: BlobBackend,
    *,
    root: Path | str | None = None,
    url: str | None = None,
    key: str | None = None,
    s3_bucket: str | None = None,
    s3_endpoint_url: str | None = None,
    s3_prefix: str = "blobs/",
    s3_region: str | None = None,
) -> BlobStore:
    """The store a setting names: ``local`` (files under ``root``), ``http`` (a gateway's blob
    API at ``url``, uploading as the holder of ``key``) or ``s3`` (``s3_bucket`` at
    ``s3_endpoint_url``)."""
    if backend == "local":
        if root is None:
            raise BlobError("the local blob store needs a directory")
        return LocalBlobStore(root)
    if backend == "http":
        if not url:
            raise BlobError("the http blob store needs the gateway's URL")
        return HttpBlobStore(url, key=key)
    if backend == "s3":
        if not s3_bucket:
            raise BlobError("the s3 blob store needs a bucket")
        return S3BlobStore(s3_client(s3_endpoint_url, s3_region), s3_bucket, s3_prefix)
    raise BlobError(f"unknown blob store {backend!r}: local, http or s3")
