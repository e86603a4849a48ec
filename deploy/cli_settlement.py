"""``hearth escrow`` and ``hearth batch``: batched settlement from the command line.

The off-chain half (signer keys, signed payment receipts, vouchers, committed batches with their
leaves) is kept as JSON under ``$HEARTH_DATA_DIR/settlement/`` so that the walk in the README can
run one command at a time: deposit, authorize a signer, sign receipts, aggregate, commit a batch,
collect, challenge a leaf. Signer keys written there are demo keys for the devnet.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from eth_account import Account
from eth_utils import is_address, keccak, to_checksum_address
from rich.table import Table

from contracts.settlement import (
    Batch,
    PaymentReceipt,
    Settlement,
    SignedVoucher,
    Voucher,
    WorkBatch,
    WorkReceipt,
    aggregate,
    receipt_value,
    sign_payment_receipt,
    sign_voucher,
)
from deploy.cli import (
    UINT256_MAX,
    USD_DECIMALS,
    CliError,
    HearthCommand,
    RoleOpt,
    bytes32_arg,
    console,
    default_model,
    fmt,
    friendly,
    hearth,
    key_for,
    parse_amount,
)
from deploy.settings import CliSettings

escrow_app = typer.Typer(help="Payment escrow: deposits, lanes, signers, receipts, vouchers.", no_args_is_help=True)
batch_app = typer.Typer(help="Batch settlement: prices, commits, leaf challenges.", no_args_is_help=True)
NUMERICS = b"cpu-fp32".ljust(32, b"\x00")
#: The widths of a receipt's units (WorkReceipt) and value (PaymentReceipt).
UINT64_MAX = 2**64 - 1
UINT128_MAX = 2**128 - 1
BatchIdArg = Annotated[int, typer.Argument(min=0, max=UINT256_MAX, help="Batch id.")]
IndexArg = Annotated[int, typer.Argument(min=0, max=UINT256_MAX, help="Leaf index within the batch.")]


def mount(app: typer.Typer) -> None:
    app.add_typer(escrow_app, name="escrow")
    app.add_typer(batch_app, name="batch")


# ---------------------------------------------------------------- the off-chain store


def _store_path(name: str) -> Path:
    return CliSettings().data_dir / "settlement" / f"{name}.json"


def _load(name: str) -> Any:
    p = _store_path(name)
    return json.loads(p.read_text()) if p.exists() else {}


def _save(name: str, data: Any) -> None:
    p = _store_path(name)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(p)


def _who(value: str) -> str:
    """An address, or a devnet role's address."""
    if is_address(value):
        return to_checksum_address(value)
    from common import accounts

    acc = accounts.load(CliSettings().data_dir / accounts.ACCOUNTS_FILE)
    if value not in acc:
        raise CliError(f"not an address or devnet role: {value!r}")
    return acc[value].address


def _settlement() -> Settlement:
    h = hearth()
    if h.escrow is None or h.settlement is None:
        raise CliError("this deployment has no batched settlement: restart the devnet (`make up`)")
    return Settlement(h)


def _hex(b: bytes) -> str:
    return "0x" + b.hex()


def _receipt_from(d: dict[str, Any]) -> PaymentReceipt:
    return PaymentReceipt(d["payer"], d["provider"], bytes.fromhex(d["request_id"][2:]), d["value"], d["timestamp"])


# ---------------------------------------------------------------- escrow


@escrow_app.command("deposit", cls=HearthCommand)
@friendly
def escrow_deposit(
    amount: str = typer.Argument(..., help="hUSD to deposit, e.g. 5"),
    to: str | None = typer.Option(None, "--to", help="Provider (address or role) whose lane receives it all."),
    as_: RoleOpt = None,
) -> None:
    """Deposit hUSD into the escrow, optionally straight into one provider's lane."""
    wei = parse_amount(amount, USD_DECIMALS)
    s = _settlement()
    key = key_for(as_)
    sender = s.h.sender(key)
    provider = _who(to) if to is not None else None  # before the approval: a bad --to sends nothing
    bal = s.h.usd.functions.balanceOf(sender.address).call()
    if bal < wei:
        raise CliError(f"insufficient hUSD balance: {fmt(bal, USD_DECIMALS)} < {amount}")
    if s.h.usd.functions.allowance(sender.address, s.escrow.address).call() < wei:
        s.approve(key, wei)
    if provider is None:
        s.deposit(key, wei)
        console.print(f"deposited {fmt(wei, USD_DECIMALS)} hUSD (unallocated)")
    else:
        sender.send(s.escrow.functions.depositAndAllocate([provider], [wei]))
        console.print(f"deposited {fmt(wei, USD_DECIMALS)} hUSD into the lane to {provider}")
    _print_lane(s, sender.address, provider)


