"""The ``hearth`` command line: devnet, provider, job, model and balance commands, plus the
indexer, worker and gateway services mounted as sub-commands.

Every failure a user can cause (unknown address, insufficient balance or allowance, wrong
chain, unknown model, missing devnet) prints one line naming the problem and exits non-zero.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation, localcontext
from typing import Annotated, Any, TypeVar

import typer
from eth_utils import is_address, keccak, to_checksum_address
from rich import box
from rich.console import Console
from rich.table import Table
from typer.core import TyperCommand

from common.blobs import BlobNotFoundError, LocalBlobStore
from common.log import setup_logging
from common.tokenizer import TextTokenizer
from contracts import jobio
from contracts.bindings import Hearth, UnknownJobError, decode_log
from contracts.errors import ChainError, ContractsError
from contracts.manifest import Manifest
from contracts.types import Status, gpu_class_bytes
from deploy.settings import CliSettings
from gateway import cli as gateway_cli
from indexer import cli as indexer_cli
from worker import cli as worker_cli

console = Console()
err_console = Console(stderr=True, soft_wrap=True)  # an error is one line, however long
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


#: A negative (or signed non-finite) number: Click would read it as an unknown option.
NEGATIVE_NUMBER = re.compile(r"^-(?:(?:\d[\d_]*(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|inf|infinity|nan)$", re.IGNORECASE)


class HearthCommand(TyperCommand):
    """A command whose positional arguments may be negative numbers.

    Click reads ``hearth provider stake -1`` as an unknown option ("No such option: -1"). Here a
    negative number in an argument's place is passed to the argument, whose own check then says
    what is wrong ("amount must be positive: -1"). Options and their values are left in place
    and the positionals moved after ``--``, which Click parses identically."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        takes_value: set[str] = set()
        for p in self.get_params(ctx):  # typer's own (vendored) Click: duck-typed
            if getattr(p, "param_type_name", "") == "option" and not getattr(p, "is_flag", False) \
                    and not getattr(p, "count", False):
                takes_value.update(p.opts)
        options: list[str] = []
        positionals: list[str] = []
        moved = False
        i = 0
        while i < len(args):
            tok = args[i]
            if tok == "--":
                positionals += args[i + 1:]
                break
            if tok in takes_value:
                options += args[i:i + 2]
                i += 2
                continue
            if NEGATIVE_NUMBER.match(tok):
                moved = True
                positionals.append(tok)
            elif tok.startswith("-") and tok != "-":
                options.append(tok)
            else:
                positionals.append(tok)
            i += 1
        if moved:
            args = [*options, "--", *positionals]
        return super().parse_args(ctx, args)


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
    h = Hearth(Manifest.load(CliSettings().manifest_file()))
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
        from common import accounts

        acc = accounts.load(CliSettings().data_dir / accounts.ACCOUNTS_FILE)
        if role not in acc:
            raise CliError(f"unknown devnet role {role!r}; known: {', '.join(acc)}")
        return acc[role].key
    key = CliSettings().key
    if key is None or not key.get_secret_value():
        raise CliError("no key: pass --as ROLE on the devnet or set HEARTH_KEY")
    return key.get_secret_value()


def address_arg(value: str) -> str:
    if not is_address(value):
        raise CliError(f"not an address: {value!r}")
    return to_checksum_address(value)


UINT256_MAX = 2**256 - 1
UINT96_MAX = 2**96 - 1
UINT40_MAX = 2**40 - 1


def parse_amount(value: str, decimals: int, most: int = UINT256_MAX, what: str = "amount") -> int:
    """A positive decimal token amount in its smallest unit; NaN, infinities, negative, zero,
    over-precise and out-of-range amounts are refused with a message saying which."""
    try:
        d = Decimal(value.replace("_", ""))
    except InvalidOperation:
        raise CliError(f"not an amount: {value!r} (write a number such as 1.5)") from None
    if not d.is_finite():
        raise CliError(f"{what} must be a finite number, not {value!r}")
    if d <= 0:
        raise CliError(f"{what} must be positive: {value}")
    if d.adjusted() + decimals > len(str(most)):
        raise CliError(f"{what} {value} is too large: at most {fmt(most, decimals)}")
    wei = d.scaleb(decimals)
    if wei != wei.to_integral_value():
        raise CliError(f"{what} {value} has more than {decimals} decimals")
    if int(wei) > most:
        raise CliError(f"{what} {value} is too large: at most {fmt(most, decimals)}")
    return int(wei)


