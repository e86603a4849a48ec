"""The ``hearth`` command line: devnet, provider, job, model and balance commands, plus the
indexer, worker and gateway services mounted as sub-commands.

Every failure a user can cause (unknown address, insufficient balance or allowance, wrong
chain, unknown model, missing devnet) prints one line naming the problem and exits non-zero.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, TypeVar

import typer
from eth_utils import is_address, keccak, to_checksum_address
from rich.console import Console
from rich.table import Table

from contracts.bindings import Hearth, UnknownJobError, decode_log
from contracts.errors import ChainError, ContractsError
from contracts.manifest import Manifest
from contracts.types import Receipt, Status, gpu_class_bytes

console = Console()
err_console = Console(stderr=True)
app = typer.Typer(help="Hearth: a compute network for AI inference.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
devnet_app = typer.Typer(help="The local devnet.", no_args_is_help=True)
provider_app = typer.Typer(help="Provider registration and stake.", no_args_is_help=True)
job_app = typer.Typer(help="Jobs: post, follow, deliver, settle.", no_args_is_help=True)
model_app = typer.Typer(help="Registered models.", no_args_is_help=True)
app.add_typer(devnet_app, name="devnet")
app.add_typer(provider_app, name="provider")
app.add_typer(job_app, name="job")
app.add_typer(model_app, name="model")

USD_DECIMALS = 6
HST_DECIMALS = 18
F = TypeVar("F", bound=Callable[..., Any])


class CliError(Exception):
    """A problem the user can fix; printed as one line."""


def friendly(fn: F) -> F:
    """Turns every expected failure into one red line and exit code 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (CliError, ContractsError, ValueError) as exc:
            err_console.print(f"[red]error:[/] {exc}")
            raise typer.Exit(1) from None
        except (ConnectionError, OSError) as exc:
            err_console.print(f"[red]error:[/] cannot reach the chain: {exc}")
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


# ---------------------------------------------------------------- helpers

RoleOpt = Annotated[str | None, typer.Option("--as", help="Devnet role whose key to use (client, provider, ...).")]


def hearth() -> Hearth:
    h = Hearth(Manifest.load())
    try:
        h.check_chain()
    except ChainError:
        raise
    except Exception as exc:  # noqa: BLE001 - connection refused and friends
        raise CliError(f"cannot reach the chain at {h.manifest.rpc_url}: is the devnet up (`make up`)?") from exc
    return h


def key_for(role: str | None) -> str:
    """The signing key: ``HEARTH_KEY`` from the environment, or a devnet role's key."""
    if role:
        from deploy import accounts

        acc = accounts.load()
        if role not in acc:
            raise CliError(f"unknown devnet role {role!r}; known: {', '.join(acc)}")
        return acc[role].key
    key = os.environ.get("HEARTH_KEY")
    if not key:
        raise CliError("no key: pass --as ROLE on the devnet or set HEARTH_KEY")
    return key


def address_arg(value: str) -> str:
    if not is_address(value):
        raise CliError(f"not an address: {value!r}")
    return to_checksum_address(value)


def parse_amount(value: str, decimals: int) -> int:
    try:
        d = Decimal(value)
    except InvalidOperation:
        raise CliError(f"not an amount: {value!r}") from None
    if d <= 0:
        raise CliError(f"amount must be positive: {value}")
    wei = d * (10**decimals)
    if wei != wei.to_integral_value():
        raise CliError(f"amount {value} has more than {decimals} decimals")
    return int(wei)


def fmt(amount: int, decimals: int) -> str:
    return f"{Decimal(amount) / (10**decimals):,.{min(decimals, 6)}f}"


def bytes32_arg(value: str, what: str) -> bytes:
    raw = value.removeprefix("0x")
    try:
        b = bytes.fromhex(raw)
    except ValueError:
        raise CliError(f"{what} is not hex: {value!r}") from None
    if len(b) != 32:
        raise CliError(f"{what} must be 32 bytes, got {len(b)}")
    return b


def default_model(h: Hearth) -> bytes:
    if not h.manifest.models:
        raise CliError("no model in the manifest: pass --model")
    return bytes.fromhex(h.manifest.models[0].model_id[2:])


def snapshot_balances(h: Hearth, addrs: dict[str, str]) -> dict[str, tuple[int, int, int]]:
    out = {}
    for name, a in addrs.items():
        out[name] = (
            h.usd.functions.balanceOf(a).call(),
            h.market.functions.balanceOf(a).call(),
            h.staking.functions.getProvider(a).call()[0],
        )
    return out


