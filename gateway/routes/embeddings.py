"""OpenAI-compatible embeddings (``POST /v1/embeddings``), paid through an API key grant.

See :mod:`gateway.apikeys` for how a key is bound to a wallet and what bounds its spending.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header
from fastapi.responses import JSONResponse

from gateway import apikeys, idempotency, schemas, serving
from gateway.context import CtxDep
from gateway.errors import BadRequestError, NotFoundError
from gateway.routes.common import ERRORS

router = APIRouter(prefix="/v1", tags=["openai"], responses=ERRORS)


@router.post("/embeddings", response_model=schemas.EmbeddingsOut | serving.ServingEmbeddingsOut,
             summary="Create embeddings (OpenAI-compatible)")
async def create_embeddings(
    body: schemas.EmbeddingsIn, ctx: CtxDep,
    authorization: Annotated[str | None, Header(description="Bearer <API key>")] = None,
    x_hearth_region: Annotated[str | None, Header(
        description="preferred provider region (default: the API key's region, if it has one)")] = None,
    idempotency_key: Annotated[str | None, Header(
        alias=idempotency.HEADER, description="send the same request with the same key again after a lost "
        "answer: it is answered once and charged once (serving plane; see gateway.idempotency)")] = None,
) -> schemas.EmbeddingsOut | serving.ServingEmbeddingsOut:
    """On the serving plane (see :mod:`gateway.serving` for when): forwards to a provider's
    endpoint with a signed payment receipt and answers as soon as it answers, with a ``hearth``
    object naming provider, request id and the signed work receipt. On the per-job path: posts
    one job for all inputs on-chain, waits for a provider's delivery, checks the output against
    the on-chain receipt, and names the job and its transactions."""
    key = apikeys.authenticate(ctx, authorization)
    ctx.check_wallet_rate(key.wallet)
    if ctx.settings.serving_mode != "per_job":
        model = serving.find_model(ctx, body.model)
        if model is None or not model.active:
            raise NotFoundError(f"model {body.model!r} is not registered or not active", reason="model_not_found")
        if serving.use_serving(ctx, model.model_id, key.wallet):
            if body.dimensions is not None and body.dimensions != 384:
                raise BadRequestError("this model has 384 dimensions and cannot shorten them",
                                      reason="unsupported_dimensions")
            texts = apikeys.input_texts(ctx, body.input)  # inline: a request's texts tokenize in microseconds
            region = x_hearth_region or key.region

            async def answer(claim: idempotency.Claim | None) -> JSONResponse:
                # Built and checked by the plane already: skip re-validating it against the response union.
                return JSONResponse(await serving.embed(ctx, key, body, texts, model, region, claim))

            out = await idempotency.answered_once(
                ctx.db_engine, key.key_hash, idempotency_key, "/v1/embeddings",
                lambda: [body.model_dump(mode="json"), region], ctx.settings.reservation_ttl(), answer)
            return out  # type: ignore[return-value]
    return await apikeys.embed(ctx, key, body)