def fmt(amount: int, decimals: int) -> str:
    """``amount`` smallest units as tokens with at most six decimals, exact at any size (the
    default 28-digit context rounded 2**256 - 1 to 115,792,089,237,316,195,423,570,985,000,...)."""
    with localcontext() as ctx:
        ctx.prec = len(str(abs(amount))) + decimals + 2
        return f"{Decimal(amount).scaleb(-decimals):,.{min(decimals, 6)}f}"


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
        from common import accounts

        return {r: a.address for r, a in accounts.load(CliSettings().data_dir / accounts.ACCOUNTS_FILE).items()
                if r != "deployer"}
    except ContractsError:
        return {}


def market_holdings(h: Hearth) -> dict[str, str]:
    return {"market (escrow)": h.market.address}


# ---------------------------------------------------------------- devnet

#: Anvil keeps chain ids in 64 bits.
CHAIN_ID_MAX = 2**64 - 1
#: The longest block time and stop timeout the CLI accepts (an hour): anything longer is a typo.
LONGEST_WAIT_S = 3600


def check_block_time(block_time: float) -> None:
    """Anvil's interval mining counts whole seconds (``int(0.5)`` would switch it off)."""
    if block_time != int(block_time):
        raise CliError(f"--block-time takes whole seconds (0 mines a block per transaction), not {block_time:g}")


def chain_time(now: int) -> str:
    try:
        return f"{now} ({datetime.fromtimestamp(now, UTC):%Y-%m-%d %H:%M:%S} UTC)"
    except (OverflowError, OSError, ValueError):  # beyond what the platform's datetime holds
        return str(now)


@devnet_app.command("up", cls=HearthCommand)
@friendly
def devnet_up(
    port: int = typer.Option(8545, min=1, max=65535, help="RPC port."),
    chain_id: int = typer.Option(31337, min=1, max=CHAIN_ID_MAX, help="Chain id."),
    block_time: float = typer.Option(0, min=0, max=LONGEST_WAIT_S,
                                     help="Whole seconds per block; 0 mines a block per transaction."),
) -> None:
    """Start Anvil, deploy, fund and stake demo accounts; run until Ctrl-C."""
    from deploy.devnet import run_foreground

    check_block_time(block_time)
    run_foreground(port, chain_id, block_time or None)


@devnet_app.command("advance", cls=HearthCommand)
@friendly
def devnet_advance(
    seconds: int = typer.Argument(..., min=1, help="Seconds to move the devnet clock forward."),
) -> None:
    """Move the devnet's clock forward (to close a challenge window in a demo).

    A move past the contracts' ``uint40`` times is refused before Anvil is asked, an error
    answer from Anvil is reported, and the clock is read back: a move Anvil accepted but did not
    make (it wraps some huge values) is an error too, never a success."""
    from deploy.devnet import anvil_call

    h = hearth()
    before = int(h.w3.eth.get_block("latest")["timestamp"])
    if before + seconds > UINT40_MAX:
        raise CliError(f"cannot move the devnet clock by {seconds}s: chain time would be {before + seconds}, past "
                       f"{UINT40_MAX}, the latest time the contracts can hold (uint40)")
    try:
        anvil_call(h.w3, "evm_increaseTime", [seconds])
        anvil_call(h.w3, "evm_mine")
    except ChainError as exc:
        raise CliError(f"the devnet did not move its clock by {seconds}s: {exc}") from None
    block = h.w3.eth.get_block("latest")
    now = int(block["timestamp"])
    if now < before + seconds:
        raise CliError(f"the devnet did not move its clock by {seconds}s: Anvil accepted the call but chain time "
                       f"is {chain_time(now)}, {now - before}s after {before}")
    console.print(f"devnet clock moved {seconds}s forward: chain time {chain_time(now)}, block {block['number']}",
                  soft_wrap=True)


