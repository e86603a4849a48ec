"""OpenAI-compatible text generation: ``POST /v1/chat/completions`` and ``POST /v1/completions``
(SmolLM2), on the serving plane only; see :mod:`gateway.generation` for pricing, streaming and
what is checked before an answer is charged."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header
from fastapi.responses import JSONResponse, StreamingResponse

from common import generation as gen
from gateway import apikeys, generation, idempotency, serving
from gateway.context import CtxDep
from gateway.errors import NotFoundError, PaymentError, UnavailableError
from gateway.routes.common import ERRORS

router = APIRouter(prefix="/v1", tags=["openai"], responses=ERRORS)

Auth = Annotated[str | None, Header(description="Bearer <API key>")]
Region = Annotated[str | None, Header(description="preferred provider region")]
IdempotencyKey = Annotated[str | None, Header(
    alias=idempotency.HEADER, description="send the same (not streamed) request with the same key again after a "
    "lost answer: it is answered once and charged once (see gateway.idempotency)")]


async def _generate(ctx: CtxDep, body: gen.ChatCompletionsIn | gen.CompletionsIn, authorization: str | None,
                    region: str | None, idempotency_key: str | None, route: str) -> JSONResponse | StreamingResponse:
    key = apikeys.authenticate(ctx, authorization)
    ctx.check_wallet_rate(key.wallet)
    model = serving.find_model(ctx, body.model)
    if model is None or not model.active:
        raise NotFoundError(f"model {body.model!r} is not registered or not active", reason="model_not_found")
    generation.check_generative(ctx, model)
    if ctx.serving is None or ctx.settings.serving_mode == "per_job":
        raise UnavailableError("text generation is served on the serving plane only, which this gateway does not "
                               "run (it has no receipt signer, or HEARTH_GATEWAY_SERVING_MODE=per_job)",
                               reason="serving_plane_required")
    if not serving.signer_authorized(ctx, key.wallet):
        raise PaymentError(f"wallet {key.wallet} has not authorized this gateway's receipt signer "
                           f"{ctx.serving.signer} (see GET /v1/serving/signer)", reason="signer_not_authorized")
    return await idempotency.answered_once(
        ctx.db_engine, key.key_hash, idempotency_key, route, lambda: [body.model_dump(mode="json"), region],
        ctx.settings.reservation_ttl(), lambda claim: generation.generate(ctx, key, body, model, region, claim),
        stream=bool(body.stream))


@router.post("/chat/completions", response_model=None, summary="Create a chat completion (OpenAI-compatible)")
async def chat_completions(body: gen.ChatCompletionsIn, ctx: CtxDep, authorization: Auth = None,
                           x_hearth_region: Region = None,
                           idempotency_key: IdempotencyKey = None) -> JSONResponse | StreamingResponse:
    """Answered by a provider's endpoint with SmolLM2; ``stream: true`` for server-sent
    ``chat.completion.chunk`` events. The ``hearth`` object names the provider, the request id,
    the signed work receipt, the cost and the seed (reuse it to reproduce the answer)."""
    return await _generate(ctx, body, authorization, x_hearth_region, idempotency_key, "/v1/chat/completions")


@router.post("/completions", response_model=None, summary="Create a text completion (OpenAI-compatible)")
async def completions(body: gen.CompletionsIn, ctx: CtxDep, authorization: Auth = None,
                      x_hearth_region: Region = None,
                      idempotency_key: IdempotencyKey = None) -> JSONResponse | StreamingResponse:
    """A prompt (text or token ids) continued by SmolLM2, without the chat template."""
    return await _generate(ctx, body, authorization, x_hearth_region, idempotency_key, "/v1/completions")
