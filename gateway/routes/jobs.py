"""Jobs: signed submission (relayed with ``postJobWithSig``, answered once broadcast), the
relayed transactions' outcomes, typed data to sign, status, results with their verification,
and listing."""

from __future__ import annotations

import base64
import logging
import time
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from contracts import eip712, jobstate
from contracts.types import JobRequest, Permit
from gateway import index, schemas, store
from gateway.blobs import blob_id, parse_blob_id
from gateway.context import CtxDep, IndexDep
from gateway.errors import (
    BadRequestError,
    BlobNotFoundError,
    ConflictError,
    GatewayError,
    InputHashMismatchError,
    InputTooLargeError,
    InvalidInputError,
    MalformedRequestError,
    NotFoundError,
    UnknownModelError,
    WrongDomainError,
)
from gateway.jobinput import decode_input, decode_output
from gateway.relay import RelayOutcome
from gateway.retention import payer, store_held
from gateway.routes.common import ERRORS, checksum_or_422

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=ERRORS)

JobId = Annotated[int, Path(ge=1, le=2**63 - 1, description="the on-chain job id")]


def _b32(hex_str: str) -> bytes:
    return bytes.fromhex(hex_str.removeprefix("0x"))


@router.post("", status_code=202, response_model=schemas.JobPostedOut,
             summary="Relay a client-signed JobRequest (postJobWithSig); answers once broadcast")
def submit_job(body: schemas.JobSubmission, ctx: CtxDep, s: IndexDep, response: Response) -> schemas.JobPostedOut:
    """Checks the request completely before anything is stored or sent: domain (chain id and
    market), input (size, format, hash), model, signature, deadline, nonce, balance and
    allowance or permit. Then it stores the input blob and broadcasts the transaction, and
    answers 202 without waiting for it to be mined: ``GET /v1/relays/{tx_hash}`` (the
    ``Location``) says when it is mined and under which job id, or that it reverted (the chain
    changed after the checks; nothing is charged then). If broadcasting or the transaction fails,
    the blob it just stored is removed again."""
    r = body.request
    ctx.check_wallet_rate(r.client)
    if body.chain_id is not None and body.chain_id != ctx.chain_id:
        raise WrongDomainError(f"signed for chain {body.chain_id}; this gateway relays to chain {ctx.chain_id}",
                               reason="wrong_chain", expected=ctx.chain_id)
    if body.verifying_contract is not None and body.verifying_contract != ctx.chain.market:
        raise WrongDomainError(f"signed for contract {body.verifying_contract}; the market here is {ctx.chain.market}",
                               reason="wrong_contract", expected=ctx.chain.market)
    data, from_inline = _input_bytes(body, ctx)
    if blob_id(data) != r.input_hash:
        raise InputHashMismatchError(f"keccak256 of the input is {blob_id(data)}, the request signs {r.input_hash}")
    decode_input(data, ctx.settings.max_texts)
    model = s.get(index.Model, r.model_id)
    if model is None or not model.active:
        raise UnknownModelError(f"model {r.model_id} is not registered or not active")
    req = JobRequest(r.client, _b32(r.model_id), _b32(r.input_hash), r.max_payment, r.deadline, r.nonce)
    sig = _b32(body.signature)
    permit = None
    if body.permit is not None:
        p = body.permit
        permit = Permit(p.value, p.deadline, p.v, _b32(p.r), _b32(p.s))
    with ctx.chain.client_lock(r.client):
        ctx.chain.check_request(req, sig, permit, margin_s=ctx.settings.min_deadline_margin_s)
        stored_now = from_inline and not ctx.blobs.has(r.input_hash)
        if from_inline:
            store_held(ctx.blobs, ctx.db_engine, ctx.blob_policy, data, payer(r.client), None, store.now())
        t0 = time.perf_counter()
        try:
            pending = ctx.chain.relay(req, sig, permit)
        except BaseException:
            if stored_now:
                ctx.blobs.delete(r.input_hash)
            raise

    def settled(outcome: RelayOutcome) -> None:
        ctx.metrics.relay_seconds.observe(time.perf_counter() - t0)
        if outcome.status != store.RelayStatus.MINED and stored_now:
            ctx.blobs.delete(r.input_hash)

    ctx.relays.track(pending, kind="signed", client=r.client, on_done=settled)
    ctx.metrics.jobs_relayed.labels("signed").inc()
    tx = "0x" + bytes(pending.tx_hash).hex()
    status_url = f"/v1/relays/{tx}"
    response.headers["Location"] = status_url
    return schemas.JobPostedOut(tx_hash=tx, status_url=status_url, client=r.client, input_hash=r.input_hash)


