"""Chat and text completions on the serving plane: ``/v1/chat/completions`` and
``/v1/completions`` answered by a provider's endpoint (SmolLM2), streamed chunk by chunk.

**Pricing and payment.** Units are prompt + completion tokens at the provider's quote. The
gateway tokenizes the prompt itself (:mod:`common.chat_tokenizer`, the provider's code), so it
knows the prompt's length but not the completion's when it signs. It therefore signs the
``PaymentReceipt`` for the **cap**, ``(prompt + max_tokens) x price``, and reserves the cap at
the most expensive provider it may try against the API key's spending cap. The provider's
``WorkReceipt`` carries the **actual** units and value, ``(prompt + output tokens) x price``;
the gateway checks it and records that value as served, trims the key's charge to it, and only
recorded values enter the vouchers providers collect with (payment receipts are never redeemed
on-chain one by one, vouchers are). So:

* the provider is never paid more than what it produced: a receipt naming more units than the
  output it returned, or more value than its quote, fails the check and is paid nothing;
* the client never pays for an unanswered request: nothing is recorded, the reservation is
  released, when every provider fails before answering, when a provider dies or answers
  wrongly mid-stream (the stream ends with an ``error`` event), or when the client goes away.

**What is checked** before an answer is recorded: the work receipt recovers to the provider
and names this request id, payer and model; its input hash is keccak of the canonical request
(:mod:`common.generation`: the gateway's prompt ids, ``max_tokens``, temperature, top-p, top-k,
stop strings, and the seed: the client's, or the one the provider picked and returned); its
output hash is keccak of the returned output ids and finish reason; units and value as above.
The answer's text is the gateway's own decoding of the receipted ids (a stream's concatenated
deltas must equal it). Input and output blobs are kept for the challenge window, like
embeddings', so verifiers can re-execute the request by teacher-forced prefill.

**Streams** (``stream: true``): the provider's chunks are re-emitted as they arrive, as
``chat.completion.chunk`` (or ``text_completion``) objects; the last chunk with the finish
reason carries the ``hearth`` object once the receipt checked out and was recorded, then the
usage chunk (``stream_options.include_usage``), then ``data: [DONE]``. A provider that fails
before its stream starts is retried on the next one (same request id); after the first chunk
the stream cannot move, so a failure ends it with an ``error`` event and no charge. A provider
has the gateway's provider timeout plus :data:`SECONDS_PER_TOKEN` per token of the cap to send
a whole answer (or, streaming, each next chunk) before it counts as timed out.

**n > 1** (at most :data:`common.generation.MAX_N`): ``n`` independent requests, see
:func:`_generate_n`, charged all or nothing; streamed, the ``n`` provider streams are relayed in
one, their chunks interleaved as they arrive with ``index`` 0..n-1, the choices' final chunks
(each with its ``hearth``) once all ``n`` checked out and were recorded in one transaction, and
an ``error`` event with no charge if any of them breaks (:func:`_relay_n`; each stream is read
by :func:`_read_choice`, as a single stream is). **Log probabilities** are
relayed from the provider after a shape check (:func:`common.generation.check_logprobs`: they
name the receipted ids in order); the receipt does not cover their values, which a verifier
reproduces by teacher-forced prefill of the committed tokens.

Not implemented, refused with a 400 naming the parameter: ``n > 8`` (``invalid_n``), ``echo``,
``suffix``, ``best_of > 1``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
from eth_utils import keccak
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.types import Receive, Scope, Send

from common import generation as gen
from contracts.serving import AGGREGATOR_HEADER, PAYMENT_HEADER, WireError, encode_payment, work_receipt_from_json
from contracts.serving import work_receipt_json as receipt_json
from contracts.settlement import PaymentReceipt, WorkReceipt, recover_work_receipt, sign_payment_receipt
from gateway import idempotency, serving, store
from gateway.errors import (
    BadRequestError,
    GatewayError,
    PaymentError,
    SpendingCapError,
    UnavailableError,
)
from gateway.routing import Candidate

log = logging.getLogger(__name__)

#: SmolLM2-135M-Instruct's context (prompt + completion tokens)
CONTEXT = 8192
#: how long a provider may take per token of a request's cap before it counts as timed out
#: (added to the provider timeout: a whole answer, or a stream's prefill, arrives in one read)
SECONDS_PER_TOKEN = 0.1


class StreamBroken(Exception):
    """A provider's stream that ended, or said something, before a valid final receipt."""