@escrow_app.command("authorize-signer", cls=HearthCommand)
@friendly
def escrow_authorize_signer(
    days: int = typer.Option(30, min=1, max=36500, help="Days until the signer expires."),
    allocate: bool = typer.Option(False, help="Also allow it to allocate deposits to lanes."),
    as_: RoleOpt = None,
) -> None:
    """Create a signer key (a gateway's or an API key's) and authorize it with its proof of possession."""
    s = _settlement()
    key = key_for(as_)
    payer = s.h.sender(key).address
    signer = Account.create()
    expiry = int(s.h.w3.eth.get_block("latest")["timestamp"]) + days * 86400
    s.authorize_signer(key, _hex(bytes(signer.key)), expiry, allocate)
    signers = _load("signers")
    signers[payer] = {"address": signer.address, "key": _hex(bytes(signer.key)), "expiry": expiry}
    _save("signers", signers)
    console.print(f"authorized signer {signer.address} for {payer} until {expiry} "
                  f"(key kept in {_store_path('signers')})")


@escrow_app.command("receipt", cls=HearthCommand)
@friendly
def escrow_receipt(
    provider: str = typer.Option(..., "--provider", help="Provider (address or role) that served the request."),
    units: int = typer.Option(..., min=1, max=UINT64_MAX, help="Units (tokens) of the request."),
    request: str | None = typer.Option(None, help="Request id text (default: a fresh one)."),
    model: str | None = typer.Option(None, help="Model id (default: the manifest's first)."),
    as_: RoleOpt = None,
) -> None:
    """Sign a PaymentReceipt for one request, valued at the provider's quoted price."""
    mid_arg = bytes32_arg(model, "model id") if model else None
    s = _settlement()
    payer = s.h.sender(key_for(as_)).address
    prov = _who(provider)
    mid = mid_arg or default_model(s.h)
    price = s.price_of(prov, mid)
    if price == 0:
        raise CliError(f"provider {prov} quotes no price for model 0x{mid.hex()}: `hearth batch quote` first")
    if receipt_value(units, price) > UINT128_MAX:
        raise CliError(f"{units} units at {price} per unit is more than a receipt can carry (uint128)")
    signers = _load("signers")
    signer_key = signers[payer]["key"] if payer in signers else key_for(as_)
    receipts = _load("receipts")
    n = len(receipts.get("all", []))
    rid = keccak(text=request or f"request {payer} {n} {s.h.w3.eth.block_number}")
    now = int(s.h.w3.eth.get_block("latest")["timestamp"])
    r = PaymentReceipt(payer, prov, rid, receipt_value(units, price), now)
    sig = sign_payment_receipt(signer_key, r, s.chain_id, s.escrow.address)
    receipts.setdefault("all", []).append({
        "payer": payer, "provider": prov, "request_id": _hex(rid), "value": r.value, "timestamp": now,
        "units": units, "model_id": _hex(mid), "signature": _hex(sig), "aggregated": False, "committed": False,
    })
    _save("receipts", receipts)
    console.print(f"signed receipt {_hex(rid)}: {units} units x {price} = {fmt(r.value, USD_DECIMALS)} hUSD")