def _input_bytes(body: schemas.JobSubmission, ctx: CtxDep) -> tuple[bytes, bool]:
    if (body.input is None) == (body.blob_id is None):
        raise BadRequestError("send exactly one of `input` and `blob_id`", reason="input_required")
    if body.input is not None:
        data = body.input.encode("utf-8")
        if len(data) > ctx.settings.max_blob_bytes:
            raise InputTooLargeError(f"input of {len(data)} bytes exceeds {ctx.settings.max_blob_bytes}",
                                     size=len(data), limit=ctx.settings.max_blob_bytes)
        return data, True
    assert body.blob_id is not None
    try:
        return ctx.blobs.get(body.blob_id), False
    except BlobNotFoundError:
        raise InvalidInputError(f"no blob {body.blob_id}: upload it with POST /v1/blobs first",
                                reason="blob_not_found") from None


@router.get("/typed-data", response_model=schemas.TypedDataOut, summary="The EIP-712 JobRequest to sign")
def typed_data(
    ctx: CtxDep, s: IndexDep,
    client: Annotated[str, Query(description="the signing wallet")],
    input_hash: Annotated[str, Query(description="keccak256 of the input blob (its blob id)")],
    model_id: Annotated[str | None, Query(description="default: the first active model")] = None,
    max_payment: Annotated[int | None, Query(ge=1, le=schemas.UINT96,
                                             description="default: tokens x price, if the blob is stored here")] = None,
    deadline_s: Annotated[int | None, Query(ge=60, le=30 * 86400, description="seconds from now")] = None,
) -> schemas.TypedDataOut:
    """Fills in the client's next nonce, a deadline on the chain's clock, and (when the input
    is stored here) the exact price: tokens x the model's price per token."""
    ih = parse_blob_id(input_hash)
    texts = decode_input(ctx.blobs.get(ih), ctx.settings.max_texts) if ctx.blobs.has(ih) else None
    return _typed_data(ctx, s, client, ih, texts, model_id, max_payment, deadline_s)


@router.post("/typed-data", response_model=schemas.TypedDataOut,
             summary="The EIP-712 JobRequest to sign for an input sent along (nothing is stored)")
def typed_data_for_input(body: schemas.TypedDataIn, ctx: CtxDep, s: IndexDep) -> schemas.TypedDataOut:
    """Like ``GET /v1/jobs/typed-data``, for an input the client will send inline with the job:
    priced from the input itself, which is not stored (so no upload session is needed)."""
    data = body.input.encode("utf-8")
    if len(data) > ctx.settings.max_blob_bytes:
        raise InputTooLargeError(f"input of {len(data)} bytes exceeds {ctx.settings.max_blob_bytes}",
                                 size=len(data), limit=ctx.settings.max_blob_bytes)
    texts = decode_input(data, ctx.settings.max_texts)
    return _typed_data(ctx, s, body.client, blob_id(data), texts, body.model_id, body.max_payment, body.deadline_s)