class _Stream(StreamingResponse):
    """A streaming response that runs ``on_close`` however it ends (even never started)."""

    def __init__(self, content: AsyncIterator[bytes], on_close: Callable[[], None]) -> None:
        super().__init__(content, media_type="text/event-stream", headers={"cache-control": "no-cache"})
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_close()


class _Reservations:
    """A request's reservations against its key's cap (one per choice): given back once
    (``release``), unless its answers were recorded first (``settle``: the charges stay, trimmed to
    the receipts' values)."""

    def __init__(self, engine: Any, charge_ids: list[int] | None = None) -> None:
        self._engine = engine
        self.ids: list[int] = charge_ids or []
        self._done = False

    def release(self) -> None:
        if not self._done:
            self._done = True
            for charge_id in self.ids:
                store.release(self._engine, charge_id)

    def settle(self) -> None:
        self._done = True


def _sse(obj: dict[str, Any] | str) -> bytes:
    return b"data: " + (obj if isinstance(obj, str) else json.dumps(obj, separators=(",", ":"))).encode() + b"\n\n"


async def tokenizer(ctx: Any) -> Any:
    if not ctx._chat_tokenizer.loaded:  # loaded once, off the event loop; concurrent callers wait for it
        await asyncio.to_thread(ctx.chat_tokenizer)
    return ctx.chat_tokenizer()


def check_generative(ctx: Any, model: Any) -> None:
    """Only SmolLM2 generates: the gateway's tokenizer is the one of the GGUF whose content hash
    is the registered id."""
    from common.chat_tokenizer import model_hash

    try:
        llm_id = model_hash()
    except FileNotFoundError as exc:
        raise UnavailableError(f"this gateway cannot tokenize for text generation: {exc}",
                               reason="generation_unavailable") from None
    if model.model_id.lower() != "0x" + llm_id.hex():
        raise BadRequestError(f"model {model.name or model.model_id} does not generate text",
                              reason="model_not_generative", param="model")


def check_answer(plane: serving.ServingPlane, cand: Candidate, hearth: Any, pr: PaymentReceipt, model_id: bytes,
                 req: gen.Resolved, tok: Any) -> tuple[WorkReceipt, bytes, int, list[int], str, bytes, bytes]:
    """The provider's ``hearth`` object checked against what was asked and paid (see the module
    docstring): (work receipt, signature, seed, output ids, finish reason, input blob, output blob)."""
    work = work_receipt_from_json(hearth["receipt"])
    wsig = bytes.fromhex(str(hearth["signature"])[2:])
    seed = hearth["seed"]
    ids = hearth["output_ids"]
    reason = hearth["finish_reason"]
    if type(seed) is not int or not 0 <= seed <= gen.MAX_SEED or (req.seed is not None and seed != req.seed):
        raise serving.AnswerError(f"seed {seed!r} is not the request's")
    if not isinstance(ids, list) or not 1 <= len(ids) <= req.max_tokens or \
            not all(type(t) is int and 0 <= t < tok.vocab_size for t in ids):
        raise serving.AnswerError("output_ids are not 1 to max_tokens token ids")
    if reason not in gen.FINISH_REASONS:
        raise serving.AnswerError(f"finish reason {reason!r}")
    input_blob = req.encode(seed)
    output_blob = gen.encode_output(ids, reason)
    if recover_work_receipt(work, wsig, plane.chain_id, plane.settlement).lower() != cand.address.lower():
        raise serving.AnswerError("the work receipt is not signed by the provider")
    units = len(req.prompt_ids) + len(ids)
    checks = {"requestId": work.request_id == pr.request_id, "payer": work.payer.lower() == pr.payer.lower(),
              "modelId": work.model_id == model_id, "inputHash": work.input_hash == bytes(keccak(input_blob)),
              "outputHash": work.output_hash == bytes(keccak(output_blob)), "units": work.units == units,
              "value": work.value == units * cand.price and work.value <= pr.value}
    bad = [k for k, v in checks.items() if not v]
    if bad:
        raise serving.AnswerError(f"the work receipt's {', '.join(bad)} do not match")
    return work, wsig, seed, ids, reason, input_blob, output_blob