# ---------------------------------------------------------------- models

@model_app.command("list", cls=HearthCommand)
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

@provider_app.command("register", cls=HearthCommand)
@friendly
def provider_register(
    endpoint: str = typer.Option(..., help="Public URL of the node."),
    region: str = typer.Option("local"),
    gpu_class: str = typer.Option("cpu"),
    model: str | None = typer.Option(None, help="Model id to serve (default: the manifest's first)."),
    stake: str | None = typer.Option(None, help="HST to stake with the registration (default: the minimum stake)."),
    as_: RoleOpt = None,
) -> None:
    """Register as a provider (staking at least the minimum) and serve a model.

    The arguments, the minimum stake and the HST balance are checked before the first
    transaction, so a refused registration leaves no approval behind."""
    wei_arg = parse_amount(stake, HST_DECIMALS, what="--stake") if stake else None
    mid_arg = bytes32_arg(model, "model id") if model else None
    gpu_class_bytes(gpu_class)  # at most 32 bytes, as the contract requires
    h = hearth()
    s = h.sender(key_for(as_))
    mid = mid_arg or default_model(h)
    if h.staking.functions.getProvider(s.address).call()[5]:
        raise CliError(f"{s.address} is already a registered provider: `hearth provider join` updates its endpoint, "
                       f"`hearth provider stake` adds stake")
    minimum = int(h.staking.functions.minStake().call())
    wei = minimum if wei_arg is None else wei_arg
    if wei < minimum:
        raise CliError(f"--stake {stake} HST is below the minimum stake of {fmt(minimum, HST_DECIMALS)} HST")
    check_hst_balance(h, s.address, wei)
    if h.hst.functions.allowance(s.address, h.staking.address).call() < wei:
        s.send(h.hst.functions.approve(h.staking.address, wei))
    s.send(h.staking.functions.register(endpoint, region, gpu_class, wei))
    s.send(h.staking.functions.setServing(mid, True))
    console.print(f"registered {s.address} serving 0x{mid.hex()}")


def check_hst_balance(h: Hearth, address: str, wei: int) -> None:
    bal = int(h.hst.functions.balanceOf(address).call())
    if bal < wei:
        raise CliError(f"insufficient HST balance: {fmt(bal, HST_DECIMALS)} < {fmt(wei, HST_DECIMALS)} HST")


@provider_app.command("stake", cls=HearthCommand)
@friendly
def provider_stake(amount: str = typer.Argument(..., help="HST to stake, e.g. 100"), as_: RoleOpt = None) -> None:
    """Stake (or add stake)."""
    wei = parse_amount(amount, HST_DECIMALS)
    h = hearth()
    s = h.sender(key_for(as_))
    check_hst_balance(h, s.address, wei)
    if h.hst.functions.allowance(s.address, h.staking.address).call() < wei:
        s.send(h.hst.functions.approve(h.staking.address, wei))
    before = snapshot_balances(h, {"you": s.address})
    s.send(h.staking.functions.stake(wei))
    print_moves(before, snapshot_balances(h, {"you": s.address}))


@provider_app.command("unbond", cls=HearthCommand)
@friendly
def provider_unbond(amount: str = typer.Argument(..., help="HST to unbond, e.g. 100"), as_: RoleOpt = None) -> None:
    """Request unbonding of free stake."""
    wei = parse_amount(amount, HST_DECIMALS)
    h = hearth()
    s = h.sender(key_for(as_))
    rcpt = s.send(h.staking.functions.requestUnbond(wei))
    ev = decode_log(h.staking, rcpt["logs"][-1])
    args = ev["args"]
    console.print(f"unbonding {fmt(args['unbonding'], HST_DECIMALS)} HST, withdrawable at {args['readyAt']}")


