"""The serving plane in the gateway: ``/v1/embeddings`` answered by a provider's endpoint in
inference time, paid with a signed ``PaymentReceipt`` and settled later in batches.

Which path a request takes (``HEARTH_GATEWAY_SERVING_MODE``):

* ``auto`` (default): the serving plane when this gateway has a receipt signer, at least one
  provider is routable for the model (active, serves it, quoted a price, registered an
  endpoint) and the API key's wallet authorized the gateway's signer on-chain; the per-job path
  otherwise;
* ``serving``: always the serving plane (503 ``no_provider`` when none is routable);
* ``per_job``: always the per-job path (one on-chain job per request, :mod:`gateway.apikeys`).

Per request: the API key authenticates and its wallet is the payer; the units are counted
with the worker's tokenizer; the cost at the most expensive provider it may try is reserved
against the key's spending cap (and trimmed to what was charged once answered). The gateway
signs a ``PaymentReceipt(payer, provider, requestId, units x price, now)`` with its signer key
(which the wallet authorized on-chain with ``PaymentEscrow.authorizeSigner``), forwards, and
checks the answer: the ``WorkReceipt`` recovers to the provider, names the request id, payer,
model, the input's hash, the output's hash (keccak of the returned bytes), the units it counted
and the value it signed. A provider that fails, times out or answers wrongly is retried on the
next (same request id, a receipt for that provider). Only a checked answer is recorded as
served (``gw_serving_requests``), and only served requests enter vouchers: a provider that
answered too late, or not at all, is paid nothing for it, so no request is charged twice and an
unanswered one is charged nothing.

Vouchers: providers ask ``POST /v1/serving/vouchers`` for a payer; the gateway signs the
cumulative value of every request it recorded as served by that provider for that payer
(monotone, so re-asking is harmless).
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp
import httpx
import sqlalchemy as sa
from eth_account import Account
from eth_utils import keccak
from pydantic import BaseModel
from sqlalchemy.engine import Connection
from sqlmodel import Field, Session, col, select

from contracts.serving import (
    AGGREGATOR_HEADER,
    PAYMENT_HEADER,
    WireError,
    encode_payment,
    voucher_json,
    work_receipt_from_json,
    work_receipt_json,
)
from contracts.settlement import (
    PaymentReceipt,
    Voucher,
    recover_work_receipt,
    sign_payment_receipt,
    sign_signer_authorization,
    sign_voucher,
)
from gateway import apikeys, idempotency, schemas, store
from gateway.errors import (
    BadRequestError,
    GatewayError,
    NotFoundError,
    OverloadedError,
    PaymentError,
    UnavailableError,
)
from gateway.lanes import LaneKeeper
from gateway.routing import Candidate, Router

log = logging.getLogger(__name__)

#: provider refusals that no other provider would answer differently (the payer's signer)
PAYER_WIDE = ("signer_not_authorized", "signer_revoked", "bad_payment_signature")


class NoProviderAnsweredError(GatewayError):
    """Every provider tried failed or timed out; nothing was charged."""

    status_code = 502
    reason = "no_provider_answered"


# ---------------------------------------------------------------------------- tables


class ServingRequest(store.GatewayModel, table=True):
    """A request answered on the serving plane (checked), the unit vouchers are made of."""

    __tablename__ = "gw_serving_requests"

    request_id: str = Field(primary_key=True, max_length=66)
    key_hash: str = Field(max_length=66, index=True)
    payer: str = Field(max_length=42)
    provider: str = Field(max_length=42)
    model_id: str = Field(max_length=66)
    units: int = Field(sa_type=sa.BigInteger)
    value: int = Field(sa_type=sa.BigInteger)
    charge_id: int | None = Field(default=None, sa_type=sa.BigInteger)
    input_blob: str = Field(max_length=66)
    output_hash: str = Field(max_length=66)
    attempts: int = 1
    latency_ms: float = 0.0
    created_at: int = Field(sa_type=sa.BigInteger)

    __table_args__ = (sa.Index("ix_gw_serving_requests_lane", "payer", "provider"),)


class ServingVoucher(store.GatewayModel, table=True):
    """The latest voucher signed per lane."""

    __tablename__ = "gw_serving_vouchers"

    payer: str = Field(primary_key=True, max_length=42)
    provider: str = Field(primary_key=True, max_length=42)
    cumulative: int = Field(sa_type=sa.BigInteger)
    timestamp: int = Field(sa_type=sa.BigInteger)
    signature: str = Field(max_length=132)


# ---------------------------------------------------------------------------- API shapes


class HearthServingInfo(BaseModel):
    path: Literal["serving"] = "serving"
    #: where the time went: the gateway's own work, the provider round trip, and what the
    #: provider reported of it (checks, model, receipt and ledger)
    timing_ms: dict[str, Any] | None = None
    provider: str
    request_id: str
    receipt: dict[str, Any]
    receipt_signature: str
    cost: str
    attempts: int
    verified: bool = True


class ServingEmbeddingsOut(BaseModel):
    object: Literal["list"] = "list"
    data: list[schemas.EmbeddingItem]
    model: str
    usage: schemas.Usage
    hearth: HearthServingInfo


class VoucherIn(BaseModel):
    payer: schemas.Text
    provider: schemas.Text


# ---------------------------------------------------------------------------- blobs


class BlobSpooler:
    """Stores served requests' input and output blobs off the answer's path: one thread writes
    whatever is queued every ``interval_s`` (files, then the holds in one transaction), so a
    request pays neither the file writes nor a transaction per blob. The holds keep each blob
    ``blob_retention_s`` (longer than the challenge window, checked on start), where verifiers
    fetch them. Accepted risk: a gateway crash loses the blobs of the last ``interval_s``; the
    leaves stay valid, they just cannot be re-executed from this gateway's store."""

    def __init__(self, ctx: Any, interval_s: float = 0.05) -> None:
        import threading

        self.ctx = ctx
        self.interval_s = interval_s
        self._queue: list[tuple[bytes, str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="blob-spooler", daemon=True)
        self._started = False
        self.written = 0

    def put(self, data: bytes, owner: str) -> None:
        with self._lock:
            self._queue.append((data, owner))
            if not self._started:
                self._started = True
                self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.flush()

    def flush(self) -> None:
        with self._lock:
            taken, self._queue = self._queue, []
        if not taken:
            return
        now = store.now()
        ttl = self.ctx.blob_policy.retention_s
        try:
            holds: dict[tuple[str, str], int] = {}
            for data, owner in taken:
                bid = self.ctx.blobs.put(data)
                holds[(bid, owner)] = len(data)
            upsert = _hold_upsert(self.ctx.db_engine.dialect.name)
            if upsert is not None:  # one statement for every hold (the ORM took a get and a flush each)
                with self.ctx.db_engine.begin() as c:
                    c.execute(upsert, [{"blob_id": b, "owner": o, "size": n, "created_at": now, "expires_at": now + ttl}
                                       for (b, o), n in holds.items()])
            else:
                with store.session(self.ctx.db_engine) as s:
                    for (b, o), n in holds.items():
                        store.hold_blob(s, b, o, n, now, ttl)
            self.written += len(taken)
        except Exception:  # noqa: BLE001 - logged; the next flush goes on
            log.exception("could not store %d served blobs", len(taken))

    def stop(self) -> None:
        self._stop.set()
        if self._started:
            self._thread.join(10)
        self.flush()


def _hold_upsert(dialect: str) -> Any:
    """``INSERT ... ON CONFLICT DO UPDATE`` of blob holds, renewing a hold to the later expiry
    (what :func:`gateway.store.hold_blob` does row by row), or None on another database."""
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    elif dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert  # type: ignore[assignment]
    else:
        return None
    t = store.METADATA.tables[store.BlobUpload.__tablename__]
    ins = insert(t)
    return ins.on_conflict_do_update(index_elements=[t.c.blob_id, t.c.owner], set_={
        "expires_at": sa.case((ins.excluded.expires_at > t.c.expires_at, ins.excluded.expires_at),
                              else_=t.c.expires_at)})


# ---------------------------------------------------------------------------- the plane


@dataclass
class ServingPlane:
    router: Router
    signer_key: str
    chain_id: int
    escrow: str
    settlement: str
    public_url: str
    timeout_s: float = 10.0
    max_attempts: int = 3
    shed_retry_after_s: float = 1.0
    signer: str = ""
    _http: httpx.AsyncClient | None = None
    _session: aiohttp.ClientSession | None = None
    served: int = 0
    retried: int = 0
    spooler: BlobSpooler | None = None
    #: keeps payers' lanes to the routed providers topped up (:mod:`gateway.lanes`)
    keeper: LaneKeeper | None = None

    def __post_init__(self) -> None:
        self.signer = str(Account.from_key(self.signer_key).address)

    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self.timeout_s, limits=httpx.Limits(
                max_connections=512, max_keepalive_connections=256))
        return self._http

    async def post_json(self, url: str, body: dict[str, Any],
                        headers: dict[str, str]) -> tuple[int, bytes, Mapping[str, str]]:
        """POSTs ``body`` as JSON; returns the status, the body read whole and the headers. The forward path
        runs on aiohttp (its C HTTP parser: a quarter of httpx's CPU per request); timeouts as
        httpx's were, per phase: ``timeout_s`` to get a connection, and between reads."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=512, limit_per_host=0, keepalive_timeout=30),
                timeout=aiohttp.ClientTimeout(total=None, connect=self.timeout_s, sock_read=self.timeout_s),
                json_serialize=json.dumps, auto_decompress=False)
        async with self._session.post(url, json=body, headers=headers) as resp:
            return resp.status, await resp.read(), resp.headers

    def start(self) -> None:
        if self.keeper is not None:
            self.keeper.start()

    async def close(self) -> None:
        if self.keeper is not None:
            self.keeper.stop()
        if self.spooler is not None:
            self.spooler.stop()
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    def signer_proof(self, payer: str, expiry: int) -> bytes:
        return sign_signer_authorization(self.signer_key, payer, expiry, self.chain_id, self.escrow)


def build_plane(ctx: Any) -> ServingPlane | None:
    """The serving plane of a gateway context, or None when it has no receipt signer or the
    deployment has no escrow."""
    st = ctx.settings
    h = ctx.chain.hearth
    if h.escrow is None or h.settlement is None or st.serving_mode == "per_job":
        return None
    key = st.resolve_signer_key(ctx.chain_id)
    if key is None:
        return None
    router = Router(ctx.index_engine, refresh_s=st.serving_refresh_s, latency_budget_ms=st.latency_budget_ms,
                    max_inflight=st.max_provider_inflight)
    keeper = None
    if st.lane_topup_target > 0:
        model_ids = [m.model_id for m in ctx.manifest.models]

        def routed() -> list[str]:
            return [c.address for m in model_ids for c in router.candidates(m)]

        keeper = LaneKeeper(h, key.get_secret_value(), ctx.db_engine, routed, threshold=st.lane_topup_threshold,
                            target=st.lane_topup_target, interval_s=st.lane_topup_interval_s)
    return ServingPlane(router, key.get_secret_value(), ctx.chain_id, h.escrow.address, h.settlement.address,
                        st.public_url or f"http://{st.host}:{st.port}", timeout_s=st.provider_timeout_s,
                        max_attempts=st.serving_attempts, shed_retry_after_s=st.shed_retry_after_s,
                        spooler=BlobSpooler(ctx), keeper=keeper)


_MODELS: dict[tuple[int, str], tuple[float, Any]] = {}


_STATUS: dict[str, tuple[float, dict[str, Any] | None]] = {}


def _provider_status(endpoint: str, ttl_s: float = 5.0) -> dict[str, Any] | None:
    """A provider endpoint's ``/v1/serving/status`` (capacity, requests served), cached for
    ``ttl_s``; None when it does not answer within a second."""
    now = time.monotonic()
    hit = _STATUS.get(endpoint)
    if hit is not None and now - hit[0] < ttl_s:
        return hit[1]
    try:
        r = httpx.get(f"{endpoint}/v1/serving/status", timeout=1.0)
        body: dict[str, Any] | None = r.json() if r.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        body = None
    _STATUS[endpoint] = (now, body)
    return body


def provider_facts(ctx: Any, cands: list[Candidate]) -> dict[str, dict[str, Any]]:
    """What the dashboard's providers page shows of each serving-plane provider besides the
    gateway's measurements: stake and slashes (index), batches committed and their value still
    inside the challenge window, vouchers collected, leaves challenged and proven fraudulent
    (index), capacity left and requests served (the provider's own status)."""
    from common.index_models import Block, Collection, LeafCase, Provider, SettlementBatch

    out: dict[str, dict[str, Any]] = {}
    with Session(ctx.index_engine) as s:
        head = s.exec(select(Block).order_by(col(Block.number).desc()).limit(1)).first()
        chain_now = int(head.timestamp) if head is not None else int(time.time())
        for c in cands:
            p = s.get(Provider, c.address)
            batches = list(s.exec(select(SettlementBatch).where(SettlementBatch.provider == c.address)))
            ids = [b.batch_id for b in batches]
            cases = list(s.exec(select(LeafCase).where(col(LeafCase.batch_id).in_(ids)))) if ids else []
            amounts = [int(a) for a in s.exec(select(Collection.amount).where(Collection.provider == c.address))]
            out[c.address] = {
                "staked": str(p.staked) if p else "0", "jailed_until": p.jailed_until if p else 0,
                "slashes": p.slashes if p else 0, "slashed_total": str(p.slashed_total) if p else "0",
                "batches_committed": len(batches),
                "unsettled_value": str(sum(b.value for b in batches if b.challenge_end > chain_now)),
                "vouchers_collected": len(amounts), "collected": str(sum(amounts)),
                "challenges": len(cases), "frauds": sum(1 for lc in cases if lc.status == "fraud"),
            }
    for c in cands:
        st = _provider_status(c.endpoint)
        cap = (st or {}).get("capacity") or {}
        out[c.address]["capacity_left"] = cap.get("left")
        out[c.address]["requests_served"] = (st or {}).get("served_requests")
    return out


def find_model(ctx: Any, name_or_id: str, ttl_s: float = 2.0) -> Any:
    """The index's model row by name or id, cached for ``ttl_s`` (models change by governance,
    rarely; the serving path then reads the index once per ``ttl_s``, not once per request)."""
    from gateway import index

    now = time.monotonic()
    k = (id(ctx.index_engine), name_or_id)
    hit = _MODELS.get(k)
    if hit is not None and now - hit[0] < ttl_s:
        return hit[1]
    with Session(ctx.index_engine) as s:
        model = index.find_model(s, name_or_id)
        if model is not None:
            s.expunge(model)
    _MODELS[k] = (now, model)
    return model


_SIGNERS: dict[tuple[str, str], tuple[float, bool]] = {}


def signer_authorized(ctx: Any, wallet: str, ttl_s: float = 5.0) -> bool:
    """Whether ``wallet`` authorized this gateway's receipt signer on-chain (cached ``ttl_s``)."""
    plane: ServingPlane = ctx.serving
    k = (plane.signer, wallet)
    now = time.monotonic()
    hit = _SIGNERS.get(k)
    if hit is not None and now - hit[0] < ttl_s:
        return hit[1]
    try:
        ok = bool(ctx.chain.hearth.escrow.functions.isValidSigner(wallet, plane.signer).call())
    except Exception as exc:  # noqa: BLE001 - any RPC failure: the last answer, else a clear 503
        if hit is not None:
            # A stale "authorized" costs nothing: providers check the signer on-chain themselves.
            log.warning("isValidSigner(%s) failed (%s): using the answer of %.0f s ago", wallet, exc, now - hit[0])
            return hit[1]
        raise UnavailableError(f"the chain did not answer whether {wallet} authorized this gateway's signer: "
                               f"{type(exc).__name__}", reason="chain_unavailable") from None
    _SIGNERS[k] = (now, ok)
    return ok


def use_serving(ctx: Any, model_id: str, wallet: str) -> bool:
    """The path of a request (see the module docstring): in ``auto`` mode the serving plane when
    a provider is routable for the model and the key's wallet authorized this gateway's signer
    (a wallet that did not keeps the per-job path it always had)."""
    plane: ServingPlane | None = ctx.serving
    mode = ctx.settings.serving_mode
    if plane is None:
        if mode == "serving":
            raise UnavailableError("this gateway has no receipt signer, so it cannot use the serving plane",
                                   reason="no_signer")
        return False
    if mode == "serving":
        return True
    return bool(plane.router.candidates(model_id)) and signer_authorized(ctx, wallet)


async def embed(ctx: Any, key: store.ApiKey, body: schemas.EmbeddingsIn, texts: list[str], model: Any,
                region: str | None, claim: idempotency.Claim | None = None) -> dict[str, Any]:
    """The answer (as JSON types) of an embeddings request on the serving plane; with ``claim``,
    stored for replay in the transaction that records it (:mod:`gateway.idempotency`)."""
    from gateway.jobinput import encode_input

    plane: ServingPlane = ctx.serving
    t_start = time.perf_counter()
    # Inline, not in a thread: counting a request's tokens takes well under a millisecond, less
    # than a hop to the thread pool and back.
    units = int(sum(ctx.tokenizer().count_tokens(texts)))
    data = encode_input(texts)
    input_hash = bytes(keccak(data))
    order = plane.router.order(model.model_id, region)[: plane.max_attempts]
    if not order:
        raise UnavailableError(f"no provider serves {model.name or model.model_id} on the serving plane now",
                               reason="no_provider")
    if plane.router.all_busy([c.address for c in order]):
        raise _saturated(plane, order)
    reserve = max(1, units * max(c.price for c in order))
    charge_id = store.reserve(ctx.db_engine, key.key_hash, reserve, store.now(), status="serving")
    if charge_id is None:
        raise apikeys.refused_reservation(ctx, key, reserve, up_to=True)
    request_id = secrets.token_bytes(32)
    model_b = bytes.fromhex(model.model_id[2:])
    last: GatewayError | None = None
    answered: tuple[Candidate, Any, bytes, bytes, float, Any] | None = None
    attempts = 0
    try:
        for cand in order:
            if not plane.router.try_begin(cand.address):  # at its in-flight bound: not asked (gateway.admission)
                continue
            attempts += 1
            value = units * cand.price
            pr = PaymentReceipt(key.wallet, cand.address, request_id, value, int(time.time()))
            sig = sign_payment_receipt(plane.signer_key, pr, plane.chain_id, plane.escrow)
            t0 = time.perf_counter()
            ok, measured = False, True
            try:
                status, raw, headers = await plane.post_json(
                    f"{cand.endpoint}/v1/embeddings",
                    {"model": model.model_id, "input": texts, "encoding_format": "base64"},
                    {PAYMENT_HEADER: encode_payment(pr, sig), AGGREGATOR_HEADER: plane.public_url})
                ms = (time.perf_counter() - t0) * 1000
                if status == 200:
                    answer = json.loads(raw)
                    work, wsig, out = _check_answer(plane, cand, answer, pr, model_b, input_hash, units, len(texts))
                    ok = True
                    answered = (cand, work, wsig, out, ms, answer["hearth"].get("timing_ms"))
                    break
                err = _error_of(raw)
                if status == 503 and err[0] == "capacity":
                    ok, measured = True, False  # healthy, at its stake's bound: the next provider
                    plane.router.saturated(cand.address, _retry_after(headers))
                    last = UnavailableError(f"provider {cand.address} is at its capacity: {err[1]}",
                                            reason="capacity", provider=cand.address)
                elif status == 402:
                    ok = True  # the provider is healthy: it refused this payer
                    if err[0] == "lane_exhausted" and plane.keeper is not None:
                        plane.keeper.wake()  # top the lane up now (when the payer lets this gateway allocate)
                    last = PaymentError(f"provider {cand.address} refused payment: {err[1]}", reason=err[0],
                                        provider=cand.address)
                    if err[0] in PAYER_WIDE:
                        break
                else:
                    last = NoProviderAnsweredError(f"provider {cand.address} answered {status}: {err[1]}",
                                                   provider=cand.address)
            except TimeoutError:  # aiohttp's timeouts are TimeoutErrors (checked before ClientError)
                last = NoProviderAnsweredError(f"provider {cand.address} timed out after {plane.timeout_s}s",
                                               provider=cand.address)
            except aiohttp.ClientError as exc:
                last = NoProviderAnsweredError(f"provider {cand.address} is unreachable: {exc!r}",
                                               provider=cand.address)
            except (WireError, AnswerError, ValueError, KeyError, TypeError) as exc:
                last = NoProviderAnsweredError(f"provider {cand.address} answered wrongly: {exc}",
                                               provider=cand.address, reason="bad_provider_answer")
                log.warning("provider %s answered request %s wrongly: %s", cand.address, request_id.hex(), exc)
            finally:
                plane.router.end(cand.address, ok=ok, answered=measured,
                                 latency_ms=(time.perf_counter() - t0) * 1000 if ok and measured else None)
            if attempts < len(order):
                plane.retried += 1
    except BaseException:
        store.release(ctx.db_engine, charge_id)
        raise
    if answered is None:
        store.release(ctx.db_engine, charge_id)
        raise last if last is not None else _saturated(plane, order)
    cand, work, wsig, out, ms, provider_timing = answered
    step = 1536
    # Built from checked values, so constructed without validation (384 floats an item add up).
    item = schemas.EmbeddingItem.model_construct
    if body.encoding_format == "base64":
        items = [item(index=i, embedding=base64.b64encode(out[i * step:(i + 1) * step]).decode())
                 for i in range(len(texts))]
    else:
        import numpy as np

        rows = np.frombuffer(out, dtype="<f4").reshape(-1, 384)
        items = [item(index=i, embedding=r.tolist()) for i, r in enumerate(rows)]
    answer_out = ServingEmbeddingsOut(
        data=items, model=model.name or model.model_id, usage=schemas.Usage(prompt_tokens=units, total_tokens=units),
        hearth=HearthServingInfo(provider=cand.address, request_id="0x" + request_id.hex(),
                                 receipt=work_receipt_json(work), receipt_signature="0x" + wsig.hex(),
                                 cost=str(work.value), attempts=attempts,
                                 timing_ms={"total": round((time.perf_counter() - t_start) * 1000, 2),
                                            "provider_round_trip": round(ms, 2), "provider": provider_timing})
    ).model_dump()
    try:
        _record(ctx, key, charge_id, cand, work, data, out, attempts, ms, reserved=reserve, input_hash=input_hash,
                also=lambda c: idempotency.finish(c, claim, answer_out))
    except idempotency.IdempotencyLostError:
        store.release(ctx.db_engine, charge_id)
        log.warning("request %s answered by %s but its idempotency claim was taken over: not recorded",
                    request_id.hex(), cand.address)
        raise
    except Exception:
        # Not recorded, so never in a voucher: the provider is not paid for it, and neither is
        # the client charged (its reservation is given back) for an answer it does not get.
        store.release(ctx.db_engine, charge_id)
        log.exception("request %s answered by %s but not recorded", request_id.hex(), cand.address)
        raise UnavailableError("the answer could not be recorded; nothing was charged", reason="record_failed") \
            from None
    plane.served += 1
    return answer_out


def _saturated(plane: ServingPlane, order: list[Candidate]) -> OverloadedError:
    return OverloadedError(f"every provider of this model ({len(order)}) is at its bound of "
                           f"{plane.router.max_inflight} requests in flight; nothing was charged",
                           reason="providers_saturated", retry_after=plane.shed_retry_after_s)


class AnswerError(Exception):
    """A provider's answer that does not match what was asked and paid."""


def _retry_after(headers: Any) -> float:
    """The ``Retry-After`` seconds of a response's headers (an httpx response's too), 1 if unreadable."""
    if isinstance(headers, httpx.Response):
        headers = headers.headers
    try:
        return max(0.0, float(headers.get("retry-after", "1")))
    except ValueError:
        return 1.0


def _error_of(raw: bytes | httpx.Response) -> tuple[str, str]:
    if isinstance(raw, httpx.Response):
        raw = raw.content
    try:
        e = json.loads(raw)["error"]
        return str(e["reason"]), str(e["message"])
    except Exception:  # noqa: BLE001 - any non-conforming body
        return "provider_error", raw[:200].decode("utf-8", "replace")


def _check_answer(plane: ServingPlane, cand: Candidate, body: Any, pr: PaymentReceipt, model_id: bytes,
                  input_hash: bytes, units: int, n: int) -> tuple[Any, bytes, bytes]:
    h = body["hearth"]
    work = work_receipt_from_json(h["receipt"])
    wsig = bytes.fromhex(str(h["signature"])[2:])
    items = sorted(body["data"], key=lambda d: int(d["index"]))
    if [int(d["index"]) for d in items] != list(range(n)):
        raise AnswerError(f"{len(items)} embeddings for {n} inputs")
    out = b"".join(base64.b64decode(d["embedding"], validate=True) for d in items)
    if len(out) != n * 1536:
        raise AnswerError(f"{len(out)} output bytes for {n} inputs")
    if recover_work_receipt(work, wsig, plane.chain_id, plane.settlement).lower() != cand.address.lower():
        raise AnswerError("the work receipt is not signed by the provider")
    checks = {"requestId": work.request_id == pr.request_id, "payer": work.payer.lower() == pr.payer.lower(),
              "modelId": work.model_id == model_id, "inputHash": work.input_hash == input_hash,
              "outputHash": work.output_hash == bytes(keccak(out)), "units": work.units == units,
              "value": work.value == pr.value}
    bad = [k for k, v in checks.items() if not v]
    if bad:
        raise AnswerError(f"the work receipt's {', '.join(bad)} do not match")
    return work, wsig, out


_INSERT_SERVED = sa.insert(store.METADATA.tables[ServingRequest.__tablename__])


_CHARGE_AMOUNT = sa.select(store.METADATA.tables[store.Charge.__tablename__].c.amount).where(
    store.METADATA.tables[store.Charge.__tablename__].c.id == sa.bindparam("charge_id"))


def _record(ctx: Any, key: store.ApiKey, charge_id: int, cand: Candidate, work: Any, data: bytes, out: bytes,
            attempts: int, ms: float, *, reserved: int | None = None, input_hash: bytes | None = None,
            also: Callable[[Connection], None] | None = None) -> None:
    """Records a checked answer as served and settles its charge (``reserved``: what was
    reserved, read from the charge when not given; ``input_hash``: keccak of ``data``; ``also``:
    more writes in the same transaction, e.g. the answer kept for an idempotency key)."""
    _record_many(ctx, key, [Served(charge_id, cand, work, data, out, attempts, ms, reserved, input_hash)], also=also)


@dataclass(frozen=True)
class Served:
    """One checked answer to record: its charge, provider, work receipt and blobs."""

    charge_id: int
    cand: Candidate
    work: Any
    data: bytes
    out: bytes
    attempts: int
    ms: float
    reserved: int | None = None
    input_hash: bytes | None = None


def _record_many(ctx: Any, key: store.ApiKey, answers: Sequence[Served], *,
                 also: Callable[[Connection], None] | None = None) -> None:
    """Records checked answers as served and settles their charges, all in one transaction (a
    request of ``n`` choices is charged for all of them or for none)."""
    from gateway.retention import payer

    now = store.now()
    # One short transaction of Core statements (the ORM's unit of work cost ten times the CPU),
    # committed before the answer leaves: a served request's row is what vouchers are made of,
    # so it is never deferred.
    with ctx.db_engine.begin() as c:
        for a in answers:
            work = a.work
            reserved = a.reserved
            if reserved is None:
                reserved = int(c.execute(_CHARGE_AMOUNT, {"charge_id": a.charge_id}).scalar_one())
            input_hash = bytes(keccak(a.data)) if a.input_hash is None else a.input_hash
            c.execute(_INSERT_SERVED, {
                "request_id": "0x" + work.request_id.hex(), "key_hash": key.key_hash, "payer": key.wallet,
                "provider": a.cand.address, "model_id": "0x" + work.model_id.hex(), "units": work.units,
                "value": work.value, "charge_id": a.charge_id, "input_blob": "0x" + input_hash.hex(),
                "output_hash": "0x" + work.output_hash.hex(), "attempts": a.attempts, "latency_ms": a.ms,
                "created_at": now})
            store.settle_charge(c, key.key_hash, a.charge_id, reserved, work.value, "served")
        if also is not None:
            also(c)
    plane: ServingPlane = ctx.serving
    if plane.spooler is not None:
        for a in answers:
            for blob in (a.data, a.out):  # kept for the challenge window: verifiers fetch them
                plane.spooler.put(blob, payer(key.wallet))


def aggregate(ctx: Any, body: VoucherIn) -> dict[str, Any]:
    from web3 import Web3

    plane: ServingPlane | None = ctx.serving
    if plane is None:
        raise UnavailableError("this gateway signs no receipts", reason="no_signer")
    if not (Web3.is_address(body.payer) and Web3.is_address(body.provider)):
        raise BadRequestError("payer and provider must be addresses", reason="invalid_address")
    payer_a, provider_a = Web3.to_checksum_address(body.payer), Web3.to_checksum_address(body.provider)
    with store.session(ctx.db_engine) as s:
        total = int(s.execute(sa.select(sa.func.coalesce(sa.func.sum(ServingRequest.value), 0)).where(
            col(ServingRequest.payer) == payer_a, col(ServingRequest.provider) == provider_a)).scalar_one())
        if total == 0:
            raise NotFoundError(f"no served requests of {payer_a} to {provider_a}", reason="nothing_to_aggregate")
        sv = sign_voucher(plane.signer_key, Voucher(payer_a, provider_a, total, store.now()), plane.chain_id,
                          plane.escrow)
        row = s.get(ServingVoucher, (payer_a, provider_a))
        if row is None:
            row = ServingVoucher(payer=payer_a, provider=provider_a, cumulative=total, timestamp=sv.voucher.timestamp,
                                 signature="0x" + sv.signature.hex())
        else:
            row.cumulative, row.timestamp, row.signature = total, sv.voucher.timestamp, "0x" + sv.signature.hex()
        s.add(row)
    return {"voucher": voucher_json(sv.voucher, sv.signature)}


def served_requests(ctx: Any, key_hash: str | None = None) -> list[ServingRequest]:
    with Session(ctx.db_engine) as s:
        q = select(ServingRequest)
        if key_hash:
            q = q.where(ServingRequest.key_hash == key_hash)
        return list(s.exec(q.order_by(col(ServingRequest.created_at))))