async def generate(ctx: Any, key: store.ApiKey, body: gen.ChatCompletionsIn | gen.CompletionsIn, model: Any,
                   region: str | None, claim: idempotency.Claim | None = None) -> JSONResponse | StreamingResponse:
    """Forwards to providers in routing order until one answers; ``claim``: the request's
    idempotency key (not streamed), its answer stored with the charge. ``n > 1``: see
    :func:`_generate_n`."""
    plane: serving.ServingPlane = ctx.serving
    t_start = time.perf_counter()
    chat = isinstance(body, gen.ChatCompletionsIn)
    tok = await tokenizer(ctx)
    try:
        req = gen.resolve(body, tok, CONTEXT)
    except gen.GenerationRequestError as exc:
        raise BadRequestError(exc.message, reason=exc.reason, param=exc.param) from None
    n = body.choices()
    if n > 1:
        if req.seed is not None and req.seed + n - 1 > gen.MAX_SEED:
            raise BadRequestError(f"with n = {n} the choices' seeds are seed .. seed + {n - 1}, which must stay "
                                  f"within [0, {gen.MAX_SEED}]", reason="invalid_seed", param="seed")
        return await _generate_n(ctx, key, body, model, region, claim, req, tok, n, t_start)
    order = plane.router.order(model.model_id, region)[: plane.max_attempts]
    if not order:
        raise UnavailableError(f"no provider serves {model.name or model.model_id} on the serving plane now",
                               reason="no_provider")
    cap_units = len(req.prompt_ids) + req.max_tokens
    reserve = max(1, cap_units * max(c.price for c in order))
    charge_id = store.reserve(ctx.db_engine, key.key_hash, reserve, store.now(), status="serving")
    if charge_id is None:
        raise SpendingCapError(f"this request costs up to {reserve} ({cap_units} tokens with max_tokens); the key "
                               f"has {max(0, key.spending_cap - key.spent)} left of its cap", cost=str(reserve))
    res = _Reservations(ctx.db_engine, [charge_id])
    model_b = bytes.fromhex(model.model_id[2:])
    try:
        got = await _forward(ctx, key, body, req, order, model_b, tok, bool(body.stream))
        if isinstance(got, _Handover):
            return _Stream(_relay(ctx, key, charge_id, got, model, model_b, req, tok, chat, body.include_usage(),
                                  res.settle, res.release), res.release)
        return _answer(ctx, key, charge_id, got.cand, got.checked, model, req, tok, chat, got.attempts, got.ms,
                       t_start, res.release, res.settle, claim, got.logprobs)
    except BaseException:
        res.release()
        raise


@dataclass(frozen=True)
class _Handover:
    """A provider's stream that answered 200: relayed from here on."""

    cand: Candidate
    resp: httpx.Response
    pr: PaymentReceipt
    attempts: int
    t0: float


@dataclass(frozen=True)
class _Checked:
    """A provider's whole answer, its receipt checked (not yet recorded)."""

    cand: Candidate
    checked: tuple[WorkReceipt, bytes, int, list[int], str, bytes, bytes]
    logprobs: Any
    attempts: int
    ms: float