def print_moves(before: dict[str, tuple[int, int, int]], after: dict[str, tuple[int, int, int]]) -> None:
    t = Table(title="balances that moved")
    for col in ("account", "wallet hUSD", "market credit hUSD", "staked HST"):
        t.add_column(col, justify="right" if col != "account" else "left")
    moved = False
    for name in before:
        b, a = before[name], after[name]
        if a == b:
            continue
        moved = True
        cells = []
        for i, dec in enumerate((USD_DECIMALS, USD_DECIMALS, HST_DECIMALS)):
            d = a[i] - b[i]
            cells.append(f"{'+' if d > 0 else ''}{fmt(d, dec)}" if d else "")
        t.add_row(name, *cells)
    if moved:
        console.print(t)


def role_addresses() -> dict[str, str]:
    try:
        from deploy import accounts

        return {r: a.address for r, a in accounts.load().items() if r != "deployer"}
    except ContractsError:
        return {}


def market_holdings(h: Hearth) -> dict[str, str]:
    return {"market (escrow)": h.market.address}


# ---------------------------------------------------------------- devnet

@devnet_app.command("up")
@friendly
def devnet_up(
    port: int = typer.Option(8545, help="RPC port."),
    chain_id: int = typer.Option(31337, help="Chain id."),
    block_time: float = typer.Option(0, help="Seconds per block; 0 mines a block per transaction."),
) -> None:
    """Start Anvil, deploy, fund and stake demo accounts; run until Ctrl-C."""
    from deploy.devnet import run_foreground

    run_foreground(port, chain_id, block_time or None)


@devnet_app.command("advance")
@friendly
def devnet_advance(seconds: int = typer.Argument(..., help="Seconds to move the devnet clock forward.")) -> None:
    """Move the devnet's clock forward (to close a challenge window in a demo)."""
    h = hearth()
    h.w3.provider.make_request("evm_increaseTime", [seconds])  # type: ignore[arg-type]
    h.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
    console.print(f"devnet clock moved {seconds}s; block {h.w3.eth.block_number}")


# ---------------------------------------------------------------- models

@model_app.command("list")
@friendly
def model_list() -> None:
    """Models registered on-chain."""
    h = hearth()
    t = Table(title="models")
    for col in ("model id", "name", "price / token (hUSD)", "active", "runtime hash"):
        t.add_column(col)
    for m in h.manifest.models:
        onchain = h.registry.functions.getModel(bytes.fromhex(m.model_id[2:])).call()
        t.add_row(m.model_id, onchain[3], fmt(onchain[1], USD_DECIMALS), str(onchain[2]), "0x" + onchain[0].hex())
    console.print(t)


# ---------------------------------------------------------------- providers

@provider_app.command("register")
@friendly
def provider_register(
    endpoint: str = typer.Option(..., help="Public URL of the node."),
    region: str = typer.Option("local"),
    gpu_class: str = typer.Option("cpu"),
    model: str | None = typer.Option(None, help="Model id to serve (default: the manifest's first)."),
    stake: str | None = typer.Option(None, help="HST to stake with the registration (default: the minimum stake)."),
    as_: RoleOpt = None,
) -> None:
    """Register as a provider (staking at least the minimum) and serve a model."""
    h = hearth()
    s = h.sender(key_for(as_))
    wei = parse_amount(stake, HST_DECIMALS) if stake else int(h.staking.functions.minStake().call())
    if h.hst.functions.allowance(s.address, h.staking.address).call() < wei:
        s.send(h.hst.functions.approve(h.staking.address, wei))
    s.send(h.staking.functions.register(endpoint, region, gpu_class, wei))
    mid = bytes32_arg(model, "model id") if model else default_model(h)
    s.send(h.staking.functions.setServing(mid, True))
    console.print(f"registered {s.address} serving 0x{mid.hex()}")


@provider_app.command("stake")
@friendly
def provider_stake(amount: str = typer.Argument(..., help="HST to stake, e.g. 100"), as_: RoleOpt = None) -> None:
    """Stake (or add stake)."""
    h = hearth()
    s = h.sender(key_for(as_))
    wei = parse_amount(amount, HST_DECIMALS)
    bal = h.hst.functions.balanceOf(s.address).call()
    if bal < wei:
        raise CliError(f"insufficient HST balance: {fmt(bal, HST_DECIMALS)} < {amount}")
    if h.hst.functions.allowance(s.address, h.staking.address).call() < wei:
        s.send(h.hst.functions.approve(h.staking.address, wei))
    before = snapshot_balances(h, {"you": s.address})
    s.send(h.staking.functions.stake(wei))
    print_moves(before, snapshot_balances(h, {"you": s.address}))


