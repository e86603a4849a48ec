"""Network views: providers, models, statistics and balances, from the index."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from gateway import index, schemas
from gateway.context import Context, CtxDep, IndexDep
from gateway.errors import GatewayError, NotFoundError
from gateway.routes.common import ERRORS, checksum_or_422

router = APIRouter(prefix="/v1", tags=["network"], responses=ERRORS)
AddressPath = Annotated[str, Path(description="an account address")]


def min_stake(ctx: Context, s: IndexDep) -> int:
    v = index.param(s, "staking.min_stake")
    return int(v) if v is not None else ctx.chain.min_stake()


def _now(s: IndexDep) -> int:
    _, t = index.chain_time(s)
    return t or 0


@router.get("/providers", response_model=list[schemas.ProviderOut], summary="Providers with stake and status")
def list_providers(ctx: CtxDep, s: IndexDep) -> list[schemas.ProviderOut]:
    return [index.provider_out(v) for v in index.providers(s, _now(s), min_stake(ctx, s))]


@router.get("/providers/{address}", response_model=schemas.ProviderOut, summary="One provider")
def get_provider(address: AddressPath, ctx: CtxDep, s: IndexDep) -> schemas.ProviderOut:
    addr = checksum_or_422(address)
    views = index.providers(s, _now(s), min_stake(ctx, s), address=addr)
    if not views:
        raise NotFoundError(f"{addr} is not a registered provider", reason="provider_not_found")
    return index.provider_out(views[0])


@router.get("/models", response_model=schemas.ModelList,
            summary="Registered models (also the OpenAI-compatible model list)")
def list_models(s: IndexDep) -> schemas.ModelList:
    return schemas.ModelList(data=[
        schemas.ModelOut(id=m.name or m.model_id, model_id=m.model_id, name=m.name, runtime_hash=m.runtime_hash,
                         price_per_unit=str(m.price_per_unit), active=m.active, providers=n)
        for m, n in index.models(s)
    ])


@router.get("/stats", response_model=schemas.StatsOut, summary="Network statistics")
def stats(ctx: CtxDep, s: IndexDep) -> schemas.StatsOut:
    return index.stats(s, ctx.chain_id, min_stake(ctx, s))


@router.get("/balances/{address}", response_model=schemas.BalanceOut, summary="Balances of an address")
def balances(address: AddressPath, ctx: CtxDep, s: IndexDep) -> schemas.BalanceOut:
    """Market credit and escrow from the index; the wallet's token balance, allowances and next
    JobRequest nonce from the chain (the index does not mirror ERC-20 state). When the chain is
    unreachable those are null rather than an error."""
    addr = checksum_or_422(address)
    b = index.market_balance(s, addr)
    wallet = allow_m = allow_r = None
    nonce = None
    try:
        wallet = str(ctx.chain.token_balance(addr))
        allow_m = str(ctx.chain.allowance(addr, ctx.chain.market))
        if ctx.chain.relayer_address:
            allow_r = str(ctx.chain.allowance(addr, ctx.chain.relayer_address))
        nonce = ctx.chain.next_nonce(addr)
    except GatewayError:
        pass
    return schemas.BalanceOut(
        address=addr, market_balance=str(b.balance if b else 0), market_credited=str(b.credited if b else 0),
        market_withdrawn=str(b.withdrawn if b else 0), escrowed=str(index.escrowed(s, addr)),
        wallet_balance=wallet, allowance_market=allow_m, allowance_relayer=allow_r, nonce=nonce,
    )
