"""Blobs: content-addressed upload and download (the worker's HTTP blob client uses these)."""

from __future__ import annotations

from typing import Annotated

import anyio
from fastapi import APIRouter, Path, Query, Request, Response

from gateway import schemas, store
from gateway.auth import UploaderDep
from gateway.blobs import blob_id, parse_blob_id
from gateway.context import CtxDep
from gateway.errors import BadRequestError, BlobTooLargeError
from gateway.retention import is_provider, store_held, uploader
from gateway.routes.common import ERRORS

router = APIRouter(prefix="/v1/blobs", tags=["blobs"], responses=ERRORS)

BlobIdPath = Annotated[str, Path(pattern=r"^0x[0-9a-fA-F]{64}$", description="0x + keccak256 of the bytes")]


@router.post(
    "", status_code=201, response_model=schemas.BlobOut, summary="Upload a blob (raw body)",
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}},
)
async def upload_blob(
    request: Request, ctx: CtxDep, response: Response, wallet: UploaderDep,
    expected: Annotated[str | None, Query(alias="id", pattern=r"^0x[0-9a-fA-F]{64}$",
                                          description="the id the uploader computed; checked")] = None,
) -> schemas.BlobOut:
    """The id is keccak256 of the body, computed here; pass ``?id=`` to have it checked against
    yours. Idempotent: uploading the same bytes again returns the same id and renews the blob.

    Needs a SIWE session or an API key (``Authorization: Bearer``). Each wallet may hold a quota
    of unexpired uploads (429 ``blob_quota_exceeded``, with ``Retry-After``); a client's upload
    to a full store is a 507 ``blob_store_full`` (a registered provider's never is); blobs expire
    a retention period after their last upload unless an open job names them (see
    :mod:`gateway.retention`)."""
    limit = ctx.settings.max_blob_bytes
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BlobTooLargeError(f"blob exceeds the limit of {limit} bytes", limit=limit)
        chunks.append(chunk)
    data = b"".join(chunks)
    bid = blob_id(data)
    if expected is not None and parse_blob_id(expected) != bid:
        raise BadRequestError(f"the body hashes to {bid}, not {expected}", reason="blob_hash_mismatch")
    policy = ctx.blob_policy
    provider = await anyio.to_thread.run_sync(is_provider, ctx.index_engine, wallet)
    quota = policy.provider_quota_bytes if provider else policy.quota_bytes
    cap = None if provider else policy.store_max_bytes  # a full store still takes providers' outputs
    await anyio.to_thread.run_sync(lambda: store_held(ctx.blobs, ctx.db_engine, policy, data, uploader(wallet),
                                                      quota, store.now(), store_cap=cap))
    ctx.metrics.blob_bytes.labels("in").inc(len(data))
    response.headers["Location"] = f"/v1/blobs/{bid}"
    return schemas.BlobOut(id=bid, size=len(data))


@router.get(
    "/{blob_id}", summary="Download a blob",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
                     "description": "the bytes; their keccak256 equals the id (checked before sending)"}},
)
def download_blob(blob_id: BlobIdPath, ctx: CtxDep) -> Response:
    bid = parse_blob_id(blob_id)
    data = ctx.blobs.get(bid)
    ctx.metrics.blob_bytes.labels("out").inc(len(data))
    return Response(content=data, media_type="application/octet-stream",
                    headers={"ETag": f'"{bid}"', "X-Content-Keccak256": bid,
                             "Cache-Control": "public, max-age=31536000, immutable"})


@router.head("/{blob_id}", response_class=Response, include_in_schema=False)
def head_blob(blob_id: BlobIdPath, ctx: CtxDep) -> Response:
    """200 if stored, else 404, with no body (HEAD answers never carry one, so it stays out of
    the schema, whose error responses all have JSON bodies)."""
    bid = parse_blob_id(blob_id)
    if not ctx.blobs.has(bid):
        return Response(status_code=404)
    return Response(status_code=200, headers={"ETag": f'"{bid}"', "X-Content-Keccak256": bid})