@provider_app.command("withdraw", cls=HearthCommand)
@friendly
def provider_withdraw(as_: RoleOpt = None) -> None:
    """Withdraw stake whose unbonding period has passed."""
    h = hearth()
    s = h.sender(key_for(as_))
    rcpt = s.send(h.staking.functions.withdraw())
    ev = decode_log(h.staking, rcpt["logs"][-1])
    console.print(f"withdrew {fmt(ev['args']['amount'], HST_DECIMALS)} HST")


@provider_app.command("info", cls=HearthCommand)
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

def _blob_store() -> LocalBlobStore:
    return LocalBlobStore(CliSettings().data_dir / "blobs")


@job_app.command("post", cls=HearthCommand)
@friendly
def job_post(
    text: Annotated[list[str], typer.Option("--text", "-t", help="Text to embed; repeat for several.")],
    max_payment: str | None = typer.Option(None, help="hUSD cap; default: exactly tokens x price."),
    deadline: int = typer.Option(3600, help="Seconds from now until the job may be refunded (at least 1)."),
    model: str | None = typer.Option(None, help="Model id (default: the manifest's first)."),
    approve: bool = typer.Option(False, help="Approve the market for the payment if needed."),
    as_: RoleOpt = None,
) -> None:
    """Post an embedding job, escrowing its payment.

    Every argument and every precondition (model, balance, allowance, deadline) is checked before
    the first transaction, so a refused post leaves no approval behind."""
    # 1. The arguments alone.
    if deadline < 1:
        raise CliError(f"--deadline must be a positive number of seconds from now, not {deadline}")
    if any(not t.strip() for t in text):
        raise CliError("--text is empty: give the text to embed")
    cap = parse_amount(max_payment, USD_DECIMALS, UINT96_MAX, "--max-payment") if max_payment is not None else None
    mid_arg = bytes32_arg(model, "model id") if model else None
    # 2. Against the chain, still without sending anything.
    h = hearth()
    key = key_for(as_)
    s = h.sender(key)
    mid = mid_arg or default_model(h)
    try:
        price = h.registry.functions.activePrice(mid).call()
    except Exception:  # noqa: BLE001 - reverts with UnknownModel
        raise CliError(f"unknown model 0x{mid.hex()}: `hearth model list` shows the registered ones") from None
    blob = jobio.encode_input(list(text))
    if cap is None:
        units = sum(TextTokenizer().count_tokens(list(text)))
        pay = units * price
    else:
        pay = cap
    dl = int(h.w3.eth.get_block("latest")["timestamp"]) + deadline
    if dl > UINT40_MAX:
        raise CliError(f"--deadline {deadline} is too far: the deadline must be before {UINT40_MAX} (uint40)")
    bal = h.usd.functions.balanceOf(s.address).call()
    if bal < pay:
        raise CliError(f"insufficient hUSD balance: {fmt(bal, USD_DECIMALS)} < {fmt(pay, USD_DECIMALS)}")
    allowance = h.usd.functions.allowance(s.address, h.market.address).call()
    if allowance < pay and not approve:
        raise CliError(f"insufficient allowance for the market: {fmt(allowance, USD_DECIMALS)} < "
                       f"{fmt(pay, USD_DECIMALS)} hUSD; rerun with --approve")
    # 3. Only now: transactions.
    if allowance < pay:
        s.send(h.usd.functions.approve(h.market.address, pay))
    blob_id = _blob_store().put(blob)
    who = {"client": s.address, **market_holdings(h)}
    before = snapshot_balances(h, who)
    job_id, rcpt = h.post_job(key, mid, keccak(blob), pay, dl)
    console.print(f"posted job [bold]{job_id}[/] input {blob_id} max payment {fmt(pay, USD_DECIMALS)} hUSD "
                  f"block {rcpt['blockNumber']} tx 0x{rcpt['transactionHash'].hex().removeprefix('0x')}",
                  soft_wrap=True)
    print_moves(before, snapshot_balances(h, who))


