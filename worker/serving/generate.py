"""Text generation on the provider endpoint: ``POST /v1/chat/completions`` and
``POST /v1/completions`` (OpenAI's shapes, streamed or not), paid like embeddings.

Payment: prompt + completion tokens at this provider's quote for SmolLM2. The completion's
length is not known when the gateway signs, so the ``PaymentReceipt`` is a **cap**: its value
must be exactly ``(prompt tokens + max_tokens) x price`` (``402 wrong_value`` otherwise), and the
lane must cover it while the request runs. The ``WorkReceipt`` this endpoint signs carries the
**actual** units and value, ``(prompt + output tokens) x price <= cap``; the ledger records the
work value, and the gateway's vouchers sum the work values it checked. So the provider is never
paid more than it produced, and a request that ends without a recorded, answered receipt
(provider died mid-stream, client went away) is paid nothing: the leaf is written only after
the last token, before the final event leaves.

What the receipt commits to (:mod:`common.generation`): ``inputHash`` is keccak of the
canonical request (prompt token ids, ``max_tokens``, temperature, top-p, top-k, the seed, the
stop strings), ``outputHash`` keccak of the canonical output (output token ids and the finish
reason). When the client gives no seed this endpoint picks one and returns it (``hearth.seed``).

Log probabilities (chat ``logprobs`` / ``top_logprobs``, completions ``logprobs``) are the
engine's raw ones (log-softmax of each sampled position's fp32 logits row, see
:mod:`worker.model.llm.sampling`), one entry per output id, in OpenAI's shapes
(:func:`common.generation.chat_logprobs`, :func:`~common.generation.completion_logprobs`); a
stream's chunk carries the entries of the tokens since the previous chunk. The receipt does
not cover them (they do not change the output); they are reproducible bit for bit by
teacher-forced prefill of the committed tokens. ``n > 1`` is refused: one request per choice.

Streams are server-sent events of ``chat.completion.chunk`` (or ``text_completion``) objects,
one per token that adds text; the last chunk with a ``finish_reason`` also carries the ``hearth``
object (receipt and signature), then the usage chunk when ``stream_options.include_usage``, then
``data: [DONE]``. Text that could be the start of a stop string, or an incomplete UTF-8
character, is held back until the next token decides it.

Requests run in :class:`GenerationService`: one engine thread stepping a continuous batch
(requests join and leave at every step); tokens are handed to each request's asyncio queue.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from eth_utils import keccak
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from common import generation as gen
from contracts.serving import work_receipt_json
from contracts.settlement import WorkReceipt, sign_work_receipt

if TYPE_CHECKING:
    from worker.model.llm import ChatTokenizer, Engine, SamplingParams, TokenEvent
    from worker.serving.provider import ProviderService

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LlmModel:
    """What this endpoint generates with, as the registry names it."""

    model_id: bytes
    name: str
    runtime_hash: bytes


class GenerationService:
    """One engine thread: requests are added and aborted through an inbox (the engine is not
    thread-safe), each step's tokens go to the requests' callbacks."""

    def __init__(self, engine: Engine, tokenizer: ChatTokenizer, idle_wait_s: float = 0.05) -> None:
        self.engine = engine
        self.tokenizer = tokenizer
        self.context = engine.config.max_positions
        self.idle_wait_s = idle_wait_s
        self._inbox: list[tuple[str, Any]] = []
        self._sinks: dict[str, Callable[[TokenEvent | BaseException], None]] = {}
        self._cond = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="llm-engine", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(30)

    def healthy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def submit(self, rid: str, prompt_ids: list[int], params: SamplingParams,
               sink: Callable[[TokenEvent | BaseException], None]) -> None:
        with self._cond:
            self._inbox.append(("add", (rid, prompt_ids, params, sink)))
            self._cond.notify()

    def abort(self, rid: str) -> None:
        with self._cond:
            self._inbox.append(("abort", rid))
            self._cond.notify()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._inbox and not self.engine.has_work and not self._stop:
                    self._cond.wait(self.idle_wait_s)
                if self._stop:
                    return
                taken, self._inbox = self._inbox, []
            for op, arg in taken:
                if op == "add":
                    rid, prompt, params, sink = arg
                    try:
                        self.engine.add(rid, prompt, params)
                        self._sinks[rid] = sink
                    except Exception as exc:  # noqa: BLE001 - handed to the request
                        sink(exc)
                else:
                    self.engine.abort(arg)
                    self._sinks.pop(arg, None)
            if not self.engine.has_work:
                continue
            try:
                events = self.engine.step()
            except Exception as exc:  # noqa: BLE001 - every running request fails; the engine is unusable
                self.error = exc
                log.exception("the LLM engine failed")
                for sink in self._sinks.values():
                    sink(exc)
                return
            self.engine.pop_finished()
            for ev in events:
                s = self._sinks.get(ev.request_id)
                if s is not None:
                    s(ev)
                if ev.finished:
                    self._sinks.pop(ev.request_id, None)

    async def tokens(self, rid: str, prompt_ids: list[int], params: SamplingParams) -> AsyncGenerator[TokenEvent]:
        """The request's tokens as they are sampled; closing the iterator early aborts it."""
        loop = asyncio.get_running_loop()
        q: asyncio.Queue[TokenEvent | BaseException] = asyncio.Queue()

        def sink(ev: TokenEvent | BaseException) -> None:
            loop.call_soon_threadsafe(q.put_nowait, ev)

        self.submit(rid, prompt_ids, params, sink)
        finished = False
        try:
            while True:
                ev = await q.get()
                if isinstance(ev, BaseException):
                    raise ev
                yield ev
                if ev.finished:
                    finished = True
                    return
        finally:
            if not finished:
                self.abort(rid)