@provider_app.command("unbond")
@friendly
def provider_unbond(amount: str = typer.Argument(...), as_: RoleOpt = None) -> None:
    """Request unbonding of free stake."""
    h = hearth()
    s = h.sender(key_for(as_))
    rcpt = s.send(h.staking.functions.requestUnbond(parse_amount(amount, HST_DECIMALS)))
    ev = decode_log(h.staking, rcpt["logs"][-1])
    args = ev["args"]
    console.print(f"unbonding {fmt(args['unbonding'], HST_DECIMALS)} HST, withdrawable at {args['readyAt']}")


@provider_app.command("withdraw")
@friendly
def provider_withdraw(as_: RoleOpt = None) -> None:
    """Withdraw stake whose unbonding period has passed."""
    h = hearth()
    s = h.sender(key_for(as_))
    rcpt = s.send(h.staking.functions.withdraw())
    ev = decode_log(h.staking, rcpt["logs"][-1])
    console.print(f"withdrew {fmt(ev['args']['amount'], HST_DECIMALS)} HST")


@provider_app.command("info")
@friendly
def provider_info(address: str = typer.Argument(...)) -> None:
    """A provider's stake and status."""
    h = hearth()
    a = address_arg(address)
    p = h.staking.functions.getProvider(a).call()
    if not p[5]:
        raise CliError(f"{a} is not a registered provider")
    active = h.staking.functions.isActive(a).call()
    console.print(f"{a} staked {fmt(p[0], HST_DECIMALS)} HST, locked {fmt(p[1], HST_DECIMALS)}, "
                  f"unbonding {fmt(p[2], HST_DECIMALS)}, {'active' if active else 'inactive'}, "
                  f"endpoint {p[6]} region {p[7]} gpu {p[8]}")


# ---------------------------------------------------------------- jobs

def _input_blob(texts: list[str]) -> bytes:
    return json.dumps({"texts": texts}, ensure_ascii=False, separators=(",", ":")).encode()


def _blob_store() -> Any:
    from contracts.manifest import data_dir

    try:
        from worker.blobs import LocalBlobStore

        return LocalBlobStore(data_dir() / "blobs")
    except ImportError:  # pragma: no cover - the worker package ships it
        raise CliError("worker.blobs is not installed") from None


@job_app.command("post")
@friendly
def job_post(
    text: Annotated[list[str], typer.Option("--text", "-t", help="Text to embed; repeat for several.")],
    max_payment: str | None = typer.Option(None, help="hUSD cap; default: exactly tokens x price."),
    deadline: int = typer.Option(3600, help="Seconds from now until the job may be refunded."),
    model: str | None = typer.Option(None, help="Model id (default: the manifest's first)."),
    approve: bool = typer.Option(False, help="Approve the market for the payment if needed."),
    as_: RoleOpt = None,
) -> None:
    """Post an embedding job, escrowing its payment."""
    h = hearth()
    s = h.sender(key_for(as_))
    mid = bytes32_arg(model, "model id") if model else default_model(h)
    try:
        price = h.registry.functions.activePrice(mid).call()
    except Exception:  # noqa: BLE001 - reverts with UnknownModel
        raise CliError(f"unknown model 0x{mid.hex()}") from None
    blob = _input_blob(list(text))
    if max_payment is None:
        from worker.model.weights import MiniLMTokenizer

        units = sum(MiniLMTokenizer().count_tokens(list(text)))
        pay = units * price
    else:
        pay = parse_amount(max_payment, USD_DECIMALS)
    bal = h.usd.functions.balanceOf(s.address).call()
    if bal < pay:
        raise CliError(f"insufficient hUSD balance: {fmt(bal, USD_DECIMALS)} < {fmt(pay, USD_DECIMALS)}")
    allowance = h.usd.functions.allowance(s.address, h.market.address).call()
    if allowance < pay:
        if not approve:
            raise CliError(f"insufficient allowance for the market: {fmt(allowance, USD_DECIMALS)} < "
                           f"{fmt(pay, USD_DECIMALS)} hUSD; rerun with --approve")
        s.send(h.usd.functions.approve(h.market.address, pay))
    blob_id = _blob_store().put(blob)
    who = {"client": s.address, **market_holdings(h)}
    before = snapshot_balances(h, who)
    dl = int(h.w3.eth.get_block("latest")["timestamp"]) + deadline
    job_id, rcpt = h.post_job(key_for(as_), mid, keccak(blob), pay, dl)
    console.print(f"posted job [bold]{job_id}[/] input {blob_id} max payment {fmt(pay, USD_DECIMALS)} hUSD "
                  f"block {rcpt['blockNumber']} tx 0x{rcpt['transactionHash'].hex().removeprefix('0x')}")
    print_moves(before, snapshot_balances(h, who))