def _job_or_fail(h: Hearth, job_id: int) -> Any:
    if job_id > UINT256_MAX:  # no uint256 to ask the market about
        raise CliError(f"unknown job {job_id}")
    try:
        return h.job(job_id)
    except UnknownJobError:
        raise CliError(f"unknown job {job_id}") from None


@job_app.command("status", cls=HearthCommand)
@friendly
def job_status(job_id: int = typer.Argument(..., min=1)) -> None:
    """A job's state and history, from its events."""
    h = hearth()
    job = _job_or_fail(h, job_id)
    console.print(f"job {job_id}: [bold]{job.status.label}[/] client {job.client} provider {job.provider} "
                  f"max {fmt(job.max_payment, USD_DECIMALS)} paid {fmt(job.payment, USD_DECIMALS)} hUSD",
                  soft_wrap=True)
    for ev in h.job_events(job_id):
        console.print(f"  block {ev.block_number:>6}  {ev.name:<17} tx 0x{ev.tx_hash.removeprefix('0x')}",
                      soft_wrap=True)


@job_app.command("claim", cls=HearthCommand)
@friendly
def job_claim(job_id: int = typer.Argument(..., min=1), as_: RoleOpt = None) -> None:
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


@job_app.command("deliver", cls=HearthCommand)
@friendly
def job_deliver(job_id: int = typer.Argument(..., min=1), as_: RoleOpt = None) -> None:
    """Run the model on a claimed job's input and post the signed receipt (the worker's own
    compute path: the same input format, batching and output bytes)."""
    from worker.node.compute import ComputeRequest, ComputeResult, compute_jobs, shared_encoder

    h = hearth()
    key = key_for(as_)
    job = _job_or_fail(h, job_id)
    if job.status != Status.CLAIMED:
        raise CliError(f"job {job_id} is {job.status.label}, not claimed")
    try:
        with console.status("embedding..."):
            encoder = shared_encoder("torch", "fp32")
            [outcome] = compute_jobs([ComputeRequest(job_id, "0x" + job.input_hash.hex())], _blob_store(), encoder)
    except BlobNotFoundError:
        raise CliError(f"job {job_id}'s input {'0x' + job.input_hash.hex()} is not in the local blob store") from None
    if not isinstance(outcome, ComputeResult):
        raise CliError(f"job {job_id}'s input cannot be run: {outcome.error}")
    rec = outcome.receipt(job.model_id, encoder.runtime_hash(), gpu_class_bytes("cpu"))
    rcpt = h.submit_receipt(key, rec, h.sign_receipt(key, rec), job)
    console.print(f"delivered job {job_id}: output {outcome.output_blob} units {outcome.units} "
                  f"block {rcpt['blockNumber']}", soft_wrap=True)


@job_app.command("finalize", cls=HearthCommand)
@friendly
def job_finalize(job_id: int = typer.Argument(..., min=1), as_: RoleOpt = None) -> None:
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


@job_app.command("refund", cls=HearthCommand)
@friendly
def job_refund(job_id: int = typer.Argument(..., min=1), as_: RoleOpt = None) -> None:
    """Refund an undelivered job after its deadline."""
    h = hearth()
    key = key_for(as_)
    job = _job_or_fail(h, job_id)
    who = {"client": job.client, "provider": job.provider}
    before = snapshot_balances(h, who)
    h.refund(key, job_id, job)
    console.print(f"refunded job {job_id}")
    print_moves(before, snapshot_balances(h, who))


@app.command("withdraw", cls=HearthCommand)
@friendly
def withdraw(as_: RoleOpt = None) -> None:
    """Withdraw your credited market balance to your wallet."""
    h = hearth()
    key = key_for(as_)
    who = {"you": h.sender(key).address}
    before = snapshot_balances(h, who)
    rcpt = h.withdraw(key)
    after = snapshot_balances(h, who)
    console.print(f"withdrew {fmt(after['you'][0] - before['you'][0], USD_DECIMALS)} hUSD of market credit to "
                  f"{who['you']} in block {rcpt['blockNumber']}", soft_wrap=True)
    print_moves(before, after)


