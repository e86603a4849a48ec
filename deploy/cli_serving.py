"""``hearth provider join`` and ``hearth provider status``: a provider on the serving plane.

``join`` does on-chain what a provider needs to be routed to (register or update its endpoint,
region and GPU class; stake up to ``--stake``; serve the model; quote its price) and then, with
``--run``, starts the endpoint in the foreground (``python -m worker.serving``). ``status``
reads the chain (stake; challenges against the provider's batches and jobs and their outcomes,
slashes, earnings collected and withdrawn: :mod:`contracts.provider_record`) and, when the
endpoint answers, its ledger: capacity left, requests served, batches committed, vouchers.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict
from typing import Any

import httpx
import typer

from contracts.provider_record import LEAF_PENDING, ProviderRecord, read_provider_record
from contracts.settlement import Settlement
from contracts.types import gpu_class_bytes
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
    """Register (or update) the endpoint, stake, serve the model, quote a price; optionally run.

    Every argument and precondition (endpoint, stake, minimum stake, HST balance, price ceiling)
    is checked before the first transaction: a refused join changes nothing."""
    from urllib.parse import urlparse

    from contracts.serving import usable_endpoint

    if not usable_endpoint(endpoint):
        raise CliError(f"not an endpoint gateways can reach: {endpoint!r} (write http://host:port)")
    want = parse_amount(stake, HST_DECIMALS, what="--stake")
    gpu_class_bytes(gpu_class)  # at most 32 bytes, as the contract requires
    h = hearth()
    key = key_for(as_)
    s = h.sender(key)
    mid = default_model(h)
    st = Settlement(h)
    ceiling = int(st.batches.functions.priceCeiling(mid).call())
    if price > ceiling:
        raise CliError(f"price {price} is above the model's ceiling {ceiling}")
    info = h.staking.functions.getProvider(s.address).call()
    registered = bool(info[5])
    if not registered:
        minimum = int(h.staking.functions.minStake().call())
        if want < minimum:
            raise CliError(f"--stake {stake} HST is below the minimum stake of {fmt(minimum, HST_DECIMALS)} HST "
                           f"a provider registers with")
    need = max(0, want - int(info[0])) if registered else want
    if need:
        bal = int(h.hst.functions.balanceOf(s.address).call())
        if bal < need:
            raise CliError(f"insufficient HST balance to stake {fmt(need, HST_DECIMALS)} more: "
                           f"{fmt(bal, HST_DECIMALS)}")
    # Only now: transactions.
    if need and int(h.hst.functions.allowance(s.address, h.staking.address).call()) < need:
        s.send(h.hst.functions.approve(h.staking.address, need))
    if registered:
        s.send(h.staking.functions.updateProvider(endpoint, region, gpu_class))
        if need:
            s.send(h.staking.functions.stake(need))
    else:
        s.send(h.staking.functions.register(endpoint, region, gpu_class, need))
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


def provider_status(
    address: str | None = typer.Argument(None, help="Provider address (default: --as)"),
    from_block: int | None = typer.Option(None, min=0, help="First block of the chain record "
                                                           "(default: the deployment block)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    as_: RoleOpt = None,
) -> None:
    """Stake, endpoint, capacity left, requests served, batches and vouchers (when the endpoint
    answers), and from the chain: challenges and their outcomes, slashes, earnings withdrawn."""
    from eth_account import Account

    h = hearth()
    a = address_arg(address) if address else Account.from_key(key_for(as_)).address
    head = h.w3.eth.get_block("latest")  # every chain read below is of this block
    at, now = int(head["number"]), int(head["timestamp"])
    if from_block is not None and from_block > at:
        raise CliError(f"--from-block {from_block} is after the chain's head, block {at}")
    staking = h.staking.functions
    p = staking.getProvider(a).call(block_identifier=at)
    if not p[5]:
        raise CliError(f"{a} is not a registered provider")
    mid = default_model(h)
    active = bool(staking.isActive(a).call(block_identifier=at))
    locked_until = int(staking.lockedUntil(a).call(block_identifier=at))
    price = int(Settlement(h).batches.functions.priceOf(a, mid).call(block_identifier=at))
    try:
        s: dict[str, Any] | None = httpx.get(f"{p[6].rstrip('/')}/v1/serving/status", timeout=5).json()
        down = None
    except (httpx.HTTPError, ValueError) as exc:
        s, down = None, exc.__class__.__name__
    rec = read_provider_record(h, a, from_block=from_block, to_block=at)
    if as_json:
        print(json.dumps(_status_json(a, p, active, locked_until, price, s, rec), indent=2))
        return
    console.print(f"{a}: {'active' if active else 'inactive'}, staked {fmt(p[0], HST_DECIMALS)} HST "
                  f"(locked {fmt(p[1], HST_DECIMALS)}, unbonding {fmt(p[2], HST_DECIMALS)}), "
                  f"stake locked until {locked_until}" + (f", jailed until {p[4]}" if p[4] > now else ""))
    console.print(f"endpoint {p[6]} region {p[7]} gpu {p[8]}; price {price} per unit")
    if s is None:
        console.print(f"endpoint not answering ({down})")
    else:
        _print_endpoint(s)
    _print_record(rec)


def _print_endpoint(s: dict[str, Any]) -> None:
    console.print(f"served {s['leaves']} requests; batches committed {s['batches_committed']} "
                  f"(open {s['batches_open']}, gas {s['batch_gas']}); collected "
                  f"{fmt(int(s['collected']), USD_DECIMALS)} hUSD this run")
    cap = s.get("capacity")
    if cap is not None and int(cap["bound"]) >= 0:
        console.print(f"capacity left {fmt(int(cap['left']), USD_DECIMALS)} of the "
                      f"{fmt(int(cap['bound']), USD_DECIMALS)} hUSD its stake backs (unsettled "
                      f"{fmt(int(cap['exposure']), USD_DECIMALS)} hUSD; {cap['refused']} requests refused)")
    elif cap is not None:
        console.print("capacity not known yet (the endpoint has not read its stake)")
    for v in s["vouchers"]:
        console.print(f"  voucher of {v['payer']}: {fmt(int(v['cumulative']), USD_DECIMALS)} hUSD, "
                      f"{'collected' if v['collected'] else 'not yet collected'}")


#: challenges listed one per line, the latest last; older ones are only counted
LISTED = 10


def _print_record(rec: ProviderRecord) -> None:
    console.print(f"on chain, blocks {rec.from_block}-{rec.to_block}:")
    leaves = rec.leaf_outcomes()
    open_ = sum(leaves[s] for s in LEAF_PENDING)
    console.print(f"serving-plane challenges {len(rec.leaf_challenges)}"
                  + _counts(leaves) + (f" ({open_} still open)" if open_ else ""))
    _unlisted(len(rec.leaf_challenges))
    for c in rec.leaf_challenges[-LISTED:]:
        how = " (withheld)" if c.withheld else " (by default)" if c.by_default else ""
        slashed = f", slashed {fmt(c.slashed, HST_DECIMALS)} HST" if c.slashed else ""
        console.print(f"  batch {c.batch_id} leaf {c.index}: {c.status}{how}{slashed}, by {c.challenger or '?'}")
    jobs = rec.job_outcomes()
    open_ = jobs["pending"] + jobs["escalated"]
    console.print(f"per-job challenges {len(rec.job_challenges)}"
                  + _counts(jobs) + (f" ({open_} still open)" if open_ else ""))
    _unlisted(len(rec.job_challenges))
    for j in rec.job_challenges[-LISTED:]:
        console.print(f"  job {j.job_id}: {j.outcome.replace('_', ' ')}, by {j.challenger or '?'}")
    console.print(f"slashes {len(rec.slashes)}: {fmt(rec.slashed_total, HST_DECIMALS)} HST in all")
    e = rec.earnings
    console.print(f"earnings: collected {fmt(e.collected, USD_DECIMALS)} hUSD from the escrow in {e.collections} "
                  f"collections; withdrew {fmt(e.withdrawn_market, USD_DECIMALS)} hUSD from the job market, "
                  f"{fmt(e.withdrawn_settlement, USD_DECIMALS)} hUSD from the batch settlement and "
                  f"{fmt(e.rewards_withdrawn, HST_DECIMALS)} HST of rewards")


def _unlisted(n: int) -> None:
    if n > LISTED:
        console.print(f"  ({n - LISTED} earlier not listed; --json lists all)")


def _counts(by_outcome: dict[str, int]) -> str:
    """``: 1 revealed, 2 fraud``: the outcomes that occur, in the given order."""
    parts = [f"{n} {outcome.replace('_', ' ')}" for outcome, n in by_outcome.items() if n]
    return ": " + ", ".join(parts) if parts else ""


def _status_json(a: str, p: Any, active: bool, locked_until: int, price: int, s: dict[str, Any] | None,
                 rec: ProviderRecord) -> dict[str, Any]:
    """Amounts as decimal strings of the smallest unit (as the provider's own status does)."""
    e = rec.earnings
    endpoint: dict[str, Any] | None = None
    if s is not None:
        endpoint = {"requests_served": s["leaves"], "requests_served_this_run": s.get("served_requests"),
                    "batches_committed": s["batches_committed"],
                    "batches_open": s["batches_open"], "batch_gas": s["batch_gas"],
                    "collected_this_run": s["collected"], "capacity": s.get("capacity"), "vouchers": s["vouchers"]}
    return {
        "provider": a, "active": active, "staked": str(p[0]), "locked": str(p[1]), "unbonding": str(p[2]),
        "stake_locked_until": locked_until, "jailed_until": int(p[4]), "strikes": int(p[9]),
        "endpoint": p[6], "region": p[7], "gpu_class": p[8], "price": price, "endpoint_status": endpoint,
        "from_block": rec.from_block, "to_block": rec.to_block,
        "serving_challenges": {"total": len(rec.leaf_challenges), **rec.leaf_outcomes(),
                               "leaves": [{**asdict(c), "slashed": str(c.slashed), "refunded": str(c.refunded)}
                                          for c in rec.leaf_challenges]},
        "job_challenges": {"total": len(rec.job_challenges), **rec.job_outcomes(),
                           "jobs": [{**asdict(j), "slashed": str(j.slashed)} for j in rec.job_challenges]},
        "slashes": {"total": len(rec.slashes), "amount": str(rec.slashed_total),
                    "events": [{**asdict(x), "amount": str(x.amount)} for x in rec.slashes]},
        "earnings": {"collected": str(e.collected), "collections": e.collections,
                     "withdrawn_market": str(e.withdrawn_market), "withdrawn_settlement": str(e.withdrawn_settlement),
                     "rewards_withdrawn": str(e.rewards_withdrawn)},
    }
