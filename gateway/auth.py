"""Wallet sessions with Sign-In with Ethereum (EIP-4361, the ``siwe`` package).

``GET /v1/auth/nonce`` issues a single-use nonce; the wallet signs an EIP-4361 message naming
this gateway's domain, the chain id and that nonce; ``POST /v1/auth/verify`` checks it (domain,
chain, nonce, expiry, signature; ERC-1271 wallets through the chain) and opens a session: a
random bearer token, also set as an HttpOnly cookie, of which only the SHA-256 is stored.
"""

from __future__ import annotations

import logging
import secrets
import warnings
from typing import Annotated, Any

from fastapi import Depends, Request

from gateway import store
from gateway.context import Context, CtxDep
from gateway.errors import AuthError, WrongDomainError

with warnings.catch_warnings():
    # abnf warns about siwe's grammar redefining core rules; harmless.
    warnings.simplefilter("ignore")
    from siwe import SiweMessage

log = logging.getLogger(__name__)
COOKIE = "hearth_session"


def siwe_domain(ctx: Context, request: Request) -> str:
    return ctx.settings.siwe_domain or request.headers.get("host") or f"{ctx.settings.host}:{ctx.settings.port}"


def new_nonce(ctx: Context) -> str:
    nonce = secrets.token_hex(16)
    store.add_nonce(ctx.db_engine, nonce, store.now() + ctx.settings.siwe_nonce_ttl_s)
    return nonce


def sign_in(ctx: Context, request: Request, message: str, signature: str) -> tuple[str, str, int]:
    """Verifies a signed SIWE message; returns (address, session token, expiry)."""
    try:
        msg: Any = SiweMessage.from_message(message=message)
    except Exception as exc:  # noqa: BLE001 - the parser raises several kinds
        raise AuthError(f"not an EIP-4361 message: {exc}", reason="invalid_siwe_message") from None
    if int(msg.chain_id) != ctx.chain_id:
        raise WrongDomainError(f"the message is for chain {msg.chain_id}; this gateway is on {ctx.chain_id}",
                               reason="wrong_chain")
    domain = siwe_domain(ctx, request)
    try:
        msg.verify(signature, domain=domain, nonce=msg.nonce, provider=ctx.chain.w3.provider)
    except Exception as exc:  # noqa: BLE001 - siwe's VerificationError family and malformed signatures
        raise AuthError(f"sign-in rejected: {type(exc).__name__} {exc}".strip(), reason="invalid_siwe") from None
    if not store.take_nonce(ctx.db_engine, msg.nonce):
        raise AuthError("unknown, expired or already used nonce: get a new one", reason="invalid_nonce")
    address = str(msg.address)
    token = secrets.token_urlsafe(32)
    expires = store.add_session(ctx.db_engine, token, address, ctx.settings.session_ttl_s)
    log.info("wallet %s signed in", address, extra={"wallet": address})
    return address, token, expires


def session_token(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip() or None
    return request.cookies.get(COOKIE)


def current_wallet(request: Request, ctx: CtxDep) -> str:
    token = session_token(request)
    if not token:
        raise AuthError("sign in with Ethereum first (POST /v1/auth/verify)", reason="not_signed_in")
    found = store.session_address(ctx.db_engine, token)
    if found is None:
        raise AuthError("the session is unknown or expired: sign in again", reason="session_expired")
    ctx.check_wallet_rate(found[0])
    return found[0]


WalletDep = Annotated[str, Depends(current_wallet)]


def current_uploader(request: Request, ctx: CtxDep) -> str:
    """The wallet behind a blob upload: a SIWE session (bearer token or cookie), or an API key
    (``Authorization: Bearer <key>``), which names the wallet that granted it."""
    from gateway import apikeys

    token = session_token(request)
    if not token:
        raise AuthError("uploading blobs needs a session (POST /v1/auth/verify) or an API key, sent as "
                        "`Authorization: Bearer ...`", reason="not_signed_in")
    found = store.session_address(ctx.db_engine, token)
    if found is not None:
        wallet = found[0]
    else:
        try:
            wallet = apikeys.authenticate(ctx, f"Bearer {token}").wallet
        except AuthError as exc:
            if exc.reason != "invalid_api_key":
                raise
            raise AuthError("neither a live session nor a known API key: sign in again", reason="session_expired") \
                from None
    ctx.check_wallet_rate(wallet)
    return wallet


UploaderDep = Annotated[str, Depends(current_uploader)]