@app.command("balances", cls=HearthCommand)
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


GatewayOpt = Annotated[str, typer.Option("--gateway", envvar="HEARTH_GATEWAY_URL", help="Gateway base URL.")]


def _gateway(url: str) -> Any:
    from deploy.gateway_client import GatewayClient

    return GatewayClient(url)


def _live(keys: list[dict[str, Any]]) -> list[dict[str, Any]]:
    now = time.time()
    return [k for k in keys if not k["revoked"] and int(k["expiry"]) > now]


def _sync_allowance(h: Hearth, key: str, relayer: str, keys: list[dict[str, Any]]) -> tuple[int, int]:
    """Sets the wallet's allowance to the relayer to the sum of its live keys' remaining caps
    (see the README: the allowance is the on-chain bound of all keys together). Returns (before, after)."""
    s = h.sender(key)
    target = sum(int(k["remaining"]) for k in _live(keys))
    before = int(h.usd.functions.allowance(s.address, relayer).call())
    if before != target:
        s.send(h.usd.functions.approve(relayer, target))
    return before, target


def _allowance_line(relayer: str, keys: list[dict[str, Any]], before: int, after: int) -> str:
    n = len(_live(keys))
    change = "unchanged" if before == after else f"was {fmt(before, USD_DECIMALS)}"
    return (f"relayer {relayer} may pull {fmt(after, USD_DECIMALS)} hUSD from your wallet: the remaining caps of "
            f"your {n} live key{'s' if n != 1 else ''} ({change})")


