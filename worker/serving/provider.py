"""The provider endpoint: ``POST /v1/embeddings`` (MiniLM) and, when the node is configured to
generate, ``POST /v1/chat/completions`` and ``POST /v1/completions`` (SmolLM2, see
:mod:`worker.serving.generate` for how a generation is priced, streamed and receipted), each
paid with a signed ``PaymentReceipt``.

Per request, in this order (nothing is computed for a refused request, nothing is charged):

1. the payment header parses, names this provider, and its signature recovers to the payer or
   to a signer the payer authorized on-chain that is not thawing, revoked or expired
   (``402 signer_not_authorized`` / ``signer_revoked``);
2. the model is one this endpoint serves, and the receipt's value is exactly
   ``units x`` this provider's on-chain quote for it (``402 wrong_value`` names the expected
   value; for generation ``units`` is the cap, prompt + ``max_tokens``);
3. the payer's lane covers everything this provider has served the payer and not collected,
   plus this request (``402 lane_exhausted``); a lane with a thaw announced serves nothing more
   (``402 lane_thawing``) and its receipts are collected at once;
   the provider's unsettled, challengeable value stays within what its stake backs
   (``503 capacity`` with ``Retry-After``; see :mod:`worker.serving.capacity`);
4. the texts run in the shared dynamic batcher with every other request's texts (a
   generation in the engine's continuous batch);
5. the ``WorkReceipt`` is signed and, with the payment receipt, written to the ledger and
   fsynced; only then the answer leaves.

Lanes, signers and the price come from :class:`~worker.serving.chainview.ChainView` (memory,
refreshed every block). Background duties: :class:`~worker.serving.settle.BatchCommitter`,
:class:`~worker.serving.settle.VoucherCollector`. Verifiers read a committed batch's leaves and
proofs at ``GET /v1/serving/batches/{batch_id}/leaves``.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from eth_account import Account
from eth_utils import keccak
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

from common import generation as gen
from contracts import jobio
from contracts.serving import AGGREGATOR_HEADER, PAYMENT_HEADER, WireError, decode_payment, work_receipt_json
from contracts.settlement import (
    Settlement,
    WorkBatch,
    WorkReceipt,
    recover_payment_receipt,
    sign_work_receipt,
)
from worker.serving.capacity import DEFAULT_PER_STAKE_TOKEN, Capacity, CapacityExceeded
from worker.serving.chainview import ChainView
from worker.serving.fanout import CeleryEmbedder, FanoutError, celery_batcher
from worker.serving.generate import GenerationEndpoint, GenerationService, LlmModel
from worker.serving.ledger import Ledger
from worker.serving.settle import BatchCommitter, VoucherCollector

log = logging.getLogger(__name__)


class Refusal(Exception):
    def __init__(self, status: int, reason: str, message: str, *, headers: dict[str, str] | None = None,
                 **details: Any) -> None:
        super().__init__(message)
        self.status, self.reason, self.message, self.details = status, reason, message, details
        self.headers = headers


class EmbeddingsBody(BaseModel):
    model: str = Field(min_length=1, max_length=128)
    input: str | list[str]
    encoding_format: str = "base64"


@dataclass
class ProviderConfig:
    model_id: bytes
    model_name: str
    runtime_hash: bytes
    numerics_class: bytes
    max_leaves: int = 256
    max_batch_age_s: float = 2.0
    collect_threshold: int = 10**6
    collect_interval_s: float = 1.0
    default_aggregator: str | None = None
    max_texts: int = 256
    max_tokens: int = 16384
    max_batch_size: int = 64
    max_wait_s: float = 0.002
    #: payment-token wei of unsettled value each whole staking token backs (see ``capacity``)
    capacity_per_stake_token: int = DEFAULT_PER_STAKE_TOKEN


class ProviderService:
    """Composition of the endpoint's duties; ``app`` is the ASGI app to serve."""

    def __init__(self, settlement: Settlement, key: str, encoder: Any, ledger: Ledger, config: ProviderConfig,
                 *, chain_poll_s: float = 0.25, generator: GenerationService | None = None,
                 llm: LlmModel | None = None, fanout: CeleryEmbedder | None = None) -> None:
        """``encoder`` None: no embeddings; ``generator`` and ``llm``: also generate text;
        ``fanout``: embedding batches run on Celery workers (``encoder`` still counts tokens)."""
        from worker.model import embedding_batcher

        self.s = settlement
        self.key = key
        self.address = str(Account.from_key(key).address)
        self.encoder = encoder
        self.ledger = ledger
        self.config = config
        self.sender = settlement.h.sender(key)
        self.collector = VoucherCollector(settlement, self.sender, ledger, threshold=config.collect_threshold,
                                          interval_s=config.collect_interval_s,
                                          default_aggregator=config.default_aggregator)
        self.capacity = Capacity(ledger, config.capacity_per_stake_token)
        self._window: tuple[float, int] | None = None
        models = ([config.model_id] if encoder is not None else []) + ([llm.model_id] if llm is not None else [])
        if not models:
            raise ValueError("a provider endpoint serves at least one model")
        self.view = ChainView(settlement, self.address, models, poll_s=chain_poll_s, on_thaw=self.collector.urge,
                              on_block=self._on_block)
        self.committer = BatchCommitter(settlement, self.sender, ledger, max_leaves=config.max_leaves,
                                        max_age_s=config.max_batch_age_s)
        limits = {"max_tokens": config.max_tokens, "max_batch_size": config.max_batch_size,
                  "max_wait_s": config.max_wait_s}
        self.fanout = fanout
        self.batcher = None if encoder is None else (
            embedding_batcher(encoder, **limits) if fanout is None
            else celery_batcher(fanout, encoder.count_tokens, **limits))
        self.generation = None if generator is None or llm is None else GenerationEndpoint(self, generator, llm)
        self._lock = threading.Lock()
        self._served = ledger.totals_by_payer()  # recorded + in flight, per payer
        self._inflight: set[bytes] = set()
        self.served_requests = 0
        self.app = self._build_app()

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        if self.batcher is not None:
            self.batcher.start()
        if self.generation is not None:
            self.generation.service.start()
        self.view.start()
        self.committer.start()
        self.collector.start()

    def stop(self) -> None:
        if self.batcher is not None:
            self.batcher.stop()
        if self.generation is not None:
            self.generation.service.stop()
        self.committer.stop(flush=True)
        self.collector.stop()
        self.view.stop()
        self.ledger.close()

    def health(self) -> dict[str, Any]:
        parts = {"chain_view": self.view.healthy(),
                 "committer": self.committer.healthy(), "collector": self.collector.healthy(),
                 "ledger": self.ledger.healthy()}
        if self.batcher is not None:
            parts["batcher"] = self.batcher.healthy()
        if self.generation is not None:
            parts["llm_engine"] = self.generation.service.healthy()
        prices = {"0x" + m.hex(): str(self.view.price(m)) for m in self.view.model_ids}
        return {"ok": all(parts.values()), **parts, "provider": self.address, "block": self.view.block,
                "price": self.view.price(), "prices": prices,
                "queued": self.batcher.queued if self.batcher is not None else 0}

    def _on_block(self, number: int, now: int) -> None:
        """Every block: the stake and the challenge window (re-read every 30 s) bound capacity."""
        mono = time.monotonic()
        if self._window is None or mono - self._window[0] > 30:
            self._window = (mono, int(self.s.params().challenge_window))
        staked = int(self.s.h.staking.functions.getProvider(self.address).call()[0])
        self.capacity.refresh(staked, now, self._window[1])

    def _reserve_capacity(self, value: int) -> None:
        try:
            self.capacity.reserve(value)
        except CapacityExceeded as exc:
            v = exc.view
            raise Refusal(503, "capacity", f"{exc}; retry in {v.retry_after_s} s or use another provider",
                          headers={"Retry-After": str(v.retry_after_s), "x-should-retry": "true"},
                          bound=str(v.bound), exposure=str(v.exposure), value=str(value),
                          retry_after_s=v.retry_after_s) from None

    # ------------------------------------------------------------ the request path
    def check_payment(self, header: str | None, units: int, model_id: bytes | None = None) -> tuple[Any, str, bytes]:
        if not header:
            raise Refusal(402, "payment_missing", f"send a signed PaymentReceipt in the {PAYMENT_HEADER} header")
        try:
            receipt, sig = decode_payment(header)
        except WireError as exc:
            raise Refusal(402, "payment_malformed", str(exc)) from None
        if receipt.provider.lower() != self.address.lower():
            raise Refusal(402, "wrong_provider", f"the receipt pays {receipt.provider}, this is {self.address}")
        try:
            signer = recover_payment_receipt(receipt, sig, self.s.chain_id, self.s.escrow.address)
        except Exception:  # noqa: BLE001 - any malformed signature
            raise Refusal(402, "bad_payment_signature", "the receipt's signature does not recover") from None
        st = self.view.signer(receipt.payer, signer)
        why = st.refusal(self.view.now)
        if why is not None:
            raise Refusal(402, why, f"{signer} may not sign receipts for {receipt.payer} ({why.replace('_', ' ')})",
                          signer=signer)
        price = self.view.price(model_id)
        expected = units * price
        if receipt.value != expected:
            raise Refusal(402, "wrong_value", f"{units} units at {price} cost {expected}, the receipt pays "
                          f"{receipt.value}", expected=str(expected), units=units, price=str(price))
        return receipt, signer, sig

    def reserve(self, payer: str, request_id: bytes, value: int) -> None:
        lane = self.view.lane(payer)
        with self._lock:
            if request_id in self._inflight or self.ledger.has_request(request_id):
                raise Refusal(409, "request_replayed", "this request id was served or is being served already")
            if lane.thawing > 0:
                raise Refusal(402, "lane_thawing", f"payer {payer} is thawing its lane to this provider: service "
                              "stopped", thawing=str(lane.thawing))
            owed = self._served.get(payer, 0) - lane.collected
            if owed + value > lane.balance:
                raise Refusal(402, "lane_exhausted", f"the lane of {payer} holds {lane.balance}; {owed} is owed "
                              f"already and this request costs {value}", balance=str(lane.balance), owed=str(owed))
            self._reserve_capacity(value)  # last: a refusal here leaves nothing reserved
            self._served[payer] = self._served.get(payer, 0) + value
            self._inflight.add(request_id)

    def unreserve(self, payer: str, request_id: bytes, value: int, recorded_value: int | None) -> None:
        """Ends a request that reserved ``value``: ``recorded_value`` is what its recorded leaf is
        worth (None: nothing was recorded, so nothing is owed)."""
        with self._lock:
            self._inflight.discard(request_id)
            self._served[payer] = self._served.get(payer, 0) - value + (recorded_value or 0)
        self.capacity.done(value, recorded_value)

    async def embed(self, body: EmbeddingsBody, payment: str | None, aggregator: str | None) -> dict[str, Any]:
        cfg = self.config
        t0 = time.perf_counter()
        if self.encoder is None or self.batcher is None or body.model not in (cfg.model_name,
                                                                               "0x" + cfg.model_id.hex()):
            raise Refusal(404, "model_not_found", f"this provider serves {cfg.model_name}, not {body.model!r}")
        texts = [body.input] if isinstance(body.input, str) else list(body.input)
        if not texts or len(texts) > cfg.max_texts or not all(t.strip() for t in texts):
            raise Refusal(400, "invalid_input", f"send 1 to {cfg.max_texts} non-empty texts")
        counts = self.encoder.count_tokens(texts)
        units = int(sum(counts))
        receipt, signer, pay_sig = self.check_payment(payment, units, cfg.model_id)
        self.reserve(receipt.payer, receipt.request_id, receipt.value)
        recorded = False
        try:
            rid = receipt.request_id.hex()
            futs = [self.batcher.submit(f"{rid}:{i:05d}", t, n) for i, (t, n) in enumerate(zip(texts, counts,
                                                                                                 strict=True))]
            t1 = time.perf_counter()
            try:
                rows = [await asyncio.wrap_future(f) for f in futs]
            except FanoutError as exc:
                log.warning("request 0x%s: embedding batch failed on the Celery workers: %s", rid, exc)
                raise Refusal(503, "inference_unavailable", "this provider's model workers did not answer in time",
                              headers={"Retry-After": "1"}) from exc
            t2 = time.perf_counter()
            out = np.ascontiguousarray(np.stack(rows), dtype="<f4").tobytes()
            work = WorkReceipt(receipt.request_id, receipt.payer, cfg.model_id,
                               bytes(keccak(jobio.encode_input(texts))), bytes(keccak(out)), units, receipt.value,
                               cfg.runtime_hash, cfg.numerics_class)
            wsig = sign_work_receipt(self.key, work, self.s.chain_id, self.s.batches.address)
            await asyncio.wrap_future(self.ledger.record(receipt, signer, pay_sig, work, wsig, aggregator))
            recorded = True
            t3 = time.perf_counter()
        finally:
            self.unreserve(receipt.payer, receipt.request_id, receipt.value, receipt.value if recorded else None)
        self.served_requests += 1
        step = jobio.BYTES_PER_EMBEDDING
        return {
            "object": "list", "model": cfg.model_name,
            "data": [{"object": "embedding", "index": i, "embedding": base64.b64encode(out[i * step:(i + 1) * step])
                      .decode()} for i in range(len(texts))],
            "usage": {"prompt_tokens": units, "total_tokens": units},
            "hearth": {"provider": self.address, "receipt": work_receipt_json(work), "signature": "0x" + wsig.hex(),
                       "timing_ms": {"checks": round((t1 - t0) * 1000, 2), "model": round((t2 - t1) * 1000, 2),
                                     "receipt_and_ledger": round((t3 - t2) * 1000, 2)}},
        }

    # ------------------------------------------------------------ verifiers' view
    def batch_leaves(self, batch_id: int) -> dict[str, Any]:
        b = self.ledger.batch_by_id(batch_id)
        if b is None:
            raise Refusal(404, "batch_not_found", f"batch {batch_id} is not one of this provider's committed batches")
        leaves = self.ledger.leaves_of_batch(b.seq)
        wb = WorkBatch([lf.work for lf in leaves], self.s.chain_id, self.s.batches.address)
        return {
            "batch_id": batch_id,
            "batch": {"provider": self.address, "root": "0x" + b.root.hex(), "count": b.count, "units": b.units,
                      "value": str(b.value), "committedAt": b.committed_at},
            "leaves": [{"index": i, "receipt": work_receipt_json(lf.work), "signature": "0x" + lf.work_signature.hex(),
                        "proof": ["0x" + p.hex() for p in wb.proof(i)]} for i, lf in enumerate(leaves)],
        }

    def status(self) -> dict[str, Any]:
        batches = self.ledger.batches()
        cap = self.capacity.view()
        return {"provider": self.address, "leaves": self.ledger.count(), "served_requests": self.served_requests,
                "capacity": {"bound": str(cap.bound), "exposure": str(cap.exposure), "left": str(cap.left),
                             "per_stake_token": str(self.capacity.per_stake_token), "refused": self.capacity.refused},
                "batches_committed": sum(1 for b in batches if b.batch_id is not None),
                "batches_open": sum(1 for b in batches if b.batch_id is None),
                "batch_ids": [b.batch_id for b in batches if b.batch_id is not None],
                "batch_gas": sum(b.gas_used or 0 for b in batches),
                "collected": str(self.collector.collected_total),
                "vouchers": [{"payer": v.voucher.payer, "cumulative": str(v.voucher.cumulative_value),
                              "collected": v.collected, "gas": v.gas_used} for v in self.ledger.vouchers()]}

    # ------------------------------------------------------------ HTTP
    def _build_app(self) -> FastAPI:
        app = FastAPI(title="Hearth provider endpoint", version="1")

        @app.exception_handler(Refusal)
        async def refused(request: Request, exc: Refusal) -> JSONResponse:
            return JSONResponse({"error": {"reason": exc.reason, "message": exc.message, "code": exc.reason,
                                           "type": "invalid_request_error", "details": exc.details or None}},
                                status_code=exc.status, headers=exc.headers)

        @app.exception_handler(RequestValidationError)
        async def malformed(request: Request, exc: RequestValidationError) -> JSONResponse:
            first = exc.errors()[0] if exc.errors() else {}
            where = ".".join(str(p) for p in first.get("loc", ()))
            return JSONResponse({"error": {"reason": "malformed_request", "code": "malformed_request",
                                           "type": "invalid_request_error", "param": where or None,
                                           "message": f"{where}: {first.get('msg', 'invalid')}"}}, status_code=422)

        def generation(model: str) -> GenerationEndpoint:
            if self.generation is None:
                raise Refusal(404, "model_not_found", f"this provider does not generate text (asked for {model!r})")
            return self.generation

        @app.post("/v1/chat/completions", response_model=None)
        async def chat_completions(body: gen.ChatCompletionsIn,
                                   request: Request) -> dict[str, Any] | StreamingResponse:
            return await generation(body.model).handle(body, request.headers.get(PAYMENT_HEADER),
                                                       request.headers.get(AGGREGATOR_HEADER))

        @app.post("/v1/completions", response_model=None)
        async def completions(body: gen.CompletionsIn, request: Request) -> dict[str, Any] | StreamingResponse:
            return await generation(body.model).handle(body, request.headers.get(PAYMENT_HEADER),
                                                       request.headers.get(AGGREGATOR_HEADER))

        @app.post("/v1/embeddings", response_class=JSONResponse)
        async def embeddings(body: EmbeddingsBody, request: Request) -> JSONResponse:
            # Answered as built (plain JSON types), not re-encoded through FastAPI's response model.
            return JSONResponse(await self.embed(body, request.headers.get(PAYMENT_HEADER),
                                                 request.headers.get(AGGREGATOR_HEADER)))

        @app.get("/v1/serving/batches/{batch_id}/leaves")
        def leaves(batch_id: int) -> dict[str, Any]:
            return self.batch_leaves(batch_id)

        @app.get("/v1/serving/status")
        def status() -> dict[str, Any]:
            return self.status()

        @app.get("/healthz")
        def healthz() -> JSONResponse:
            h = self.health()
            return JSONResponse(h, status_code=200 if h["ok"] else 503)

        return app