def _typed_data(ctx: CtxDep, s: IndexDep, client: str, ih: str, texts: list[str] | None, model_id: str | None,
                max_payment: int | None, deadline_s: int | None) -> schemas.TypedDataOut:
    addr = checksum_or_422(client)
    if model_id is not None:
        model = s.get(index.Model, parse_blob_id(model_id))
    else:
        model = next((m for m, _ in index.models(s) if m.active), None)
    if model is None or not model.active:
        raise UnknownModelError(f"model {model_id or '(default)'} is not registered or not active")
    units = None
    stored = ctx.blobs.has(ih)
    if texts is not None:
        units = sum(ctx.tokenizer().count_tokens(texts))
    if max_payment is None:
        if units is None:
            raise MalformedRequestError("pass max_payment, or upload the input first so the gateway can price it",
                                        reason="max_payment_required")
        max_payment = max(1, units * model.price_per_unit)
    deadline = ctx.chain.chain_now() + (deadline_s or ctx.settings.default_deadline_s)
    req = JobRequest(addr, _b32(model.model_id), _b32(ih), max_payment, deadline, ctx.chain.next_nonce(addr))
    td = eip712.job_request_typed_data(req, ctx.chain_id, ctx.chain.market)
    # Wallets take uint256 values as numbers or decimal strings; strings never lose precision.
    td["message"]["maxPayment"] = str(max_payment)
    td["message"]["nonce"] = str(req.nonce)
    return schemas.TypedDataOut(typed_data=td, units=units, price_per_unit=str(model.price_per_unit),
                                input_stored=stored)


@router.get("/permit-typed-data", summary="The EIP-2612 permit to sign so the market may pull the escrow")
def permit_typed_data(
    ctx: CtxDep,
    owner: Annotated[str, Query(description="the paying wallet")],
    value: Annotated[int, Query(ge=1, le=schemas.UINT256, description="token wei the market may pull")],
    deadline_s: Annotated[int, Query(ge=60, le=30 * 86400)] = 3600,
) -> dict[str, object]:
    """Send the signature's (v, r, s) as ``permit`` with the job; no approval transaction needed."""
    addr = checksum_or_422(owner)
    token_nonce = int(ctx.chain.call(lambda: ctx.chain.hearth.usd.functions.nonces(addr).call()))
    return {"typed_data": eip712.permit_typed_data(ctx.chain.token_domain(), addr, ctx.chain.market, value,
                                                   token_nonce, ctx.chain.chain_now() + deadline_s)}


