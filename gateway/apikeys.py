"""API keys for the OpenAI-compatible ``/v1/embeddings``, and the trust model behind them.

Why not per-request signatures: the market takes a job's payment either from ``msg.sender``
(``postJob``) or from a client that signed that very ``JobRequest`` (``postJobWithSig``), whose
``inputHash`` is only known once the input is. An OpenAI client sends a bearer key and no
signature, so the gateway cannot make the market charge the wallet per request; and it must not
hold a key that signs for the wallet. So the gateway pays the market itself, with money it pulls
from the wallet just in time, under two limits the wallet sets and can lower at any moment.

Trust model
-----------
1. Grant (off-chain, EIP-712). The wallet picks a random API key and signs
   ``ApiKeyGrant{wallet, gateway, apiKeyHash, spendingCap, expiry, nonce}`` in the domain
   ``{name: "Hearth Gateway", version: "1", chainId}``. ``apiKeyHash`` is keccak256 of the key,
   so the gateway stores only the hash and never sees the key before it is used; ``gateway`` is
   this gateway's relayer address, so a grant cannot be replayed at another gateway, and
   ``(wallet, nonce)`` can be registered once, so it cannot be replayed here either.
2. Allowance (on-chain, ERC-20). The wallet approves the relayer address for at most what it
   is willing to spend through this gateway. That allowance is the hard, on-chain bound: the
   relayer can never move more of the wallet's tokens than it, whatever the gateway's database
   says, and setting it to zero revokes every key of the wallet at once. (An allowance to the
   market cannot play this role: the market only pulls from ``msg.sender`` or from the signer
   of a ``JobRequest``.)
3. Per request. The gateway counts the tokens with the worker's tokenizer and prices the job
   exactly: ``cost = tokens x the model's price`` (the receipt's payment is
   ``min(maxPayment, units x price)``, so the provider is paid in full and nothing is left over).
   It reserves ``cost`` against the grant with one atomic conditional update
   (``spent + cost <= spendingCap``, key live and unexpired) and refuses with 402
   ``spending_cap_exceeded`` otherwise; only then it pulls ``cost`` from the wallet
   (``transferFrom(wallet, relayer, cost)``) and posts the job with ``postJob`` as the relayer.
   If the post fails the pulled amount is sent back and the reservation released (also when the
   post was broadcast and then reverted on-chain: the relay tracker does it in the background,
   whatever became of the request); if the pull fails, the reservation is released. A post never
   seen mined keeps its charge ``pulled`` (owed to the wallet) rather than guess. So: spent
   never exceeds the cap (database), the tokens taken never exceed the allowance (chain), and
   the gateway holds a wallet's tokens only for the moment between the pull and the post.
4. Settlement. The job is an ordinary on-chain job whose client is the relayer: a provider
   claims it, delivers a signed receipt, and the gateway returns the output only after checking
   that its keccak256 equals the receipt's ``outputHash`` on-chain (through the index); the
   response names the job id and both transactions, so the wallet owner can audit every charge
   against the chain, and verifiers can challenge it like any other job.

What the wallet must still trust the gateway for: to post the job it charged for (auditable:
every charge names its job), and to pass refunds on. When a job is refunded (nobody delivered
in time, or a challenge overturned the receipt), the escrow is credited to the relayer's market
balance, not to the wallet; the gateway never lets refunds raise a grant's remaining cap (the cap
bounds gross pulls), and it reports them per key as ``refunds_owed``. Paying them back
automatically is not implemented in this version. Anyone holding the API key can spend up to the
cap, like any bearer key: keep the cap and allowance small and the expiry short.

Results: the embeddings are the provider's delivered output bytes (little-endian float32, the
worker ``Encoder``'s ``output_bytes``), checked against the on-chain receipt; the gateway does
not compute embeddings itself. A request therefore takes as long as a provider needs to claim
and deliver (``embeddings_timeout_s``; 504 ``job_timeout`` with the job id after it).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
import weakref
from concurrent.futures import Future
from typing import Any

from eth_account.messages import encode_typed_data
from eth_utils import keccak
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from contracts import eip712, jobstate
from gateway import index, schemas, store
from gateway.blobs import blob_id
from gateway.context import Context
from gateway.errors import (
    AuthError,
    BadRequestError,
    BlobNotFoundError,
    ConflictError,
    DeadlineError,
    InputTooLargeError,
    NotFoundError,
    PaymentError,
    ResultTimeoutError,
    SpendingCapError,
    UnavailableError,
    UpstreamError,
    WrongDomainError,
)
from gateway.jobinput import decode_output, encode_input
from gateway.relay import RelayOutcome
from gateway.retention import payer, store_held

log = logging.getLogger(__name__)

DELIVERED = jobstate.labels(jobstate.DELIVERED)


def api_key_hash(api_key: str) -> str:
    return "0x" + keccak(api_key.encode("utf-8")).hex()


def grant_message(g: schemas.ApiKeyGrantIn) -> dict[str, Any]:
    return {"wallet": g.wallet, "gateway": g.gateway, "apiKeyHash": bytes.fromhex(g.api_key_hash[2:]),
            "spendingCap": g.spending_cap, "expiry": g.expiry, "nonce": g.nonce}


def grant_typed_data(g: schemas.ApiKeyGrantIn, chain_id: int) -> dict[str, Any]:
    """The ``eth_signTypedData_v4`` payload of a grant (big numbers as decimal strings)."""
    msg = grant_message(g)
    msg["apiKeyHash"] = g.api_key_hash
    msg["spendingCap"] = str(g.spending_cap)
    msg["nonce"] = str(g.nonce)
    return {
        "types": {"EIP712Domain": eip712.GATEWAY_DOMAIN_TYPE, **eip712.API_KEY_GRANT_TYPES},
        "primaryType": "ApiKeyGrant", "domain": eip712.gateway_domain(chain_id), "message": msg,
    }


def register_grant(ctx: Context, g: schemas.ApiKeyGrantIn, signature: bytes, region: str | None = None) -> store.ApiKey:
    """Registers a wallet-signed grant. ``region`` is the key's preferred provider region: a
    routing preference the wallet states when registering, not part of what it signs (it moves
    no money; a request's ``x-hearth-region`` header overrides it)."""
    relayer = ctx.chain.relayer_address
    if relayer is None:
        raise UnavailableError("this gateway has no relayer key, so it cannot serve API keys",
                               reason="relayer_unavailable")
    if g.gateway != relayer:
        raise WrongDomainError(f"the grant is for gateway {g.gateway}; this gateway is {relayer}",
                               reason="wrong_gateway", expected=relayer)
    now = store.now()
    if g.expiry <= now:
        raise DeadlineError(f"the grant expired at {g.expiry}", reason="grant_expired")
    if g.expiry > now + ctx.settings.max_grant_ttl_s:
        raise BadRequestError(f"grants may last at most {ctx.settings.max_grant_ttl_s}s", reason="grant_too_long")
    if g.spending_cap == 0:
        raise BadRequestError("spendingCap must be positive", reason="zero_spending_cap")
    msg = encode_typed_data(eip712.gateway_domain(ctx.chain_id), eip712.API_KEY_GRANT_TYPES, grant_message(g))
    ctx.chain.verify_signature(g.wallet, msg, signature, "API key grant")
    row = store.ApiKey(
        key_hash=g.api_key_hash, wallet=g.wallet, gateway=g.gateway,
        spending_cap=min(g.spending_cap, store.MAX_BIGINT), spent=0, expiry=g.expiry, nonce=str(g.nonce),
        signature="0x" + signature.hex(), created_at=now, region=region)
    try:
        with store.session(ctx.db_engine) as s:
            s.add(row)
    except IntegrityError:
        raise ConflictError("this API key or this grant nonce was registered before", reason="grant_replayed") from None
    log.info("API key %s granted by %s cap %d until %d", g.api_key_hash[:10], g.wallet, row.spending_cap,
             g.expiry, extra={"wallet": g.wallet})
    return row


def key_out(ctx: Context, key: store.ApiKey) -> schemas.ApiKeyOut:
    with Session(ctx.db_engine) as s:
        charges = [c for c in store.charges_of(s, key.key_hash) if c.status != "released"]
    owed = 0
    job_ids = {c.job_id for c in charges if c.job_id is not None}
    if job_ids:
        with Session(ctx.index_engine) as s:
            for j in index.jobs_by_id(s, job_ids).values():
                owed += int(j.refund_amount or 0) if j.status == "refunded" else int(j.client_refund or 0)
    return schemas.ApiKeyOut(
        api_key_hash=key.key_hash, wallet=key.wallet, gateway=key.gateway, spending_cap=str(key.spending_cap),
        spent=str(key.spent), remaining=str(max(0, key.spending_cap - key.spent)), expiry=key.expiry,
        revoked=key.revoked_at is not None, refunds_owed=str(owed), jobs=len(job_ids), region=key.region)


def keys_of(ctx: Context, wallet: str) -> list[store.ApiKey]:
    with Session(ctx.db_engine) as s:
        return list(s.exec(select(store.ApiKey).where(store.ApiKey.wallet == wallet)
                           .order_by(col(store.ApiKey.created_at))))


def revoke(ctx: Context, wallet: str, key_hash: str) -> store.ApiKey:
    with store.session(ctx.db_engine) as s:
        key = s.get(store.ApiKey, key_hash)
        if key is None or key.wallet != wallet:
            raise NotFoundError("no such API key of this wallet", reason="api_key_not_found")
        if key.revoked_at is None:
            key.revoked_at = store.now()
            s.add(key)
    forget_key(ctx, key_hash)
    return key


#: per database: key hash -> (monotonic time read, the key's row), see :func:`authenticate`
_KEY_ROWS: weakref.WeakKeyDictionary[Any, dict[str, tuple[float, store.ApiKey]]] = weakref.WeakKeyDictionary()
KEY_CACHE_TTL_S = 2.0


def forget_key(ctx: Context, key_hash: str) -> None:
    """Drops a key's cached row (on revocation), so this process refuses it at once."""
    _KEY_ROWS.get(ctx.db_engine, {}).pop(key_hash, None)


def _key_row(ctx: Context, kh: str, fresh: bool) -> store.ApiKey | None:
    rows = _KEY_ROWS.setdefault(ctx.db_engine, {})
    now = time.monotonic()
    hit = rows.get(kh)
    if hit is not None and not fresh and now - hit[0] < KEY_CACHE_TTL_S:
        return hit[1]
    with Session(ctx.db_engine) as s:
        key = s.get(store.ApiKey, kh)
    if key is None:
        rows.pop(kh, None)
    else:
        if len(rows) > 10_000:
            rows.clear()
        rows[kh] = (now, key)
    return key


def authenticate(ctx: Context, authorization: str | None, *, fresh: bool = False) -> store.ApiKey:
    """The live key an ``Authorization: Bearer`` header names.

    Its row is cached for ``KEY_CACHE_TTL_S`` (one database read per key every 2 s, not one per
    request; ``fresh`` reads it anyway). Revoking through this process drops it from the cache
    at once; a revocation by another process sharing the database is seen within the TTL, and
    until then spending is still refused: every charge is reserved with one conditional
    ``UPDATE`` that checks revocation and expiry in the database (:func:`gateway.store.reserve`).
    The ``spent`` of a cached row may be stale; it is only ever shown, never charged against."""
    if not authorization or not authorization.lower().startswith("bearer "):
        raise AuthError("send the API key as `Authorization: Bearer <key>`", reason="missing_api_key")
    kh = api_key_hash(authorization[7:].strip())
    key = _key_row(ctx, kh, fresh)
    if key is None:
        raise AuthError("unknown API key", reason="invalid_api_key")
    _check_live(key)
    return key


def _check_live(key: store.ApiKey) -> None:
    if key.revoked_at is not None:
        raise AuthError("this API key was revoked", reason="api_key_revoked")
    if key.expiry <= store.now():
        raise AuthError("this API key's grant has expired", reason="api_key_expired")


def refused_reservation(ctx: Context, key: store.ApiKey, cost: int, *,
                        up_to: bool = False) -> AuthError | SpendingCapError:
    """Why :func:`gateway.store.reserve` refused ``cost`` on ``key``, from its row as it is now
    (the cached one may predate a revocation or the spend of other requests)."""
    forget_key(ctx, key.key_hash)
    with Session(ctx.db_engine) as s:
        now = s.get(store.ApiKey, key.key_hash)
    try:
        _check_live(now or key)
    except AuthError as exc:
        return exc
    left = max(0, (now or key).spending_cap - (now or key).spent)
    return SpendingCapError(f"this request costs {'up to ' if up_to else ''}{cost}; the key has {left} left of its cap",
                            cost=str(cost))


# ---------------------------------------------------------------------------- embeddings


async def embed(ctx: Context, key: store.ApiKey, body: schemas.EmbeddingsIn) -> schemas.EmbeddingsOut:
    from starlette.concurrency import run_in_threadpool

    texts = await run_in_threadpool(input_texts, ctx, body.input)
    data = encode_input(texts)
    if len(data) > ctx.settings.max_blob_bytes:
        raise InputTooLargeError(f"input of {len(data)} bytes exceeds {ctx.settings.max_blob_bytes}")
    with Session(ctx.index_engine) as s:
        model = index.find_model(s, body.model)
    if model is None or not model.active:
        # 404 model_not_found, as OpenAI answers (the openai client raises NotFoundError).
        raise NotFoundError(f"model {body.model!r} is not registered or not active", reason="model_not_found")
    if body.dimensions is not None and body.dimensions != 384:
        raise BadRequestError("this model has 384 dimensions and cannot shorten them", reason="unsupported_dimensions")
    units = sum(await run_in_threadpool(ctx.tokenizer().count_tokens, texts))
    cost = max(1, units * model.price_per_unit)
    charge_id = store.reserve(ctx.db_engine, key.key_hash, cost, store.now())
    if charge_id is None:
        raise refused_reservation(ctx, key, cost)
    posting = await run_in_threadpool(_pay_and_post, ctx, key, charge_id, cost, model.model_id, data)
    # Waited for without holding a worker thread; the tracker settles the charge either way.
    relayed = await asyncio.wrap_future(posting)
    if relayed.status != store.RelayStatus.MINED or relayed.job_id is None:
        raise relayed.error or UpstreamError(f"posting the job failed ({relayed.status.value})")
    ctx.metrics.jobs_relayed.labels("api_key").inc()
    ctx.metrics.api_key_spend.inc(cost)
    ctx.metrics.embeddings_tokens.inc(units)
    receipt, output = await _await_delivery(ctx, relayed.job_id)
    rows = decode_output(output)
    if rows.shape[0] != len(texts):
        raise UpstreamError(f"job {relayed.job_id}: {rows.shape[0]} embeddings for {len(texts)} inputs",
                            reason="bad_output", job_id=relayed.job_id)
    if body.encoding_format == "base64":
        items = [schemas.EmbeddingItem(index=i, embedding=base64.b64encode(r.astype("<f4").tobytes()).decode())
                 for i, r in enumerate(rows)]
    else:
        items = [schemas.EmbeddingItem(index=i, embedding=r.tolist()) for i, r in enumerate(rows)]
    return schemas.EmbeddingsOut(
        data=items, model=model.name or model.model_id, usage=schemas.Usage(prompt_tokens=units, total_tokens=units),
        hearth=schemas.HearthJobInfo(job_id=relayed.job_id, post_tx=relayed.mined_tx or relayed.tx_hash,
                                     receipt_tx=receipt.tx_hash, output_hash=receipt.output_hash, cost=str(cost),
                                     verified=True))


def input_texts(ctx: Context, value: str | list[str] | list[int] | list[list[int]]) -> list[str]:
    """The texts an embeddings ``input`` stands for, refused as OpenAI refuses them: nothing, an
    empty or whitespace-only text, or a token id outside the vocabulary is a 400. Token id arrays
    are decoded with the model's tokenizer; the job then bills what the worker counts for that
    text (the receipt's units), which for ids with [CLS] and [SEP] is exactly the ids given."""
    if isinstance(value, str):
        items: list[Any] = [value]
    elif value and all(isinstance(v, int) for v in value):
        items = [value]  # one token id array
    else:
        items = list(value)
    if not items:
        raise BadRequestError("'input' is empty: send at least one text or token array", reason="empty_input",
                              param="input")
    if len(items) > ctx.settings.max_texts:
        raise InputTooLargeError(f"{len(items)} inputs; the limit is {ctx.settings.max_texts}",
                                 reason="too_many_inputs")
    id_lists = [(i, v) for i, v in enumerate(items) if isinstance(v, list)]
    if id_lists:
        tok = ctx.tokenizer()
        vocab = tok.vocab_size
        for i, ids in id_lists:
            if not ids:
                raise BadRequestError(f"input[{i}] is an empty token array", reason="empty_input", param="input")
            bad = next((t for t in ids if not 0 <= t < vocab), None)
            if bad is not None:
                raise BadRequestError(f"input[{i}] holds token id {bad}, outside this model's vocabulary "
                                      f"[0, {vocab})", reason="invalid_token_id", param="input", token=bad)
        for (i, _), text in zip(id_lists, tok.decode_ids([ids for _, ids in id_lists]), strict=True):
            items[i] = text
    from_ids = {i for i, _ in id_lists}
    for i, text in enumerate(items):
        if not text.strip():
            what = "only special tokens" if i in from_ids else "empty or only whitespace"
            raise BadRequestError(f"input[{i}] is {what}: the model has nothing to embed", reason="empty_input",
                                  param="input", index=i)
    return [str(t) for t in items]


def _pay_and_post(ctx: Context, key: store.ApiKey, charge_id: int, cost: int, model_id: str,
                  data: bytes) -> Future[RelayOutcome]:
    """Pulls ``cost`` from the wallet (waited for: the post spends it) and broadcasts the post;
    returns the tracked post, which settles the charge whatever becomes of the request."""
    chain = ctx.chain
    try:
        chain.relayer_key()  # 503 without one
        assert chain.relayer_address is not None
        allowance = chain.allowance(key.wallet, chain.relayer_address)
        if allowance < cost:
            raise PaymentError(
                f"{key.wallet} allows the gateway's relayer {chain.relayer_address} to pull {allowance} < {cost}",
                reason="insufficient_allowance", relayer=chain.relayer_address)
        balance = chain.token_balance(key.wallet)
        if balance < cost:
            raise PaymentError(f"{key.wallet} holds {balance} < {cost}", reason="insufficient_balance")
        deadline = chain.chain_now() + ctx.settings.default_deadline_s
        store_held(ctx.blobs, ctx.db_engine, ctx.blob_policy, data, payer(key.wallet), None, store.now())
        pull_tx = chain.pull(key.wallet, cost)
    except BaseException:
        store.release(ctx.db_engine, charge_id)
        raise
    store.update_charge(ctx.db_engine, charge_id, status="pulled", pull_tx=pull_tx)
    try:
        pending = chain.post_as_relayer(bytes.fromhex(model_id[2:]), bytes.fromhex(blob_id(data)[2:]), cost, deadline)
    except BaseException as exc:
        _return_pull(ctx, key, charge_id, cost, str(exc))
        raise
    post_tx = "0x" + bytes(pending.tx_hash).hex()
    store.update_charge(ctx.db_engine, charge_id, post_tx=post_tx)

    def settled(outcome: RelayOutcome) -> None:
        if outcome.status == store.RelayStatus.MINED:
            store.update_charge(ctx.db_engine, charge_id, status="posted", job_id=outcome.job_id,
                                post_tx=outcome.mined_tx)
            log.info("job %d posted for API key %s wallet %s cost %d tx %s", outcome.job_id, key.key_hash[:10],
                     key.wallet, cost, outcome.mined_tx, extra={"job_id": outcome.job_id, "tx_hash": outcome.mined_tx})
        elif outcome.status == store.RelayStatus.REVERTED:
            # Mined and reverted: no job, the pulled tokens are still the relayer's. Return them.
            _return_pull(ctx, key, charge_id, cost, outcome.error.message if outcome.error else "reverted")
        else:
            # Never seen mined (or the RPC failed while waiting): it may still be mined, so the
            # tokens stay pulled and the charge says so (owed to the wallet unless a job appears).
            log.error("post %s for API key %s is unsettled; charge %d of %d stays pulled", post_tx,
                      key.key_hash[:10], charge_id, cost, extra={"tx_hash": post_tx})

    return ctx.relays.track(pending, kind="api_key", client=key.wallet, charge_id=charge_id, on_done=settled)


def _return_pull(ctx: Context, key: store.ApiKey, charge_id: int, cost: int, why: str) -> None:
    """Sends a pulled amount back and releases the reservation; if the transfer fails the charge
    stays ``pulled``, which reports the amount as owed to the wallet."""
    log.warning("posting for API key %s failed (%s); returning %d to %s", key.key_hash[:10], why, cost, key.wallet)
    try:
        ctx.chain.give_back(key.wallet, cost)
        store.release(ctx.db_engine, charge_id)
    except Exception:  # noqa: BLE001 - keep the charge marked pulled: owed to the wallet
        log.exception("could not return %d to %s (charge %d)", cost, key.wallet, charge_id)


async def _await_delivery(ctx: Context, job_id: int) -> tuple[Any, bytes]:
    """Polls the index until a receipt is on-chain and its output is in the blob store."""
    from starlette.concurrency import run_in_threadpool

    deadline = time.monotonic() + ctx.settings.embeddings_timeout_s

    def check() -> tuple[str | None, Any, bytes | None]:
        with Session(ctx.index_engine) as s:
            j = s.get(index.Job, job_id)
            if j is None:
                return None, None, None
            r = index.get_receipt(s, job_id) if j.status in DELIVERED else None
        if r is None:
            return j.status, None, None
        try:
            return j.status, r, ctx.blobs.get(r.output_hash)
        except BlobNotFoundError:
            return j.status, r, None

    while True:
        status, receipt, output = await run_in_threadpool(check)
        if status == "refunded":
            raise UpstreamError(f"job {job_id} was refunded without a valid delivery", reason="job_refunded",
                                job_id=job_id)
        if receipt is not None and output is not None:
            return receipt, output
        if time.monotonic() > deadline:
            raise ResultTimeoutError(
                f"job {job_id} was posted but no provider delivered within {ctx.settings.embeddings_timeout_s:.0f}s; "
                f"follow it at /v1/jobs/{job_id}", job_id=job_id, status=status)
        await asyncio.sleep(0.2)