def _job_or_fail(h: Hearth, job_id: int) -> Any:
    try:
        return h.job(job_id)
    except UnknownJobError:
        raise CliError(f"unknown job {job_id}") from None


@job_app.command("status")
@friendly
def job_status(job_id: int = typer.Argument(...)) -> None:
    """A job's state and history, from its events."""
    h = hearth()
    job = _job_or_fail(h, job_id)
    console.print(f"job {job_id}: [bold]{job.status.label}[/] client {job.client} provider {job.provider} "
                  f"max {fmt(job.max_payment, USD_DECIMALS)} paid {fmt(job.payment, USD_DECIMALS)} hUSD")
    for ev in h.job_events(job_id):
        console.print(f"  block {ev.block_number:>6}  {ev.name:<17} tx 0x{ev.tx_hash.removeprefix('0x')}")


@job_app.command("claim")
@friendly
def job_claim(job_id: int = typer.Argument(...), as_: RoleOpt = None) -> None:
    """Claim a posted job as a provider (locks collateral)."""
    h = hearth()
    key = key_for(as_)
    job = _job_or_fail(h, job_id)
    who = {"provider": h.sender(key).address}
    before = snapshot_balances(h, who)
    rcpt = h.claim(key, job_id, job)
    console.print(f"claimed job {job_id} in block {rcpt['blockNumber']}")
    locked = h.staking.functions.getProvider(who["provider"]).call()[1]
    console.print(f"collateral locked: {fmt(locked, HST_DECIMALS)} HST")
    print_moves(before, snapshot_balances(h, who))


@job_app.command("deliver")
@friendly
def job_deliver(job_id: int = typer.Argument(...), as_: RoleOpt = None) -> None:
    """Run the model on a claimed job's input and post the signed receipt."""
    from worker.model.encoder import Encoder, output_bytes, runtime_hash

    h = hearth()
    key = key_for(as_)
    job = _job_or_fail(h, job_id)
    if job.status != Status.CLAIMED:
        raise CliError(f"job {job_id} is {job.status.label}, not claimed")
    blob = _blob_store().get("0x" + job.input_hash.hex())
    texts = json.loads(blob)["texts"]
    from worker.model.weights import MiniLMTokenizer

    with console.status(f"embedding {len(texts)} text(s)..."):
        emb = Encoder(backend="torch", dtype="fp32").encode(texts)
    out = output_bytes(emb)
    out_id = _blob_store().put(out)
    units = sum(MiniLMTokenizer().count_tokens(texts))
    rec = Receipt(job_id, keccak(out), units, job.model_id, runtime_hash("torch", "fp32"), gpu_class_bytes("cpu"))
    rcpt = h.submit_receipt(key, rec, h.sign_receipt(key, rec), job)
    console.print(f"delivered job {job_id}: output {out_id} units {units} block {rcpt['blockNumber']}")


@job_app.command("finalize")
@friendly
def job_finalize(job_id: int = typer.Argument(...), as_: RoleOpt = None) -> None:
    """Settle a delivered job after its challenge window."""
    h = hearth()
    key = key_for(as_)
    job = _job_or_fail(h, job_id)
    who = {"client": job.client, "provider": job.provider, "treasury": job.treasury}  # fixed at posting
    before = snapshot_balances(h, who)
    rcpt = h.finalize(key, job_id, job)
    for lg in rcpt["logs"]:
        if lg["address"] == h.market.address:
            a = decode_log(h.market, lg)["args"]
            console.print(f"finalized job {job_id}: provider {fmt(a['providerAmount'], USD_DECIMALS)} + fee "
                          f"{fmt(a['fee'], USD_DECIMALS)} + client refund {fmt(a['clientRefund'], USD_DECIMALS)} hUSD")
    print_moves(before, snapshot_balances(h, who))


@job_app.command("refund")
@friendly
def job_refund(job_id: int = typer.Argument(...), as_: RoleOpt = None) -> None:
    """Refund an undelivered job after its deadline."""
    h = hearth()
    key = key_for(as_)
    job = _job_or_fail(h, job_id)
    who = {"client": job.client, "provider": job.provider}
    before = snapshot_balances(h, who)
    h.refund(key, job_id, job)
    console.print(f"refunded job {job_id}")
    print_moves(before, snapshot_balances(h, who))


