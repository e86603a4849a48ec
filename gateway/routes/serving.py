"""Serving-plane endpoints of the gateway: vouchers for providers, the receipt signer, routing."""

from __future__ import annotations

import re
import time
from typing import Any

from fastapi import APIRouter, Query

from gateway import serving
from gateway.context import CtxDep
from gateway.errors import BadRequestError, UnavailableError
from gateway.routes.common import ERRORS

router = APIRouter(prefix="/v1/serving", tags=["serving"], responses=ERRORS)


@router.post("/vouchers", summary="A cumulative voucher for a provider's served requests")
def vouchers(body: serving.VoucherIn, ctx: CtxDep) -> dict[str, Any]:
    """Signs ``ReceiptAggregateVoucher(payer, provider, cumulative)`` over every request this
    gateway recorded as answered by ``provider`` for ``payer``; providers redeem it with
    ``PaymentEscrow.collect``."""
    return serving.aggregate(ctx, body)


@router.get("/signer", summary="This gateway's receipt signer, and its proof of possession for a payer")
def signer(ctx: CtxDep, payer: str | None = None,
           expiry: int | None = Query(default=None, ge=0, lt=2**64,
                                      description="unix time the authorization ends")) -> dict[str, Any]:
    """The address wallets authorize (``PaymentEscrow.authorizeSigner(signer, expiry, canAllocate,
    proof)``) to pay on the serving plane; with ``payer`` and ``expiry``, the signer's
    ``SignerAuthorization`` proof to pass along."""
    from web3 import Web3

    plane = ctx.serving
    if plane is None:
        raise UnavailableError("this gateway signs no receipts", reason="no_signer")
    out: dict[str, Any] = {"signer": plane.signer, "escrow": plane.escrow, "chain_id": plane.chain_id}
    if payer is not None:
        if not Web3.is_address(payer) or expiry is None or expiry <= time.time():
            raise BadRequestError("send payer (an address) and a future expiry", reason="bad_request")
        out["proof"] = "0x" + plane.signer_proof(Web3.to_checksum_address(payer), expiry).hex()
        out["expiry"] = expiry
    return out


@router.get("/providers", summary="Routable providers and what the gateway measured of them")
def providers(ctx: CtxDep, model: str | None = None) -> list[dict[str, Any]]:
    plane = ctx.serving
    if plane is None:
        return []
    model_id = model or ctx.manifest.models[0].model_id
    if not re.fullmatch(r"0x[0-9a-fA-F]{64}", model_id):
        raise BadRequestError("model must be a 0x model id (32 bytes of hex)", reason="bad_model_id")
    out = []
    cands = plane.router.candidates(model_id)
    facts = serving.provider_facts(ctx, cands)
    for c in cands:
        st = plane.router.stats.get(c.address)
        out.append({"address": c.address, "endpoint": c.endpoint, "region": c.region, "price": str(c.price),
                    "latency_ema_ms": st.ema_ms if st else None, "in_flight": st.inflight if st else 0,
                    "served": st.served if st else 0, "failed": st.failed if st else 0,
                    "at_capacity": st.at_capacity if st else 0, **facts.get(c.address, {})})
    return out