async def _forward(ctx: Any, key: store.ApiKey, body: gen.ChatCompletionsIn | gen.CompletionsIn, req: gen.Resolved,
                   order: list[Candidate], model_b: bytes, tok: Any, stream: bool) -> _Handover | _Checked:
    """Sends one choice's request (a fresh request id) to providers in ``order`` until one
    answers: its stream (``stream``) or its checked answer; else raises the last refusal.
    Reserves and records nothing."""
    plane: serving.ServingPlane = ctx.serving
    chat = isinstance(body, gen.ChatCompletionsIn)
    request_id = secrets.token_bytes(32)
    cap_units = len(req.prompt_ids) + req.max_tokens
    fwd: dict[str, Any] = {"model": "0x" + model_b.hex(), "max_tokens": req.max_tokens,
                           "temperature": req.temperature, "top_p": req.top_p, "top_k": req.top_k,
                           "stop": list(req.stop), "stream": stream}
    if req.seed is not None:
        fwd["seed"] = req.seed
    if chat:
        assert isinstance(body, gen.ChatCompletionsIn)
        fwd["messages"] = body.chat()
        if req.logprobs is not None:
            fwd["logprobs"], fwd["top_logprobs"] = True, req.logprobs
    else:
        fwd["prompt"] = req.prompt_ids  # token ids: the provider reads exactly these
        if req.logprobs is not None:
            fwd["logprobs"] = req.logprobs
    path = "/v1/chat/completions" if chat else "/v1/completions"
    read_timeout = httpx.Timeout(plane.timeout_s, read=plane.timeout_s + SECONDS_PER_TOKEN * cap_units)
    last: GatewayError | None = None
    http = plane.http()
    for attempts, cand in enumerate(order, 1):
        pr = PaymentReceipt(key.wallet, cand.address, request_id, cap_units * cand.price, int(time.time()))
        sig = sign_payment_receipt(plane.signer_key, pr, plane.chain_id, plane.escrow)
        plane.router.begin(cand.address)
        t0 = time.perf_counter()
        ok, handed_over = False, False
        try:
            resp = await http.send(http.build_request(
                "POST", cand.endpoint + path, json=fwd, timeout=read_timeout,
                headers={PAYMENT_HEADER: encode_payment(pr, sig), AGGREGATOR_HEADER: plane.public_url}),
                stream=True)
            try:
                if resp.status_code == 200 and stream:
                    ok = handed_over = True
                    return _Handover(cand, resp, pr, attempts, t0)
                await resp.aread()
            finally:
                if not handed_over:
                    await resp.aclose()
            ms = (time.perf_counter() - t0) * 1000
            if resp.status_code == 200:
                answer = resp.json()
                checked = check_answer(plane, cand, answer["hearth"], pr, model_b, req, tok)
                logprobs = answer["choices"][0].get("logprobs")
                gen.check_logprobs(chat, logprobs, checked[3], req.logprobs, tok)
                ok = True
                return _Checked(cand, checked, logprobs, attempts, ms)
            err = serving._error_of(resp)
            if resp.status_code == 402:
                ok = True
                last = PaymentError(f"provider {cand.address} refused payment: {err[1]}", reason=err[0],
                                    provider=cand.address)
                if err[0] in serving.PAYER_WIDE:
                    break
            elif resp.status_code in (400, 404, 422):
                ok = True  # healthy, but cannot take this request (its cache, its models)
                last = BadRequestError(f"provider {cand.address}: {err[1]}", reason=err[0], provider=cand.address)
            else:
                last = serving.NoProviderAnsweredError(
                    f"provider {cand.address} answered {resp.status_code}: {err[1]}", provider=cand.address)
        except httpx.TimeoutException:
            last = serving.NoProviderAnsweredError(f"provider {cand.address} timed out after {plane.timeout_s}s",
                                                   provider=cand.address)
        except httpx.TransportError as exc:
            last = serving.NoProviderAnsweredError(f"provider {cand.address} is unreachable: {exc}",
                                                   provider=cand.address)
        except (WireError, serving.AnswerError, ValueError, KeyError, TypeError, IndexError) as exc:
            last = serving.NoProviderAnsweredError(f"provider {cand.address} answered wrongly: {exc}",
                                                   provider=cand.address, reason="bad_provider_answer")
            log.warning("provider %s answered request %s wrongly: %s", cand.address, request_id.hex(), exc)
        finally:
            if not handed_over:
                plane.router.end(cand.address, ok=ok, latency_ms=(time.perf_counter() - t0) * 1000 if ok else None)
        if attempts < len(order):
            plane.retried += 1
    assert last is not None
    raise last