@app.command("withdraw")
@friendly
def withdraw(as_: RoleOpt = None) -> None:
    """Withdraw your credited market balance to your wallet."""
    h = hearth()
    key = key_for(as_)
    who = {"you": h.sender(key).address}
    before = snapshot_balances(h, who)
    h.withdraw(key)
    print_moves(before, snapshot_balances(h, who))


@app.command("balances")
@friendly
def balances(
    addresses: Annotated[list[str] | None, typer.Argument(help="Addresses (default: devnet roles).")] = None,
) -> None:
    """Wallet, market credit and stake of addresses."""
    h = hearth()
    who = {a: address_arg(a) for a in addresses} if addresses else role_addresses()
    t = Table(title="balances")
    for col in ("account", "wallet hUSD", "market credit hUSD", "staked HST"):
        t.add_column(col)
    for name, (w, c, st) in snapshot_balances(h, who).items():
        t.add_row(name, fmt(w, USD_DECIMALS), fmt(c, USD_DECIMALS), fmt(st, HST_DECIMALS))
    console.print(t)


api_key_app = typer.Typer(help="Gateway API keys bound to a wallet.", no_args_is_help=True)
app.add_typer(api_key_app, name="api-key")


@api_key_app.command("create")
@friendly
def api_key_create(
    cap: str = typer.Option("1", help="Spending cap in hUSD: the most the gateway may ever spend for this key."),
    gateway: str = typer.Option("http://127.0.0.1:8000", help="Gateway base URL."),
    ttl: int = typer.Option(30 * 86400, help="Seconds until the key expires."),
    as_: RoleOpt = None,
) -> None:
    """Sign an ApiKeyGrant with your wallet, allow the gateway's relayer up to the cap, print the key."""
    import secrets

    import httpx
    from eth_account import Account

    h = hearth()
    key = key_for(as_)
    s = h.sender(key)
    wei = parse_amount(cap, USD_DECIMALS)
    api_key = "hk-" + secrets.token_hex(16)
    try:
        with httpx.Client(base_url=gateway, timeout=30) as http:
            health = http.get("/healthz").json()
            td = http.get("/v1/api-keys/typed-data", params={
                "wallet": s.address, "api_key_hash": "0x" + keccak(text=api_key).hex(),
                "spending_cap": wei, "ttl_s": ttl}).json()["typed_data"]
            msg = {f["name"]: (int(td["message"][f["name"]]) if f["type"].startswith("uint")
                               else td["message"][f["name"]]) for f in td["types"][td["primaryType"]]}
            sig = Account.sign_typed_data(key, full_message={**td, "message": msg}).signature
            # The allowance to the relayer is the on-chain bound on what the gateway can pull.
            s.send(h.usd.functions.approve(health["relayer"], wei))
            r = http.post("/v1/api-keys", json={"grant": td["message"], "signature": "0x" + bytes(sig).hex()})
    except httpx.HTTPError as exc:
        raise CliError(f"cannot reach the gateway at {gateway}: {exc}") from None
    if r.status_code != 201:
        raise CliError(f"gateway refused the grant: {r.text}")
    console.print(f"API key for {s.address}, cap {cap} hUSD (relayer allowance set to the cap):")
    print(api_key)


@app.command("up")
@friendly
def up(
    port: int = typer.Option(8545), chain_id: int = typer.Option(31337),
    block_time: float = typer.Option(1.0, help="Seconds per block."),
    gateway_port: int = typer.Option(8000),
) -> None:
    """The whole stack: devnet, indexer, one CPU worker and the gateway, until Ctrl-C."""
    from deploy.up import run_stack

    run_stack(port=port, chain_id=chain_id, block_time=block_time or None, gateway_port=gateway_port)


def _mount_services() -> None:
    for name, module in (("indexer", "indexer.cli"), ("worker", "worker.cli"), ("gateway", "gateway.cli")):
        try:
            mod = __import__(module, fromlist=["app"])
        except ImportError as exc:
            logging.getLogger(__name__).debug("%s CLI unavailable: %s", name, exc)
            continue
        app.add_typer(mod.app, name=name, help=f"The {name} service.")


_mount_services()


def main(prog_name: str = "hearth") -> None:
    logging.basicConfig(level=os.environ.get("HEARTH_LOG_LEVEL", "WARNING"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app(prog_name=prog_name)


if __name__ == "__main__":
    main()