def _gateway_errors(fn: F) -> F:
    """The gateway's refusals as CLI errors (one line, exit 1)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from deploy.gateway_client import GatewayRefused

        try:
            return fn(*args, **kwargs)
        except GatewayRefused as exc:
            raise CliError(str(exc)) from None

    return wrapper  # type: ignore[return-value]


@api_key_app.command("create", cls=HearthCommand)
@friendly
@_gateway_errors
def api_key_create(
    cap: str = typer.Option("1", help="Spending cap in hUSD: the most the gateway may ever spend for this key."),
    gateway: GatewayOpt = "http://127.0.0.1:8000",
    ttl: int = typer.Option(30 * 86400, help="Seconds until the key expires."),
    region: str | None = typer.Option(
        None, help="Provider region the key prefers (e.g. eu-west): the serving plane routes there first when a "
                   "request sends no x-hearth-region header."),
    as_: RoleOpt = None,
) -> None:
    """Sign an ApiKeyGrant with your wallet, register it, and set the relayer's allowance to the
    remaining caps of all your live keys (this one included); print the key last."""
    import secrets

    from eth_account import Account

    wei = parse_amount(cap, USD_DECIMALS, what="--cap")
    if ttl < 1:
        raise CliError(f"--ttl must be a positive number of seconds, not {ttl}")
    h = hearth()
    key = key_for(as_)
    wallet = h.sender(key).address
    api_key = "hk-" + secrets.token_hex(16)
    with _gateway(gateway) as gw:
        health = gw.call("GET", "/healthz", "a health check")
        if int(health.get("chain_id", h.chain_id)) != h.chain_id:
            raise CliError(f"the gateway at {gateway} is on chain {health['chain_id']}, the manifest on {h.chain_id}")
        typed = gw.call("GET", "/v1/api-keys/typed-data", "the grant", params={
            "wallet": wallet, "api_key_hash": "0x" + keccak(text=api_key).hex(), "spending_cap": wei, "ttl_s": ttl})
        td = typed["typed_data"]
        relayer = str(typed.get("relayer") or health["relayer"])
        msg = {f["name"]: (int(td["message"][f["name"]]) if f["type"].startswith("uint")
                           else td["message"][f["name"]]) for f in td["types"][td["primaryType"]]}
        sig = Account.sign_typed_data(key, full_message={**td, "message": msg}).signature
        # Register first, then allow: a refused grant changes nothing on-chain.
        body: dict[str, Any] = {"grant": td["message"], "signature": "0x" + bytes(sig).hex()}
        if region is not None:
            body["region"] = region
        gw.sign_in(key)  # before registering: a refused sign-in leaves no key behind
        gw.call("POST", "/v1/api-keys", "the grant", json=body)
        keys = gw.api_keys()
    try:
        before, after = _sync_allowance(h, key, relayer, keys)
    except ContractsError as exc:
        raise CliError(f"the key was registered but the relayer's allowance could not be set: {exc}; "
                       f"`hearth api-key list` shows what it should be") from None
    console.print(f"API key for {wallet}, cap {cap} hUSD, expires "
                  f"{datetime.fromtimestamp(int(td['message']['expiry']), UTC):%Y-%m-%d %H:%M} UTC"
                  + (f", prefers region {region}" if region else ""))
    console.print(_allowance_line(relayer, keys, before, after), soft_wrap=True)
    print(api_key)


@api_key_app.command("list", cls=HearthCommand)
@friendly
@_gateway_errors
def api_key_list(gateway: GatewayOpt = "http://127.0.0.1:8000", as_: RoleOpt = None) -> None:
    """Your API keys at a gateway (signs in with your wallet): cap, spend, state, and the
    relayer's allowance next to the remaining caps of the live keys."""
    h = hearth()
    key = key_for(as_)
    wallet = h.sender(key).address
    with _gateway(gateway) as gw:
        relayer = gw.call("GET", "/healthz", "a health check").get("relayer")
        gw.sign_in(key)
        keys = gw.api_keys()
    now = time.time()
    t = Table(title=f"API keys of {wallet} (amounts in hUSD)", box=box.SIMPLE)
    for col in ("key hash", "cap", "spent", "left", "jobs", "refunds", "expires (UTC)", "state"):
        t.add_column(col, justify="left" if col in ("key hash", "expires (UTC)", "state") else "right", no_wrap=True)

    def short(wei: str) -> str:
        return f"{Decimal(int(wei)).scaleb(-USD_DECIMALS).normalize():f}"

    for k in keys:
        state = "revoked" if k["revoked"] else ("expired" if int(k["expiry"]) <= now else "live")
        t.add_row(k["api_key_hash"][:10] + "…", short(k["spending_cap"]), short(k["spent"]), short(k["remaining"]),
                  str(k["jobs"]), short(k["refunds_owed"]), f"{datetime.fromtimestamp(int(k['expiry']), UTC):%Y-%m-%d}",
                  state)
    console.print(t)
    for k in keys:  # below the table, which stays within 80 columns
        if k.get("region"):
            console.print(f"key {k['api_key_hash'][:10]}… prefers region {k['region']}")
    if relayer:
        allowance = int(h.usd.functions.allowance(wallet, relayer).call())
        live = sum(int(k["remaining"]) for k in _live(keys))
        console.print(f"relayer {relayer} allowance {fmt(allowance, USD_DECIMALS)} hUSD; live keys' remaining caps "
                      f"{fmt(live, USD_DECIMALS)} hUSD", soft_wrap=True)


@api_key_app.command("revoke", cls=HearthCommand)
@friendly
@_gateway_errors
def api_key_revoke(
    key_or_hash: str = typer.Argument(..., help="The API key (hk-...) or its keccak256 hash (0x + 64 hex)."),
    gateway: GatewayOpt = "http://127.0.0.1:8000",
    as_: RoleOpt = None,
) -> None:
    """Revoke one of your API keys and lower the relayer's allowance by what it had left."""
    if re.fullmatch(r"0x[0-9a-fA-F]{64}", key_or_hash):
        key_hash = key_or_hash.lower()
    elif key_or_hash.startswith("hk-"):
        key_hash = "0x" + keccak(text=key_or_hash).hex().removeprefix("0x")
    else:
        raise CliError(f"not an API key or key hash: {key_or_hash[:12]!r}… (give hk-... or 0x + 64 hex)")
    h = hearth()
    key = key_for(as_)
    with _gateway(gateway) as gw:
        relayer = str(gw.call("GET", "/healthz", "a health check")["relayer"])
        gw.sign_in(key)
        gw.call("DELETE", f"/v1/api-keys/{key_hash}", "the revocation")
        keys = gw.api_keys()
    before, after = _sync_allowance(h, key, relayer, keys)
    console.print(f"revoked API key {key_hash[:18]}…")
    console.print(_allowance_line(relayer, keys, before, after), soft_wrap=True)