def _held_back(text: str, stop: tuple[str, ...]) -> int:
    """How many trailing characters of ``text`` a stream must not send yet: an incomplete UTF-8
    character (decoded as U+FFFD) or the start of a stop string."""
    n = 0
    while n < len(text) and text[len(text) - 1 - n] == "\ufffd":
        n += 1
    keep = n
    for s in stop:
        for k in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:k]):
                keep = max(keep, k)
                break
    return keep


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


def sse(obj: dict[str, Any] | str) -> bytes:
    return b"data: " + (obj if isinstance(obj, str) else json.dumps(obj, separators=(",", ":"))).encode() + b"\n\n"


class GenerationEndpoint:
    """The two generation routes of a :class:`~worker.serving.provider.ProviderService`."""

    def __init__(self, provider: ProviderService, service: GenerationService, model: LlmModel) -> None:
        self.p = provider
        self.service = service
        self.model = model

    def serves(self, name: str) -> bool:
        return name in (self.model.name, "0x" + self.model.model_id.hex())

    async def handle(self, body: gen.ChatCompletionsIn | gen.CompletionsIn, payment: str | None,
                     aggregator: str | None) -> dict[str, Any] | StreamingResponse:
        from worker.model.llm import SamplingParams
        from worker.serving.provider import Refusal

        t0 = time.perf_counter()
        chat = isinstance(body, gen.ChatCompletionsIn)
        if not self.serves(body.model):
            raise Refusal(404, "model_not_found", f"this provider does not serve {body.model!r}")
        try:
            req = gen.resolve(body, self.service.tokenizer, self.service.context)
        except gen.GenerationRequestError as exc:
            raise Refusal(400, exc.reason, exc.message, param=exc.param) from None
        if body.choices() > 1:
            raise Refusal(400, "unsupported_n", "a provider answers one choice per request: send one request per "
                          "choice, each with its own seed (a gateway splits n > 1 this way)", param="n")
        cap_units = len(req.prompt_ids) + req.max_tokens
        if self.service.engine.cache.pages_for(cap_units) > self.service.engine.cache.num_pages:
            raise Refusal(400, "context_length_exceeded", f"prompt + max_tokens = {cap_units} tokens do not fit "
                          "this provider's KV cache", param="max_tokens")
        receipt, signer, pay_sig = self.p.check_payment(payment, cap_units, self.model.model_id)
        price = self.p.view.price(self.model.model_id)
        seed = req.seed if req.seed is not None else secrets.randbelow(gen.MAX_SEED + 1)
        params = SamplingParams(max_tokens=req.max_tokens, temperature=req.temperature, top_p=req.top_p,
                                top_k=req.top_k, seed=seed, stop=req.stop, logprobs=req.logprobs)
        self.p.reserve(receipt.payer, receipt.request_id, receipt.value)
        rid = receipt.request_id.hex()
        recorded: list[int] = []  # the recorded leaf's value, once it is on disk
        released: list[bool] = []

        def release() -> None:
            if not released:
                released.append(True)
                self.p.unreserve(receipt.payer, receipt.request_id, receipt.value, recorded[0] if recorded else None)

        created = int(time.time())
        ident = ("chatcmpl-" if chat else "cmpl-") + rid[:24]
        obj = "chat.completion.chunk" if chat else "text_completion"
        tokens = self.service.tokens(rid, list(req.prompt_ids), params)
        tok = self.service.tokenizer

        def shaped(entries: list[gen.RawLogprobs], offset: int = 0) -> dict[str, Any] | None:
            """The OpenAI shape of some tokens' log probabilities (None when not asked for)."""
            if req.logprobs is None:
                return None
            if chat:
                return {"content": gen.chat_logprobs(tok, entries)}
            return gen.completion_logprobs(tok, entries, offset)

        async def finish(output: list[int], reason: str) -> tuple[dict[str, Any], dict[str, Any]]:
            """Sign, record durably, and return (hearth object, usage) of a finished request."""
            units = len(req.prompt_ids) + len(output)
            value = units * price
            work = WorkReceipt(receipt.request_id, receipt.payer, self.model.model_id,
                               bytes(keccak(req.encode(seed))), bytes(keccak(gen.encode_output(output, reason))),
                               units, value, self.model.runtime_hash, self.p.config.numerics_class)
            wsig = sign_work_receipt(self.p.key, work, self.p.s.chain_id, self.p.s.batches.address)
            await asyncio.wrap_future(self.p.ledger.record(receipt, signer, pay_sig, work, wsig, aggregator))
            recorded.append(value)
            self.p.served_requests += 1
            usage = {"prompt_tokens": len(req.prompt_ids), "completion_tokens": len(output), "total_tokens": units}
            hearth = {"provider": self.p.address, "receipt": work_receipt_json(work), "signature": "0x" + wsig.hex(),
                      "seed": seed, "output_ids": output, "finish_reason": reason,
                      "timing_ms": {"total": round((time.perf_counter() - t0) * 1000, 2)}}
            return hearth, usage

        if not body.stream:
            try:
                output: list[int] = []
                entries: list[gen.RawLogprobs] = []
                reason = "length"
                async for ev in tokens:
                    output.append(ev.token_id)
                    if ev.logprobs is not None:
                        entries.append(ev.logprobs)
                    if ev.finished:
                        reason = ev.finish_reason or "length"
                hearth, usage = await finish(output, reason)
            finally:
                await tokens.aclose()  # a client that went away: the engine drops the request
                release()
            text = gen.completion_text(self.service.tokenizer, output, req.stop)
            choice: dict[str, Any] = {"index": 0, "finish_reason": reason, "logprobs": shaped(entries)}
            if chat:
                choice["message"] = {"role": "assistant", "content": text}
            else:
                choice["text"] = text
            return {"id": ident, "object": "chat.completion" if chat else "text_completion", "created": created,
                    "model": self.model.name, "choices": [choice], "usage": usage, "hearth": hearth,
                    "system_fingerprint": "hearth-" + self.model.runtime_hash.hex()[:16]}

        include_usage = body.include_usage()

        pending: list[gen.RawLogprobs] = []  # log probabilities of the tokens not yet sent
        offset = [0]  # completions: the length of the text sent before them

        def chunk(delta: str | None, reason: str | None, **extra: Any) -> dict[str, Any]:
            lps = None
            if pending:
                lps = shaped(pending, offset[0])
                offset[0] += sum(len(tok.token_text(t)) for t, _, _ in pending)
                pending.clear()
            c: dict[str, Any] = {"index": 0, "finish_reason": reason, "logprobs": lps}
            if chat:
                c["delta"] = {} if delta is None else {"content": delta}
            else:
                c["text"] = delta or ""
            out = {"id": ident, "object": obj, "created": created, "model": self.model.name, "choices": [c], **extra}
            if include_usage:
                out["usage"] = None
            return out

        async def events() -> AsyncIterator[bytes]:
            try:
                if chat:
                    first = chunk(None, None)
                    first["choices"][0]["delta"] = {"role": "assistant", "content": ""}
                    yield sse(first)
                output: list[int] = []
                sent = ""
                async for ev in tokens:
                    output.append(ev.token_id)
                    if ev.logprobs is not None:
                        pending.append(ev.logprobs)
                    if ev.finished:
                        reason = ev.finish_reason or "length"
                        text = gen.completion_text(self.service.tokenizer, output, req.stop)
                        hearth, usage = await finish(output, reason)
                        if len(text) > len(sent):
                            yield sse(chunk(text[len(sent):], None))
                        yield sse(chunk(None, reason, hearth=hearth))
                        if include_usage:
                            yield sse({"id": ident, "object": obj, "created": created, "model": self.model.name,
                                       "choices": [], "usage": usage})
                        yield sse("[DONE]")
                        return
                    text = self.service.tokenizer.decode(output)
                    ready = text[: len(text) - _held_back(text, req.stop)]
                    if len(ready) > len(sent) and ready.startswith(sent):
                        yield sse(chunk(ready[len(sent):], None))
                        sent = ready
            except Exception as exc:  # noqa: BLE001 - the stream is open: end it with an error event
                log.exception("request %s failed mid-stream", rid)
                yield sse({"error": {"message": f"generation failed: {exc}", "type": "api_error",
                                     "reason": "generation_failed", "code": "generation_failed"}})
            finally:
                await tokens.aclose()
                release()

        return _Stream(events(), release)