@escrow_app.command("aggregate", cls=HearthCommand)
@friendly
def escrow_aggregate(
    provider: str = typer.Option(..., "--provider", help="Provider (address or role)."),
    as_: RoleOpt = None,
) -> None:
    """Aggregate the payer's unaggregated receipts to a provider into its next cumulative voucher."""
    s = _settlement()
    payer = s.h.sender(key_for(as_)).address
    prov = _who(provider)
    receipts = _load("receipts")
    pending = [d for d in receipts.get("all", []) if d["payer"] == payer and d["provider"] == prov
               and not d["aggregated"]]
    if not pending:
        raise CliError(f"no unaggregated receipts from {payer} to {prov}")
    vouchers = _load("vouchers")
    lane_key = f"{payer}:{prov}"
    prev = vouchers.get(lane_key)
    previous = Voucher(payer, prov, prev["cumulative_value"], prev["timestamp"]) if prev else None
    v = aggregate([_receipt_from(d) for d in pending], previous)
    signers = _load("signers")
    signer_key = signers[payer]["key"] if payer in signers else key_for(as_)
    signed = sign_voucher(signer_key, v, s.chain_id, s.escrow.address)
    vouchers[lane_key] = {"payer": payer, "provider": prov, "cumulative_value": v.cumulative_value,
                          "timestamp": v.timestamp, "signature": _hex(signed.signature)}
    for d in pending:
        d["aggregated"] = True
    _save("vouchers", vouchers)
    _save("receipts", receipts)
    console.print(f"voucher {payer} -> {prov}: cumulative {fmt(v.cumulative_value, USD_DECIMALS)} hUSD "
                  f"({len(pending)} receipts added)")


@escrow_app.command("collect", cls=HearthCommand)
@friendly
def escrow_collect(as_: RoleOpt = None) -> None:
    """Redeem every voucher held for the caller (a provider) in one transaction."""
    s = _settlement()
    key = key_for(as_)
    me = s.h.sender(key).address
    held = [d for d in _load("vouchers").values() if d["provider"] == me]
    if not held:
        raise CliError(f"no vouchers held for {me}")
    signed = [SignedVoucher(Voucher(d["payer"], d["provider"], d["cumulative_value"], d["timestamp"]),
                            bytes.fromhex(d["signature"][2:])) for d in held]
    rcpt = s.collect(key, signed)
    for lg in rcpt["logs"]:
        if lg["address"] == s.escrow.address and _is(s, lg, "Collected"):
            a = s.escrow.events.Collected().process_log(lg)["args"]
            console.print(f"collected {fmt(a['amount'], USD_DECIMALS)} hUSD from {a['payer']} "
                          f"(collected {fmt(a['collected'], USD_DECIMALS)} of "
                          f"{fmt(a['cumulativeValue'], USD_DECIMALS)}; "
                          f"lane left {fmt(a['laneBalance'], USD_DECIMALS)})")


def _is(s: Settlement, lg: Any, name: str) -> bool:
    from contracts.bindings import event_topics

    return bytes(lg["topics"][0]) == bytes.fromhex(event_topics(s.escrow, [name])[0][2:])


@escrow_app.command("lane", cls=HearthCommand)
@friendly
def escrow_lane(
    payer: str = typer.Option(..., "--payer", help="Payer (address or role)."),
    provider: str = typer.Option(..., "--provider", help="Provider (address or role)."),
) -> None:
    """Show a lane: balance, collected, thawing."""
    s = _settlement()
    _print_lane(s, _who(payer), _who(provider))


def _print_lane(s: Settlement, payer: str, provider: str | None) -> None:
    t = Table(title=f"escrow of {payer}")
    for col in ("lane", "balance hUSD", "collected hUSD", "thawing hUSD", "thaw ends"):
        t.add_column(col)
    t.add_row("unallocated", fmt(s.deposit_of(payer), USD_DECIMALS), "", "", "")
    if provider:
        lane = s.lane(payer, provider)
        t.add_row(provider, fmt(lane.balance, USD_DECIMALS), fmt(lane.collected, USD_DECIMALS),
                  fmt(lane.thawing, USD_DECIMALS), str(lane.thaw_end or ""))
    console.print(t)


@escrow_app.command("thaw", cls=HearthCommand)
@friendly
def escrow_thaw(
    amount: str = typer.Argument(..., help="hUSD to take back from the lane."),
    provider: str = typer.Option(..., "--provider"),
    as_: RoleOpt = None,
) -> None:
    """Announce taking money back from a lane; withdrawable after the thaw delay."""
    wei = parse_amount(amount, USD_DECIMALS)
    s = _settlement()
    s.thaw(key_for(as_), _who(provider), wei)
    console.print(f"thawing; delay {s.escrow.functions.thawDelay().call()}s")