@app.command("up", cls=HearthCommand)
@friendly
def up(
    port: int = typer.Option(8545, min=1, max=65535),
    chain_id: int = typer.Option(31337, min=1, max=CHAIN_ID_MAX),
    block_time: float = typer.Option(1.0, min=0, max=LONGEST_WAIT_S,
                                     help="Whole seconds per block; 0 mines a block per transaction."),
    gateway_port: int = typer.Option(8000, min=1, max=65535),
    restart: bool = typer.Option(False, "--restart/--no-restart", envvar="HEARTH_UP_RESTART",
                                 help="Restart a crashed service with backoff instead of stopping the stack."),
    stop_timeout: float = typer.Option(10.0, min=0.0, max=LONGEST_WAIT_S,
                                       help="Seconds a service gets after SIGTERM before SIGKILL."),
    provider_ports: str = typer.Option("8101,8102", help="Ports of the two serving-plane providers (eu-west, "
                                                          "us-east), comma-separated."),
) -> None:
    """The whole stack until Ctrl-C or SIGTERM: devnet, indexer, one CPU worker (per-job path), the
    gateway, two serving-plane providers and (when installed) the batch verifier."""
    from deploy.up import run_stack

    check_block_time(block_time)
    try:
        ports = [int(x) for x in provider_ports.split(",")]
    except ValueError:
        raise CliError(f"--provider-ports takes two comma-separated ports, not {provider_ports!r}") from None
    if len(ports) != 2 or len(set(ports)) != 2 or not all(0 < p < 65536 for p in ports):
        raise CliError(f"--provider-ports takes two different ports, not {provider_ports!r}")
    run_stack(port=port, chain_id=chain_id, block_time=block_time or None, gateway_port=gateway_port,
              restart=restart, stop_timeout=stop_timeout, provider_ports=ports)


@app.command("demo", cls=HearthCommand)
@friendly
def demo() -> None:
    """Watch a cheating node get caught, challenged, voted down and slashed (private devnet)."""
    from deploy.demo import run_cheater_demo

    out = run_cheater_demo()
    table = Table(title=f"balances (job A={out.honest_job} honest, job B={out.cheater_job} cheated)")
    for col in ("account", "hUSD wallet", "hUSD credit", "HST wallet", "HST staked"):
        table.add_column(col, justify="right" if col != "account" else "left")
    for role, after in out.balances_after.items():
        b = out.balances_before[role]

        def cell(k: str, scale: int, after: dict[str, int] = after, b: dict[str, int] = b) -> str:
            d = after[k] - b[k]
            return f"{after[k] / scale:,.6f}" + (f" ({'+' if d > 0 else ''}{d / scale:,.6f})" if d else "")

        table.add_row(role, cell("usd", 10**6), cell("credit", 10**6), cell("hst", 10**18), cell("staked", 10**18))
    console.print(table)
    console.print(f"cheater jailed until {out.cheater_jailed_until} (chain time)")


app.add_typer(indexer_cli.app, name="indexer", help="The indexer service.")
app.add_typer(worker_cli.app, name="worker", help="The worker service.")
app.add_typer(gateway_cli.app, name="gateway", help="The gateway service.")

from deploy.cli_settlement import mount as _mount_settlement  # noqa: E402 - uses the helpers above

_mount_settlement(app)
from deploy.cli_serving import mount as _mount_serving  # noqa: E402 - uses the helpers above

_mount_serving(provider_app)


def main(prog_name: str = "hearth") -> None:
    setup_logging(CliSettings().log_level)
    app(prog_name=prog_name)


if __name__ == "__main__":
    main()
