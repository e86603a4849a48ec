"""OpenAI-compatible embeddings (``POST /v1/embeddings``), paid through an API key grant.

See :mod:`gateway.apikeys` for how a key is bound to a wallet and what bounds its spending.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header

from gateway import apikeys, schemas
from gateway.context import CtxDep
from gateway.routes.common import ERRORS

router = APIRouter(prefix="/v1", tags=["openai"], responses=ERRORS)


@router.post("/embeddings", response_model=schemas.EmbeddingsOut, summary="Create embeddings (OpenAI-compatible)")
async def create_embeddings(
    body: schemas.EmbeddingsIn, ctx: CtxDep,
    authorization: Annotated[str | None, Header(description="Bearer <API key>")] = None,
) -> schemas.EmbeddingsOut:
    """Posts one job for all inputs on-chain, waits for a provider's delivery, checks the output
    against the on-chain receipt and answers in OpenAI's format (plus a ``hearth`` object naming
    the job and its transactions)."""
    key = apikeys.authenticate(ctx, authorization)
    ctx.check_wallet_rate(key.wallet)
    return await apikeys.embed(ctx, key, body)