async def _generate_n(ctx: Any, key: store.ApiKey, body: gen.ChatCompletionsIn | gen.CompletionsIn, model: Any,
                      region: str | None, claim: idempotency.Claim | None, req: gen.Resolved, tok: Any, n: int,
                      t_start: float) -> JSONResponse | StreamingResponse:
    """``n`` choices as ``n`` independent serving-plane requests (each its own request id,
    payment and work receipt, routed on its own, with seed ``seed + i`` when the client gave a
    seed), run at once and merged into one answer. Each is reserved and charged on its own, all
    recorded in one transaction: if any of them fails (after its retries) nothing is recorded,
    every reservation is released and the client is charged nothing, as for a failed single
    request. Streamed, the ``n`` streams are opened the same way and relayed in one
    (:func:`_relay_n`), which records them all or none."""
    plane: serving.ServingPlane = ctx.serving
    chat = isinstance(body, gen.ChatCompletionsIn)
    full = plane.router.order(model.model_id, region)
    if not full:
        raise UnavailableError(f"no provider serves {model.name or model.model_id} on the serving plane now",
                               reason="no_provider")
    cap_units = len(req.prompt_ids) + req.max_tokens
    each = max(1, cap_units * max(c.price for c in full))
    model_b = bytes.fromhex(model.model_id[2:])
    subs = [req if req.seed is None else req.model_copy(update={"seed": req.seed + i}) for i in range(n)]
    res = _Reservations(ctx.db_engine)
    handed_over = False  # to a stream, which gives the reservations back if it records nothing
    results: list[Any] = []
    try:
        for _ in range(n):
            charge_id = store.reserve(ctx.db_engine, key.key_hash, each, store.now(), status="serving")
            if charge_id is None:
                raise SpendingCapError(f"these {n} choices cost up to {each * n} ({cap_units} tokens with max_tokens "
                                       f"each); the key has {max(0, key.spending_cap - key.spent)} left of its cap",
                                       cost=str(each * n))
            res.ids.append(charge_id)

        async def one(i: int) -> _Checked | _Handover:
            order = plane.router.order(model.model_id, region)[: plane.max_attempts]  # with the others in flight
            return await _forward(ctx, key, body, subs[i], order or full[: plane.max_attempts], model_b, tok,
                                  bool(body.stream))

        results = await asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r
        if body.stream:
            streams = [r for r in results if isinstance(r, _Handover)]
            response = _Stream(_relay_n(ctx, key, res.ids, each, streams, subs, model, model_b, tok, chat,
                                        body.include_usage(), res.settle, res.release), res.release)
            handed_over = True
            return response
        got = [r for r in results if isinstance(r, _Checked)]
        choices, hearths = [], []
        usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        for i, g in enumerate(got):
            work, wsig, seed, ids, reason, _, _ = g.checked
            choices.append(_choice(i, chat, gen.completion_text(tok, ids, req.stop), reason, g.logprobs))
            usage["prompt_tokens"] += len(req.prompt_ids)
            usage["completion_tokens"] += len(ids)
            usage["total_tokens"] += work.units
            hearths.append(_hearth(g.cand, work, wsig, seed, ids, g.attempts, {"provider_round_trip": round(g.ms, 2)}))
        first = got[0].checked[0]
        answer = _completion(first, chat, model, choices, usage, {
            "path": "serving", "verified": True, "cost": str(sum(g.checked[0].value for g in got)),
            "timing_ms": {"total": round((time.perf_counter() - t_start) * 1000, 2)}, "choices": hearths})
        try:
            serving._record_many(ctx, key, [serving.Served(c, g.cand, g.checked[0], g.checked[5], g.checked[6],
                                                           g.attempts, g.ms, reserved=each)
                                            for c, g in zip(res.ids, got, strict=True)],
                                 also=lambda c: idempotency.finish(c, claim, answer))
        except idempotency.IdempotencyLostError:
            raise
        except Exception:
            log.exception("request %s (n = %d) answered but not recorded", first.request_id.hex(), n)
            raise UnavailableError("the answer could not be recorded; nothing was charged",
                                   reason="record_failed") from None
        res.settle()
        plane.served += n
        return JSONResponse(answer)
    finally:
        if not handed_over:
            res.release()  # nothing once recorded
            for r in results:  # streams opened beside one that failed to open (none once recorded)
                if isinstance(r, _Handover):
                    await r.resp.aclose()
                    plane.router.end(r.cand.address, ok=True, answered=False)


def _hearth(cand: Candidate, work: WorkReceipt, wsig: bytes, seed: int, ids: list[int], attempts: int,
            timing: dict[str, Any]) -> dict[str, Any]:
    """What the client can check the answer with: the receipt, the seed (send it again to
    reproduce the answer) and the output ids the receipt's output hash covers."""
    return {"path": "serving", "provider": cand.address, "request_id": "0x" + work.request_id.hex(),
            "receipt": receipt_json(work), "receipt_signature": "0x" + wsig.hex(), "cost": str(work.value),
            "attempts": attempts, "verified": True, "seed": seed, "output_ids": ids, "timing_ms": timing}


def _choice(index: int, chat: bool, text: str, reason: str, logprobs: Any) -> dict[str, Any]:
    """One choice of a whole (not streamed) answer, in OpenAI's chat or text completion shape."""
    c: dict[str, Any] = {"index": index, "finish_reason": reason, "logprobs": logprobs}
    if chat:
        c["message"] = {"role": "assistant", "content": text}
    else:
        c["text"] = text
    return c