@router.get("", response_model=schemas.JobPage, summary="Jobs, newest first, filtered and paginated")
def list_jobs(
    s: IndexDep, ctx: CtxDep,
    client: Annotated[str | None, Query()] = None,
    provider: Annotated[str | None, Query()] = None,
    status: Annotated[schemas.JobStatus | None, Query()] = None,
    model_id: Annotated[str | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[int | None, Query(ge=1, le=2**63 - 1, description="next_cursor of the previous page")] = None,
) -> schemas.JobPage:
    rows, nxt = index.list_jobs(
        s, client=checksum_or_422(client) if client else None,
        provider=checksum_or_422(provider) if provider else None, status=status,
        model_id=parse_blob_id(model_id) if model_id else None, limit=limit, cursor=cursor)
    return schemas.JobPage(items=with_payers(ctx, [index.job_out(j) for j in rows]), next_cursor=nxt)


def with_payers(ctx: CtxDep, jobs: list[schemas.JobOut]) -> list[schemas.JobOut]:
    """Names the paying wallet of jobs this gateway posted for API keys (their client is the relayer)."""
    relayer = ctx.chain.relayer_address
    mine = [j.job_id for j in jobs if relayer is not None and j.client == relayer]
    payers = store.payers_of(ctx.db_engine, mine)
    return [j.model_copy(update={"paid_by": payers[j.job_id]}) if j.job_id in payers else j for j in jobs]


@router.get("/{job_id}", response_model=schemas.JobOut, summary="A job's state and history")
async def get_job(job_id: JobId, ctx: CtxDep) -> schemas.JobOut:
    """404 ``job_not_found`` when the market has no such job (``details.job_count`` says how many
    it has); 404 ``job_not_indexed`` when the chain has it but the index has not caught up."""
    # The hottest read: one thread hop for the whole query (a session dependency adds two).
    def read() -> schemas.JobOut:
        with Session(ctx.index_engine) as s:
            j = s.get(index.Job, job_id)
        if j is None:
            raise _missing_job(ctx, job_id)
        return with_payers(ctx, [index.job_out(j)])[0]

    return await run_in_threadpool(read)


def _missing_job(ctx: CtxDep, job_id: int) -> NotFoundError:
    try:
        count = int(ctx.chain.call(lambda: ctx.chain.hearth.market.functions.jobCount().call()))
    except GatewayError:
        count = None
    if count is not None and job_id > count:
        return NotFoundError(f"job {job_id} does not exist: the market has {count} jobs", reason="job_not_found",
                             job_id=job_id, job_count=count)
    if count is None:
        return NotFoundError(f"no job {job_id} in the index, and the chain cannot be asked now",
                             reason="job_not_found", job_id=job_id)
    return NotFoundError(f"job {job_id} is on-chain but not indexed yet (a job just posted appears within a block "
                         "or two)", reason="job_not_indexed", job_id=job_id, job_count=count)


@router.get("/{job_id}/result", response_model=schemas.JobResultOut,
            summary="A delivered job's output, receipt, and whether they match on-chain")
def get_result(job_id: JobId, s: IndexDep, ctx: CtxDep) -> schemas.JobResultOut:
    job = index.get_job(s, job_id)
    receipt = index.get_receipt(s, job_id)
    if receipt is None:
        raise ConflictError(f"job {job_id} is {job.status}: no receipt yet", reason="result_not_ready",
                            status=job.status)
    output: bytes | None
    try:
        output = ctx.blobs.get(receipt.output_hash)
    except BlobNotFoundError:
        output = None
    matches = output is not None and blob_id(output) == receipt.output_hash
    challenge = index.get_challenge(s, job_id)
    embeddings = None
    if output is not None:
        try:
            embeddings = decode_output(output).tolist()
        except ValueError:
            embeddings = None
    settled = jobstate.parse(job.status) in jobstate.TERMINAL
    if output is None:
        summary = "the receipt is on-chain but this gateway does not hold the output"
    elif job.status == "refunded":
        summary = "the receipt was overturned: the job was refunded"
    elif job.status == "challenged":
        summary = "the output matches the receipt; a challenge is being settled by re-execution"
    elif job.status == "finalized":
        summary = "the output matches the on-chain receipt, and the job is settled"
    else:
        summary = "the output matches the on-chain receipt; the challenge window is open"
    return schemas.JobResultOut(
        job=index.job_out(job), receipt=index.receipt_out(receipt),
        challenge=None if challenge is None else schemas.ChallengeOut(
            challenger=challenge.challenger, bond=str(challenge.bond), committee=list(challenge.committee),
            status=challenge.status, provider_won=challenge.provider_won, tx_hash=challenge.tx_hash),
        verification=schemas.Verification(
            output_available=output is not None, output_hash_matches_receipt=matches, receipt_on_chain=True,
            challenged=challenge is not None, settled=settled, summary=summary),
        output_base64=base64.b64encode(output).decode() if output is not None else None,
        output_size=len(output) if output is not None else None, embeddings=embeddings,
    )


relays_router = APIRouter(prefix="/v1/relays", tags=["jobs"], responses=ERRORS)


@relays_router.get("/{tx_hash}", response_model=schemas.RelayOut,
                   summary="A relayed job's transaction: pending, mined (with the job id), reverted or failed")
def get_relay(tx_hash: Annotated[str, Path(pattern=r"^0x[0-9a-fA-F]{64}$")], ctx: CtxDep) -> schemas.RelayOut:
    """Poll after ``POST /v1/jobs`` (202) until ``status`` is no longer ``pending``. ``mined``
    names the job id (its state at ``job_url`` once indexed, a block or two later); ``reverted``
    and ``failed`` carry the reason, and nothing was charged: a reverted relay pulls no escrow."""
    row = ctx.relays.refresh(tx_hash.lower())
    if row is None:
        raise NotFoundError(f"this gateway relayed no transaction {tx_hash}", reason="relay_not_found")
    error = None
    if row.reason is not None:
        error = schemas.RelayError(reason=row.reason, revert=row.revert, message=row.message or "")
    return schemas.RelayOut(
        tx_hash=row.tx_hash, kind=row.kind, status=row.status, client=row.client,  # type: ignore[arg-type]
        job_id=row.job_id, block_number=row.block_number, mined_tx=row.mined_tx,
        job_url=f"/v1/jobs/{row.job_id}" if row.job_id is not None else None, error=error,
        created_at=row.created_at, updated_at=row.updated_at)