@escrow_app.command("withdraw-thawed", cls=HearthCommand)
@friendly
def escrow_withdraw_thawed(provider: str = typer.Option(..., "--provider"), as_: RoleOpt = None) -> None:
    """After the delay, take back what is left of the thawed amount."""
    s = _settlement()
    s.withdraw_thawed(key_for(as_), _who(provider))
    console.print("withdrawn")


# ---------------------------------------------------------------- batches


@batch_app.command("quote", cls=HearthCommand)
@friendly
def batch_quote(
    price: int = typer.Argument(..., min=0, help="Price per unit in hUSD wei (6 decimals), at most the ceiling."),
    model: str | None = typer.Option(None, help="Model id (default: the manifest's first)."),
    as_: RoleOpt = None,
) -> None:
    """Quote the caller's price per unit for a model it serves."""
    mid_arg = bytes32_arg(model, "model id") if model else None
    s = _settlement()
    mid = mid_arg or default_model(s.h)
    ceiling = int(s.batches.functions.priceCeiling(mid).call())
    if price > ceiling:  # before the transaction (and before a uint256 could overflow)
        raise CliError(f"the quoted price {price} is above the ceiling {ceiling} governance set for model "
                       f"0x{mid.hex()}")
    s.quote_price(key_for(as_), mid, price)
    console.print(f"quoted {price} hUSD wei per unit for 0x{mid.hex()} (ceiling {ceiling})")


@batch_app.command("commit", cls=HearthCommand)
@friendly
def batch_commit(as_: RoleOpt = None) -> None:
    """Commit one Merkle root over the caller's uncommitted work receipts."""
    s = _settlement()
    key = key_for(as_)
    me = s.h.sender(key).address
    receipts = _load("receipts")
    pending = [d for d in receipts.get("all", []) if d["provider"] == me and not d["committed"]]
    if not pending:
        raise CliError(f"no uncommitted receipts served by {me}")
    model_hash = {m.model_id: bytes.fromhex(m.runtime_hash[2:]) for m in s.h.manifest.models}
    work = [WorkReceipt(bytes.fromhex(d["request_id"][2:]), d["payer"], bytes.fromhex(d["model_id"][2:]),
                        keccak(text=f"input {d['request_id']}"), keccak(text=f"output {d['request_id']}"),
                        d["units"], d["value"], model_hash.get(d["model_id"], b"\x00" * 32), NUMERICS)
            for d in pending]
    wb = s.work_batch(work)
    batch_id, batch, _ = s.commit(key, wb)
    batches = _load("batches")
    batches[str(batch_id)] = {"batch": [batch.provider, _hex(batch.root), batch.count, batch.units, batch.value,
                                        batch.committed_at],
                              "leaves": [[_hex(x) if isinstance(x, bytes) else x for x in w.as_tuple()] for w in work]}
    for d in pending:
        d["committed"] = True
    _save("batches", batches)
    _save("receipts", receipts)
    console.print(f"committed batch [bold]{batch_id}[/]: {batch.count} receipts, root {_hex(batch.root)}, "
                  f"{batch.units} units, {fmt(batch.value, USD_DECIMALS)} hUSD")


def _batch(s: Settlement, batch_id: int) -> tuple[Batch, WorkBatch]:
    d = _load("batches").get(str(batch_id))
    if d is None:
        raise CliError(f"batch {batch_id} is not in {_store_path('batches')}")
    b = d["batch"]
    batch = Batch(b[0], bytes.fromhex(b[1][2:]), b[2], b[3], b[4], b[5])

    def arg(x: Any) -> Any:
        return bytes.fromhex(x[2:]) if isinstance(x, str) and len(x) == 66 else x

    leaves = [WorkReceipt(*[arg(x) for x in leaf]) for leaf in d["leaves"]]
    return batch, s.work_batch(leaves)


def _allow_bond(s: Settlement, key: str) -> int:
    """The dispute bond, allowed to the batch settlement; a wallet that cannot pay it is refused
    before the approval is sent."""
    bond = int(s.params().demand_bond)
    me = s.h.sender(key).address
    if bond:
        bal = int(s.h.usd.functions.balanceOf(me).call())
        if bal < bond:
            raise CliError(f"the dispute bond is {fmt(bond, USD_DECIMALS)} hUSD but {me} holds "
                           f"{fmt(bal, USD_DECIMALS)}")
        if int(s.h.usd.functions.allowance(me, s.batches.address).call()) < bond:
            s.h.sender(key).send(s.h.usd.functions.approve(s.batches.address, bond))
    return bond