def _completion(first: WorkReceipt, chat: bool, model: Any, choices: list[dict[str, Any]], usage: dict[str, int],
                hearth: dict[str, Any]) -> dict[str, Any]:
    """A whole answer: named after its (first) choice's request id and runtime."""
    return {
        "id": ("chatcmpl-" if chat else "cmpl-") + first.request_id.hex()[:24],
        "object": "chat.completion" if chat else "text_completion", "created": int(time.time()),
        "model": model.name or model.model_id, "choices": choices, "usage": usage,
        "system_fingerprint": "hearth-" + first.runtime_hash.hex()[:16], "hearth": hearth}


def _answer(ctx: Any, key: store.ApiKey, charge_id: int, cand: Candidate, checked: Any, model: Any,
            req: gen.Resolved, tok: Any, chat: bool, attempts: int, ms: float, t_start: float,
            release: Callable[[], None], settled: Callable[[], None],
            claim: idempotency.Claim | None = None, logprobs: Any = None) -> JSONResponse:
    work, wsig, seed, ids, reason, input_blob, output_blob = checked
    choice = _choice(0, chat, gen.completion_text(tok, ids, req.stop), reason, logprobs)
    usage = {"prompt_tokens": len(req.prompt_ids), "completion_tokens": len(ids), "total_tokens": work.units}
    timing = {"total": round((time.perf_counter() - t_start) * 1000, 2), "provider_round_trip": round(ms, 2)}
    answer = _completion(work, chat, model, [choice], usage, _hearth(cand, work, wsig, seed, ids, attempts, timing))
    try:
        serving._record(ctx, key, charge_id, cand, work, input_blob, output_blob, attempts, ms,
                        also=lambda c: idempotency.finish(c, claim, answer))
        settled()
    except idempotency.IdempotencyLostError:
        release()
        raise
    except Exception:
        release()
        log.exception("request %s answered by %s but not recorded", work.request_id.hex(), cand.address)
        raise UnavailableError("the answer could not be recorded; nothing was charged", reason="record_failed") \
            from None
    ctx.serving.served += 1
    return JSONResponse(answer)


@dataclass(frozen=True)
class _Delta:
    """A piece of one choice's stream: text and/or log probabilities."""

    text: str | None
    logprobs: Any


@dataclass(frozen=True)
class _Final:
    """One choice's stream ended with its receipt checked (not yet recorded)."""

    checked: tuple[WorkReceipt, bytes, int, list[int], str, bytes, bytes]
    logprobs: Any
    ms: float


async def _read_choice(plane: serving.ServingPlane, got: _Handover, model_b: bytes, req: gen.Resolved, tok: Any,
                       chat: bool) -> AsyncIterator[_Delta | _Final]:
    """One provider stream's pieces as they arrive, then its final receipt checked against the
    request and the streamed text and log probabilities (:class:`_Final`, the last item). Raises
    (:class:`StreamBroken`, or the check's error) when it ends or says anything else. Records
    nothing and leaves the response open."""
    # every log probability relayed, checked against the receipted ids at the end
    streamed_lps: dict[str, list[Any]] = {k: [] for k in (
        ("content",) if chat else ("tokens", "token_logprobs", "top_logprobs", "text_offset"))}

    def relayed(lps: Any) -> Any:
        if lps is None:
            return None
        if req.logprobs is None or not isinstance(lps, dict):
            raise StreamBroken("log probabilities that were not asked for, or not an object")
        for k, acc in streamed_lps.items():
            part = lps.get(k)
            if not isinstance(part, list):
                raise StreamBroken(f"log probabilities without a {k!r} list")
            acc.extend(part)
        return lps

    sent = ""
    async for line in got.resp.aiter_lines():
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            break
        msg = json.loads(data)
        if not isinstance(msg, dict):
            raise StreamBroken("a stream event that is not an object")
        if msg.get("error"):
            err = msg["error"]
            raise StreamBroken(f"the provider failed: {err.get('message') if isinstance(err, dict) else err}")
        if "hearth" in msg:
            checked = check_answer(plane, got.cand, msg["hearth"], got.pr, model_b, req, tok)
            if sent != gen.completion_text(tok, checked[3], req.stop):
                raise StreamBroken("the streamed text is not the text of the receipted tokens")
            final: Any = (msg.get("choices") or [{}])[0]
            last_lps = relayed(final.get("logprobs") if isinstance(final, dict) else None)
            gen.check_logprobs(chat, streamed_lps if req.logprobs is not None else None, checked[3], req.logprobs,
                               tok)
            yield _Final(checked, last_lps, (time.perf_counter() - got.t0) * 1000)
            return
        choices = msg.get("choices") or []
        if not choices:
            continue
        c = choices[0]
        delta = (c.get("delta") or {}).get("content") if chat else c.get("text")
        lps = relayed(c.get("logprobs"))
        if delta or lps is not None:
            sent += str(delta or "")
            yield _Delta(str(delta) if delta else None, lps)
    raise StreamBroken("the provider's stream ended before its receipt")


