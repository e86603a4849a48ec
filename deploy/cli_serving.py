"""``hearth provider join`` and ``hearth provider status``: a provider on the serving plane.

``join`` does on-chain what a provider needs to be routed to (register or update its endpoint,
region and GPU class; stake up to ``--stake``; serve the model; quote its price) and then, with
``--run``, starts the endpoint in the foreground (``python -m worker.serving``). ``status``
reads the chain and, when the endpoint answers, its ledger: stake, requests served, batches
committed, vouchers collected.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import httpx
import typer

from contracts.settlement import Settlement
from deploy.cli import (
    HST_DECIMALS,
    USD_DECIMALS,
    CliError,
    HearthCommand,
    RoleOpt,
    address_arg,
    console,
    default_model,
    fmt,
    friendly,
    hearth,
    key_for,
    parse_amount,
)


def mount(provider_app: typer.Typer) -> None:
    provider_app.command("join", cls=HearthCommand)(friendly(provider_join))
    provider_app.command("status", cls=HearthCommand)(friendly(provider_status))


def provider_join(
    endpoint: str = typer.Option(..., help="Public URL of the endpoint, e.g. http://127.0.0.1:8101"),
    region: str = typer.Option("local", help="Region gateways match against clients' x-hearth-region"),
    gpu_class: str = typer.Option("cpu"),
    price: int = typer.Option(..., min=1, help="Quoted price per unit (token), in the smallest hUSD unit"),
    stake: str = typer.Option("500", help="Stake to hold at least this much HST"),
    run: bool = typer.Option(False, "--run", help="Then run the endpoint in the foreground"),
    as_: RoleOpt = None,
) -> None:
    """Register (or update) the endpoint, stake, serve the model, quote a price; optionally run."""
    from urllib.parse import urlparse

    from contracts.serving import usable_endpoint

    if not usable_endpoint(endpoint):
        raise CliError(f"not an endpoint gateways can reach: {endpoint!r} (write http://host:port)")
    h = hearth()
    key = key_for(as_)
    s = h.sender(key)
    mid = default_model(h)
    st = Settlement(h)
    ceiling = int(st.batches.functions.priceCeiling(mid).call())
    if price > ceiling:  # checked before any transaction: a refused join changes nothing
        raise CliError(f"price {price} is above the model's ceiling {ceiling}")
    info = h.staking.functions.getProvider(s.address).call()
    fn = h.staking.functions.updateProvider if info[5] else h.staking.functions.register
    s.send(fn(endpoint, region, gpu_class))
    want = parse_amount(stake, HST_DECIMALS)
    have = int(h.staking.functions.getProvider(s.address).call()[0])
    if have < want:
        need = want - have
        bal = int(h.hst.functions.balanceOf(s.address).call())
        if bal < need:
            raise CliError(f"insufficient HST balance to stake {fmt(need, HST_DECIMALS)} more: "
                           f"{fmt(bal, HST_DECIMALS)}")
        s.send(h.hst.functions.approve(h.staking.address, need))
        s.send(h.staking.functions.stake(need))
    if not h.staking.functions.serves(s.address, mid).call():
        s.send(h.staking.functions.setServing(mid, True))
    st.quote_price(key, mid, price)
    console.print(f"joined: {s.address} at {endpoint} region {region}, stake "
                  f"{fmt(int(h.staking.functions.getProvider(s.address).call()[0]), HST_DECIMALS)} HST, "
                  f"price {st.price_of(s.address, mid)} per unit of 0x{mid.hex()}")
    if run:
        port = urlparse(endpoint).port
        console.print(f"starting the endpoint on port {port} (Ctrl-C stops it)")
        sys.stdout.flush()
        env = {**os.environ, "HEARTH_WORKER_KEY": key}
        os.execve(sys.executable, [sys.executable, "-m", "worker.serving", "--port", str(port), "--region", region,
                                   "--public-url", endpoint], env)


def provider_status(address: str | None = typer.Argument(None, help="Provider address (default: --as)"),
                    as_: RoleOpt = None) -> None:
    """Stake, endpoint, and (when it answers) requests served, batches and vouchers."""
    from eth_account import Account

    h = hearth()
    a = address_arg(address) if address else Account.from_key(key_for(as_)).address
    p = h.staking.functions.getProvider(a).call()
    if not p[5]:
        raise CliError(f"{a} is not a registered provider")
    mid = default_model(h)
    st = Settlement(h)
    active = h.staking.functions.isActive(a).call()
    console.print(f"{a}: {'active' if active else 'inactive'}, staked {fmt(p[0], HST_DECIMALS)} HST "
                  f"(locked {fmt(p[1], HST_DECIMALS)}, unbonding {fmt(p[2], HST_DECIMALS)}), "
                  f"stake locked until {h.staking.functions.lockedUntil(a).call()}")
    console.print(f"endpoint {p[6]} region {p[7]} gpu {p[8]}; price {st.price_of(a, mid)} per unit")
    try:
        s: dict[str, Any] = httpx.get(f"{p[6].rstrip('/')}/v1/serving/status", timeout=5).json()
    except (httpx.HTTPError, ValueError) as exc:
        console.print(f"endpoint not answering ({exc.__class__.__name__})")
        return
    console.print(f"served {s['leaves']} requests; batches committed {s['batches_committed']} "
                  f"(open {s['batches_open']}, gas {s['batch_gas']}); collected "
                  f"{fmt(int(s['collected']), USD_DECIMALS)} hUSD this run")
    for v in s["vouchers"]:
        console.print(f"  voucher of {v['payer']}: {fmt(int(v['cumulative']), USD_DECIMALS)} hUSD, "
                      f"{'collected' if v['collected'] else 'not yet collected'}")
