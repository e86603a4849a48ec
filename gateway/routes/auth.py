"""Wallet sessions (Sign-In with Ethereum), per-wallet views and API key grants."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response

from gateway import apikeys, index, schemas, store
from gateway.auth import COOKIE, WalletDep, new_nonce, session_token, sign_in, siwe_domain
from gateway.context import CtxDep, IndexDep
from gateway.errors import UnavailableError
from gateway.routes.common import ERRORS, checksum_or_422

router = APIRouter(prefix="/v1", tags=["wallets"], responses=ERRORS)


@router.get("/auth/nonce", response_model=schemas.SiweNonceOut, summary="A single-use SIWE nonce")
def siwe_nonce(request: Request, ctx: CtxDep) -> schemas.SiweNonceOut:
    return schemas.SiweNonceOut(nonce=new_nonce(ctx), domain=siwe_domain(ctx, request), chain_id=ctx.chain_id,
                                uri=str(request.base_url).rstrip("/"))


@router.post("/auth/verify", response_model=schemas.SessionOut, summary="Sign in with a signed EIP-4361 message")
def siwe_verify(body: schemas.SiweVerifyIn, request: Request, response: Response, ctx: CtxDep) -> schemas.SessionOut:
    address, token, expires = sign_in(ctx, request, body.message, body.signature)
    response.set_cookie(COOKIE, token, max_age=ctx.settings.session_ttl_s, httponly=True, samesite="lax",
                        secure=request.url.scheme == "https")
    return schemas.SessionOut(address=address, token=token, expires_at=expires)


@router.get("/auth/session", response_model=schemas.SessionOut, summary="The signed-in wallet")
def get_session(wallet: WalletDep, request: Request, ctx: CtxDep) -> schemas.SessionOut:
    found = store.session_address(ctx.db_engine, session_token(request) or "")
    return schemas.SessionOut(address=wallet, expires_at=found[1] if found else 0)


@router.post("/auth/logout", status_code=204, summary="End the session")
def logout(request: Request, response: Response, ctx: CtxDep) -> Response:
    token = session_token(request)
    if token:
        store.end_session(ctx.db_engine, token)
    out = Response(status_code=204)
    out.delete_cookie(COOKIE)
    return out


@router.get("/me/jobs", response_model=schemas.JobPage, summary="The signed-in wallet's jobs")
def my_jobs(
    wallet: WalletDep, s: IndexDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
) -> schemas.JobPage:
    rows, nxt = index.list_jobs(s, client=wallet, limit=limit, cursor=cursor)
    return schemas.JobPage(items=[index.job_out(j) for j in rows], next_cursor=nxt)


@router.get("/api-keys/typed-data", summary="The EIP-712 ApiKeyGrant to sign for a new API key")
def grant_typed_data(
    ctx: CtxDep,
    wallet: Annotated[str, Query()],
    api_key_hash: Annotated[str, Query(pattern=r"^0x[0-9a-fA-F]{64}$", description="keccak256 of the key's UTF-8")],
    spending_cap: Annotated[int, Query(ge=1, le=2**63 - 1, description="token wei")],
    ttl_s: Annotated[int, Query(ge=60, le=365 * 86400)] = 30 * 86400,
) -> dict[str, object]:
    if ctx.chain.relayer_address is None:
        raise UnavailableError("this gateway has no relayer key", reason="relayer_unavailable")
    grant = schemas.ApiKeyGrantIn(
        wallet=checksum_or_422(wallet), gateway=ctx.chain.relayer_address, apiKeyHash=api_key_hash.lower(),
        spendingCap=spending_cap, expiry=store.now() + ttl_s, nonce=secrets.randbits(128))
    return {"typed_data": apikeys.grant_typed_data(grant, ctx.chain_id), "relayer": ctx.chain.relayer_address}


@router.post("/api-keys", status_code=201, response_model=schemas.ApiKeyOut,
             summary="Register a wallet-signed API key grant")
def create_api_key(body: schemas.ApiKeyCreateIn, ctx: CtxDep) -> schemas.ApiKeyOut:
    """After this, approve the relayer (``ERC20.approve(relayer, amount)``) for what the key may spend.
    ``region`` (optional) is the provider region the key prefers on the serving plane when a
    request sends no ``x-hearth-region`` header."""
    ctx.check_wallet_rate(body.grant.wallet)
    key = apikeys.register_grant(ctx, body.grant, bytes.fromhex(body.signature[2:]), body.region)
    return apikeys.key_out(ctx, key)


@router.get("/api-keys", response_model=list[schemas.ApiKeyOut], summary="The signed-in wallet's API keys")
def list_api_keys(wallet: WalletDep, ctx: CtxDep) -> list[schemas.ApiKeyOut]:
    return [apikeys.key_out(ctx, k) for k in apikeys.keys_of(ctx, wallet)]


@router.delete("/api-keys/{key_hash}", response_model=schemas.ApiKeyOut, summary="Revoke an API key")
def revoke_api_key(
    key_hash: Annotated[str, Path(pattern=r"^0x[0-9a-fA-F]{64}$")], wallet: WalletDep, ctx: CtxDep,
) -> schemas.ApiKeyOut:
    return apikeys.key_out(ctx, apikeys.revoke(ctx, wallet, key_hash.lower()))
