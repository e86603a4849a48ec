"""Blob stores: content addressing, hash checks on write and read, the gateway HTTP client, and
the S3-compatible store against a real local S3 endpoint (moto's server)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from common.blobs import (
    BlobError,
    BlobIntegrityError,
    BlobNotFoundError,
    BlobStore,
    BlobTooLargeError,
    BlobUnavailableError,
    HttpBlobStore,
    InvalidBlobIdError,
    LocalBlobStore,
    S3BlobStore,
    blob_id,
    normalize_id,
    open_blob_store,
)


def test_local_store_files_blobs_under_their_keccak(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    assert isinstance(store, BlobStore)
    bid = store.put(b"hello")
    assert bid == "0x1c8aff950685c2ed4bc3174f3472287b56d9517b9c948127319a09a7a36deac8"
    assert store.get(bid) == b"hello" and store.has(bid)
    assert store.get(bid.upper().replace("0X", "")) == b"hello"  # any hex spelling
    assert store.get(bytes.fromhex(bid[2:])) == b"hello"
    assert store.put(b"hello") == bid  # idempotent


def test_tampered_file_is_detected_on_read(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    bid = store.put(b"original bytes")
    store.path(bid).write_bytes(b"tampered bytes")
    with pytest.raises(BlobIntegrityError, match="tampered"):
        store.get(bid)
    # Writing the right bytes again repairs the file.
    assert store.put(b"original bytes") == bid
    assert store.get(bid) == b"original bytes"


def test_missing_blob_oversized_blob_and_bad_ids(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    with pytest.raises(BlobNotFoundError):
        store.get(blob_id(b"never stored"))
    assert not store.has(blob_id(b"never stored"))
    bid = store.put(b"x" * 100)
    with pytest.raises(BlobTooLargeError):
        store.get(bid, max_bytes=99)
    for bad in ("0x1234", "zz" * 32, ""):
        with pytest.raises(InvalidBlobIdError):
            normalize_id(bad)
    assert not list(tmp_path.rglob(".tmp-*"))  # no temp files left behind


def _gateway(blobs: dict[str, bytes], *, lie: bool = False, status: int | None = None) -> httpx.Client:
    """A fake gateway implementing the blob API contract."""

    def handler(req: httpx.Request) -> httpx.Response:
        if status is not None:
            return httpx.Response(status)
        if req.method == "POST" and req.url.path == "/v1/blobs":
            bid = blob_id(req.content)
            blobs[bid] = req.content
            return httpx.Response(201, json={"id": blob_id(b"other") if lie else bid})
        bid = req.url.path.rsplit("/", 1)[-1]
        if bid not in blobs:
            return httpx.Response(404)
        if req.method == "HEAD":
            return httpx.Response(405)  # the client falls back to GET
        return httpx.Response(200, content=b"evil" if lie else blobs[bid])

    return httpx.Client(transport=httpx.MockTransport(handler), base_url="http://gw")


def test_http_store_speaks_the_gateway_blob_api_and_checks_hashes() -> None:
    blobs: dict[str, bytes] = {}
    store = HttpBlobStore("http://gw/", client=_gateway(blobs))
    bid = store.put(b"over http")
    assert blobs == {bid: b"over http"}
    assert store.get(bid) == b"over http" and store.has(bid)
    assert not store.has(blob_id(b"absent"))
    with pytest.raises(BlobNotFoundError):
        store.get(blob_id(b"absent"))
    with pytest.raises(BlobTooLargeError):
        store.get(bid, max_bytes=3)

    lying = HttpBlobStore("http://gw", client=_gateway(blobs, lie=True))
    with pytest.raises(BlobIntegrityError):
        lying.get(bid)
    with pytest.raises(BlobIntegrityError):
        lying.put(b"filed under another id")
    with pytest.raises(BlobUnavailableError):
        HttpBlobStore("http://gw", client=_gateway(blobs, status=503)).get(bid)
    with pytest.raises(BlobError):
        HttpBlobStore("http://gw", client=_gateway(blobs, status=403)).put(b"refused")


def test_the_blob_store_setting_picks_local_files_a_gateway_or_s3(
    tmp_path: Path, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from worker.settings import WorkerSettings

    assert isinstance(WorkerSettings(data_dir=tmp_path).open_blob_store(), LocalBlobStore)
    assert isinstance(WorkerSettings(data_dir=tmp_path, blob_url="http://127.0.0.1:1").open_blob_store(), HttpBlobStore)
    monkeypatch.setenv("HEARTH_WORKER_BLOB_STORE", "s3")
    with pytest.raises(BlobError, match="needs a bucket"):
        WorkerSettings(data_dir=tmp_path).open_blob_store()
    monkeypatch.setenv("HEARTH_WORKER_S3_BUCKET", "hearth")
    monkeypatch.setenv("HEARTH_WORKER_S3_ENDPOINT_URL", s3_endpoint)
    assert isinstance(WorkerSettings(data_dir=tmp_path).open_blob_store(), S3BlobStore)
    with pytest.raises(BlobError, match="unknown blob store"):
        open_blob_store("ftp", root=tmp_path)  # type: ignore[arg-type]


def test_s3_store_files_blobs_under_their_id_and_checks_them_on_the_way_out(s3_endpoint: str) -> None:
    import boto3

    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    client.create_bucket(Bucket="hearth")
    store = S3BlobStore(client, "hearth", prefix="blobs/")
    assert isinstance(store, BlobStore)
    bid = store.put(b"hello")
    assert bid == blob_id(b"hello") and store.has(bid) and store.get(bid) == b"hello"
    assert client.get_object(Bucket="hearth", Key=f"blobs/{bid}")["Body"].read() == b"hello"
    missing = blob_id(b"never stored")
    assert not store.has(missing)
    with pytest.raises(BlobNotFoundError):
        store.get(missing)
    with pytest.raises(BlobTooLargeError):
        store.get(bid, max_bytes=4)
    # Someone with write access to the bucket swaps the bytes: the read refuses them.
    client.put_object(Bucket="hearth", Key=f"blobs/{bid}", Body=b"jello")
    with pytest.raises(BlobIntegrityError):
        store.get(bid)
    store.delete(bid)
    assert not store.has(bid)
    unreachable = S3BlobStore(boto3.client("s3", endpoint_url="http://127.0.0.1:9", region_name="us-east-1"), "x")
    with pytest.raises(BlobUnavailableError):
        unreachable.has(bid)