def _leaf_index(wb: WorkBatch, index: int) -> int:
    if not 0 <= index < wb.count:
        raise CliError(f"index {index} outside the batch of {wb.count}")
    return index


@batch_app.command("challenge", cls=HearthCommand)
@friendly
def batch_challenge(batch_id: BatchIdArg, index: IndexArg, as_: RoleOpt = None) -> None:
    """Dispute one leaf with its Merkle proof (posts the bond)."""
    s = _settlement()
    key = key_for(as_)
    batch, wb = _batch(s, batch_id)
    i = _leaf_index(wb, index)
    bond = _allow_bond(s, key)
    s.challenge_leaf(key, batch_id, batch, i, wb.receipts[i], wb.proof(i))
    case = s.batches.functions.leafCase(batch_id, i).call()
    console.print(f"challenged leaf {i} of batch {batch_id} (proof of {wb.tree.depth} hashes); "
                  f"bond {fmt(bond, USD_DECIMALS)} hUSD; decided by {case[2]}")


@batch_app.command("demand", cls=HearthCommand)
@friendly
def batch_demand(batch_id: BatchIdArg, index: IndexArg, as_: RoleOpt = None) -> None:
    """Demand a leaf's data; unrevealed by the deadline, it counts as fraud."""
    s = _settlement()
    key = key_for(as_)
    batch, wb = _batch(s, batch_id)
    i = _leaf_index(wb, index)
    _allow_bond(s, key)
    s.demand_leaf(key, batch_id, batch, i)
    console.print(f"demanded leaf {index} of batch {batch_id}")


@batch_app.command("reveal", cls=HearthCommand)
@friendly
def batch_reveal(batch_id: BatchIdArg, index: IndexArg, as_: RoleOpt = None) -> None:
    """Reveal a demanded leaf with its proof."""
    s = _settlement()
    batch, wb = _batch(s, batch_id)
    i = _leaf_index(wb, index)
    s.reveal_leaf(key_for(as_), batch_id, batch, i, wb.receipts[i], wb.proof(i))
    console.print(f"revealed leaf {i} of batch {batch_id}")


@batch_app.command("draw", cls=HearthCommand)
@friendly
def batch_draw(batch_id: BatchIdArg, index: IndexArg, as_: RoleOpt = None) -> None:
    """Draw a leaf dispute's committee (the dispute game; anyone, from the block after the draw block)."""
    s = _settlement()
    s.h.sender(key_for(as_)).send(s.batches.functions.drawLeafCommittee(batch_id, index))
    seats = s.batches.functions.leafCommittee(batch_id, index).call()
    console.print(f"leaf {index} of batch {batch_id}: committee of {len(seats)} seats drawn")


@batch_app.command("resolve", cls=HearthCommand)
@friendly
def batch_resolve(batch_id: BatchIdArg, index: IndexArg, as_: RoleOpt = None) -> None:
    """End a leaf dispute: the committee's verdict, escalation to governance, or the neutral default."""
    s = _settlement()
    batch, _ = _batch(s, batch_id)
    s.h.sender(key_for(as_)).send(s.batches.functions.resolveLeafDispute(batch_id, batch.as_tuple(), index))
    status = s.batches.functions.leafCase(batch_id, index).call()[0]
    word = {3: "escalated to governance", 4: "upheld", 5: "fraud"}.get(int(status), str(status))
    console.print(f"leaf {index} of batch {batch_id}: {word}")


@batch_app.command("decide", cls=HearthCommand)
@friendly
def batch_decide(
    batch_id: BatchIdArg, index: IndexArg,
    fraud: bool = typer.Option(..., "--fraud/--upheld", help="Governance's decision of an escalated dispute."),
    as_: RoleOpt = None,
) -> None:
    """Decide an escalated leaf dispute (owner, before its escalation deadline)."""
    s = _settlement()
    batch, _ = _batch(s, batch_id)
    s.h.sender(key_for(as_)).send(s.batches.functions.resolveLeaf(batch_id, batch.as_tuple(), index, fraud))
    console.print(f"leaf {index} of batch {batch_id}: {'fraud' if fraud else 'upheld'}")