class _Chunks:
    """The SSE objects of one streamed response (one ``id`` for all its choices)."""

    def __init__(self, request_id: bytes, model: Any, chat: bool, include_usage: bool) -> None:
        self.ident = ("chatcmpl-" if chat else "cmpl-") + request_id.hex()[:24]
        self.obj = "chat.completion.chunk" if chat else "text_completion"
        self.created = int(time.time())
        self.name = model.name or model.model_id
        self.chat, self.include_usage = chat, include_usage

    def _chunk(self, choices: list[dict[str, Any]], **extra: Any) -> bytes:
        return _sse({"id": self.ident, "object": self.obj, "created": self.created, "model": self.name,
                     "choices": choices, **({"usage": None} if self.include_usage else {}), **extra})

    def choice(self, index: int, delta: str | None, reason: str | None, logprobs: Any = None,
               **extra: Any) -> bytes:
        c: dict[str, Any] = {"index": index, "finish_reason": reason, "logprobs": logprobs}
        if self.chat:
            c["delta"] = {} if delta is None else {"content": delta}
        else:
            c["text"] = delta or ""
        return self._chunk([c], **extra)

    def role(self, index: int) -> bytes:
        """A chat stream's first chunk of a choice: the assistant's role."""
        return self._chunk([{"index": index, "finish_reason": None, "logprobs": None,
                             "delta": {"role": "assistant", "content": ""}}])

    def usage(self, prompt_tokens: int, completion_tokens: int, total_tokens: int) -> bytes:
        return self._chunk([], usage={"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                                      "total_tokens": total_tokens})


def _broken(exc: Exception, got: _Handover) -> bytes:
    """The ``error`` event that ends a stream one of whose providers failed: nothing charged."""
    reason = "provider_failed_mid_stream"
    if isinstance(exc, serving.AnswerError | WireError | KeyError | TypeError | ValueError):
        reason = "bad_provider_answer"
    log.warning("request %s: stream from %s broken: %s", got.pr.request_id.hex(), got.cand.address, exc)
    return _sse({"error": {"message": f"the provider's stream broke off ({exc}); nothing was charged",
                           "type": "api_error", "reason": reason, "code": reason}})


async def _relay(ctx: Any, key: store.ApiKey, charge_id: int, got: _Handover, model: Any, model_b: bytes,
                 req: gen.Resolved, tok: Any, chat: bool, include_usage: bool,
                 settled: Callable[[], None], release: Callable[[], None]) -> AsyncIterator[bytes]:
    """Re-emits a provider's stream chunk by chunk; records it when its final receipt checks out
    (then ``settled()``: the charge stays, trimmed to the receipt's value). A broken stream gives
    the reservation back (``release()``) before its error event goes out, so a client that reads
    the error finds nothing charged; whoever runs this releases it if it ends otherwise unsettled."""
    plane: serving.ServingPlane = ctx.serving
    out = _Chunks(got.pr.request_id, model, chat, include_usage)
    ok = False
    try:
        if chat:
            yield out.role(0)
        async for piece in _read_choice(plane, got, model_b, req, tok, chat):
            if isinstance(piece, _Delta):
                yield out.choice(0, piece.text, None, piece.logprobs)
                continue
            work, wsig, seed, ids, reason, input_blob, output_blob = piece.checked
            serving._record(ctx, key, charge_id, got.cand, work, input_blob, output_blob, got.attempts, piece.ms)
            settled()
            ok = True
            plane.served += 1
            h = _hearth(got.cand, work, wsig, seed, ids, got.attempts, {"total": round(piece.ms, 2)})
            yield out.choice(0, None, reason, piece.logprobs, hearth=h)
            if include_usage:
                yield out.usage(len(req.prompt_ids), len(ids), work.units)
            yield _sse("[DONE]")
    except Exception as exc:  # noqa: BLE001 - the stream is open: end it with an error event, charge nothing
        release()
        yield _broken(exc, got)
    finally:
        await got.resp.aclose()
        plane.router.end(got.cand.address, ok=ok,
                         latency_ms=(time.perf_counter() - got.t0) * 1000 if ok else None)


async def _relay_n(ctx: Any, key: store.ApiKey, charges: list[int], each: int, streams: list[_Handover],
                   subs: list[gen.Resolved], model: Any, model_b: bytes, tok: Any, chat: bool, include_usage: bool,
                   settled: Callable[[], None], release: Callable[[], None]) -> AsyncIterator[bytes]:
    """``n`` providers' streams relayed in one, their chunks interleaved as they arrive, each with
    its choice's ``index``. The choices' final chunks (finish reason, ``hearth``) come once every
    stream ended with its receipt checked and all were recorded in one transaction (then
    ``settled()``); a stream that breaks ends the whole response with an ``error`` event, closes
    the others, and nothing is recorded: the reservations are given back (``release()``) before
    the error event goes out; whoever runs this releases them if it ends otherwise unsettled."""
    plane: serving.ServingPlane = ctx.serving
    n = len(streams)
    out = _Chunks(streams[0].pr.request_id, model, chat, include_usage)
    queue: asyncio.Queue[tuple[int, _Delta | _Final | Exception]] = asyncio.Queue()

    async def pump(i: int) -> None:
        try:
            async for piece in _read_choice(plane, streams[i], model_b, subs[i], tok, chat):
                await queue.put((i, piece))
        except Exception as exc:  # noqa: BLE001 - handed to the relay, which ends the stream with it
            await queue.put((i, exc))

    tasks = [asyncio.create_task(pump(i)) for i in range(n)]
    finals: dict[int, _Final] = {}
    failed: set[int] = set()
    closed = False

    async def close() -> None:
        """Stops reading and closes every provider stream; done before the last event goes out,
        since a client that has it may hang up and leave this generator to be finalized late."""
        nonlocal closed
        if closed:
            return
        closed = True
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for i, s in enumerate(streams):
            await s.resp.aclose()
            done = i in finals
            plane.router.end(s.cand.address, ok=i not in failed,
                             latency_ms=finals[i].ms if done and len(finals) == n else None, answered=done)

    try:
        if chat:
            for i in range(n):
                yield out.role(i)
        while len(finals) < n:
            i, piece = await queue.get()
            if isinstance(piece, Exception):
                failed.add(i)
                await close()
                release()
                yield _broken(piece, streams[i])
                return
            if isinstance(piece, _Delta):
                yield out.choice(i, piece.text, None, piece.logprobs)
            else:
                finals[i] = piece
        got = [finals[i] for i in range(n)]
        await close()
        try:
            serving._record_many(ctx, key, [
                serving.Served(c, s.cand, f.checked[0], f.checked[5], f.checked[6], s.attempts, f.ms, reserved=each)
                for c, s, f in zip(charges, streams, got, strict=True)])
        except Exception as exc:  # noqa: BLE001 - the stream is open: end it with an error event
            log.exception("request %s (n = %d) streamed but not recorded", streams[0].pr.request_id.hex(), n)
            release()
            yield _sse({"error": {"message": f"the answer could not be recorded ({exc}); nothing was charged",
                                  "type": "api_error", "reason": "record_failed", "code": "record_failed"}})
            return
        settled()
        plane.served += n
        usage = [0, 0, 0]
        for i, (s, f) in enumerate(zip(streams, got, strict=True)):
            work, wsig, seed, ids, reason, _, _ = f.checked
            yield out.choice(i, None, reason, f.logprobs,
                             hearth=_hearth(s.cand, work, wsig, seed, ids, s.attempts, {"total": round(f.ms, 2)}))
            usage = [usage[0] + len(subs[i].prompt_ids), usage[1] + len(ids), usage[2] + work.units]
        if include_usage:
            yield out.usage(*usage)
        yield _sse("[DONE]")
    finally:
        await close()
