"""The local devnet: start Anvil from ``contracts/node_modules``, compile, deploy, register
MiniLM and SmolLM2 with their real content hashes, fund and stake demo accounts, write the
manifest."""

from __future__ import annotations

import logging
import random
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from eth_utils import to_checksum_address
from web3 import Web3

from common import accounts as accts
from contracts.artifacts import artifact, load_artifacts
from contracts.bindings import Hearth
from contracts.chain import ErrorDecoder, TxSender, connect, wait_for_rpc
from contracts.compiler import NODE_MODULES
from contracts.errors import ChainError, ToolchainError
from contracts.manifest import (
    CONTRACT_NAMES,
    SETTLEMENT_CONTRACT_NAMES,
    DeployedContract,
    Manifest,
    ModelEntry,
)
from contracts.settlement import SettlementParams
from contracts.types import MarketParams, gpu_class_bytes

log = logging.getLogger(__name__)

ANVIL = NODE_MODULES / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil"
USD = 10**6
HST = 10**18
#: MiniLM's devnet price: 100 hUSD per million tokens (100 wei of a 6-decimal token per
#: token), high enough that the protocol fee on a one-sentence demo job is visible.
DEFAULT_PRICE_PER_UNIT = 100
#: SmolLM2's registry price per token (prompt + completion): 300 hUSD per million tokens.
LLM_PRICE_PER_UNIT = 300
LLM_NAME = "SmolLM2-135M-Instruct"
MINILM_NAME = "all-MiniLM-L6-v2"
MIN_STAKE = 100 * HST
UNBONDING_PERIOD = 3600
JAIL_PERIOD = 86400
#: Escrow thaws last at least this long, and always longer than the batch settlement horizon
#: plus THAW_MARGIN (the escrow enforces it against the settlement's and market's windows).
MIN_THAW_DELAY = 2 * 3600
THAW_MARGIN = 600
#: Highest price per unit a provider may quote for the devnet model (10x the registry price).
PRICE_CEILING = 10 * DEFAULT_PRICE_PER_UNIT
#: Every demo provider stakes this much (5x the minimum), so each holds a quarter of the weight.
PROVIDER_STAKE = 500 * HST
#: Numerics classes governance lists on the devnet: the CPU path and common CUDA classes.
NUMERICS_CLASSES = ("cpu", "h100", "h200", "a100", "l4", "l40s")
#: The devnet's market parameters (4 providers, committees of 3); ``bench/economics.py`` reads them.
DEVNET_PARAMS = MarketParams()


def anvil_call(w3: Web3, method: str, params: list[Any] | None = None) -> Any:
    """An Anvil-only RPC call (``evm_increaseTime``, ``anvil_mine``...) and its result; an error
    answer raises :class:`ChainError` naming the method and the node's message. (web3's
    ``provider.make_request`` hands an error answer back as data, which is easy to ignore.)"""
    resp = w3.provider.make_request(method, params or [])  # type: ignore[arg-type]
    if "error" in resp:
        err = resp["error"]
        msg = err.get("message", err) if isinstance(err, dict) else err
        raise ChainError(f"the devnet refused {method}: {msg}")
    return resp.get("result")


def get_create_address(sender: str, nonce: int) -> str:
    """The address a CREATE from ``sender`` at ``nonce`` deploys to."""
    import rlp
    from eth_utils import keccak

    return to_checksum_address(keccak(rlp.encode([bytes.fromhex(sender[2:]), nonce]))[12:])


#: ports this process handed out: never handed out twice (the services they are meant for may
#: not have bound them yet)
_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port free now, for a service about to start (see :func:`free_port_run`)."""
    return free_port_run(1)


def free_port_run(n: int, low: int = 20_000, high: int = 32_768) -> int:
    """The first of ``n`` consecutive ports that are all free now and not handed out before by
    this process, below Linux's ephemeral range (32768 and up): a port the kernel picks for
    ``bind(0)`` is an ephemeral one, which another process's outgoing connection may take as
    its source port before the service meant for it binds (a clean-clone run lost a gateway's
    port that way); a port below that range is never taken so."""
    rng = random.Random()
    for _ in range(500):
        start = rng.randrange(low, high - n)
        ports = range(start, start + n)
        if _HANDED_OUT.intersection(ports):
            continue
        socks = []
        try:
            for port in ports:
                sock = socket.socket()
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
        _HANDED_OUT.update(ports)
        return start
    raise RuntimeError(f"no {n} consecutive free ports in {low}..{high}")


@dataclass
class Anvil:
    """An Anvil process. ``block_time`` None means automine (a block per transaction)."""

    port: int = 8545
    chain_id: int = 31337
    block_time: float | None = None
    mnemonic: str = field(default_factory=accts.new_mnemonic)
    host: str = "127.0.0.1"
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def rpc_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> Anvil:
        if not ANVIL.exists():
            raise ToolchainError(f"Anvil not found at {ANVIL}: run `npm ci` in contracts/ (make does this)")
        with socket.socket() as s:
            if s.connect_ex((self.host, self.port)) == 0:
                raise ToolchainError(f"port {self.port} is already in use: choose another with --port")
        cmd = [str(ANVIL), "--host", self.host, "--port", str(self.port), "--chain-id", str(self.chain_id),
               "--mnemonic", self.mnemonic, "--accounts", str(len(accts.ROLES)), "--balance", "10000"]
        if self.block_time:
            cmd += ["--block-time", str(self.block_time)]
        if self.log_path:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for_rpc(connect(self.rpc_url), timeout=30)
        except ChainError:
            self.stop()
            raise
        log.info("anvil up at %s (chain id %d, block time %s)", self.rpc_url, self.chain_id,
                 self.block_time or "automine")
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def _deploy(w3: Web3, sender: TxSender, name: str, *args: Any, library: str | None = None) -> str:
    art = artifact(name)
    bytecode = art.bytecode
    if art.needs_linking:
        if library is None:
            raise ChainError(f"{name} links the DisputeGame library: deploy it first")
        bytecode = art.linked(library)
    factory = w3.eth.contract(abi=art.abi, bytecode=bytecode)
    rcpt = sender.send(factory.constructor(*args))
    addr = rcpt["contractAddress"]
    assert addr is not None
    log.info("deployed %s at %s (block %d)", name, addr, rcpt["blockNumber"])
    return str(addr)


def deploy_contracts(
    rpc_url: str, deployer_key: str, treasury: str, params: MarketParams | None = None,
    min_stake: int = MIN_STAKE, unbonding_period: int = UNBONDING_PERIOD, jail_period: int = JAIL_PERIOD,
) -> Manifest:
    """Deploys tokens, registry, staking and market; returns the manifest (not yet saved)."""
    w3 = connect(rpc_url)
    arts = load_artifacts()
    sender = TxSender(w3, deployer_key, ErrorDecoder(a.abi for a in arts.values()))
    owner = sender.address
    start_block = w3.eth.block_number
    usd = _deploy(w3, sender, "HearthUSD", owner)
    hst = _deploy(w3, sender, "HearthStake", owner)
    registry = _deploy(w3, sender, "ModelRegistry", owner)
    game = _deploy(w3, sender, "DisputeGame")
    # Staking binds the market immutably, so the market's address is computed first: the
    # deployer's CREATE address one nonce after Staking's.
    nonce = w3.eth.get_transaction_count(Web3.to_checksum_address(owner), "pending")
    market_addr = get_create_address(owner, nonce + 1)
    staking = _deploy(w3, sender, "Staking", owner, hst, market_addr, min_stake, unbonding_period, jail_period)
    p = params or replace(DEVNET_PARAMS, treasury=treasury)
    if p.treasury == "0x" + "00" * 20:
        p = replace(p, treasury=treasury)
    market = _deploy(w3, sender, "JobMarket", owner, usd, staking, registry, p.as_tuple(), library=game)
    if market != market_addr:
        raise ChainError(f"market deployed at {market}, expected {market_addr}: deployer key used concurrently?")
    addrs = dict(zip(CONTRACT_NAMES, (usd, hst, registry, game, staking, market), strict=True))
    addrs.update(deploy_settlement(w3, sender, usd, staking, market, treasury, game=game))
    return Manifest(
        chain_id=w3.eth.chain_id, rpc_url=rpc_url, deployment_block=start_block + 1,
        contracts={n: DeployedContract(address=a, abi=arts[n].abi, userdoc=arts[n].userdoc, devdoc=arts[n].devdoc)
                   for n, a in addrs.items()},
    )


def deploy_settlement(
    w3: Web3, sender: TxSender, usd: str, staking: str, market: str, treasury: str,
    params: SettlementParams | None = None, *, game: str,
) -> dict[str, str]:
    """Deploys PaymentEscrow and BatchSettlement and binds the settlement to escrow and staking."""
    owner = sender.address
    escrow = _deploy(w3, sender, "PaymentEscrow", owner, usd, MIN_THAW_DELAY, THAW_MARGIN)
    p = params or SettlementParams(treasury=treasury)
    settlement = _deploy(w3, sender, "BatchSettlement", owner, escrow, staking, market, p.as_tuple(), library=game)
    abi = {n: artifact(n).abi for n in ("PaymentEscrow", "Staking")}
    sender.send(w3.eth.contract(address=Web3.to_checksum_address(escrow), abi=abi["PaymentEscrow"])
                .functions.setSettlement(settlement))
    sender.send(w3.eth.contract(address=Web3.to_checksum_address(staking), abi=abi["Staking"])
                .functions.setSettlement(settlement))
    return dict(zip(SETTLEMENT_CONTRACT_NAMES, (escrow, settlement), strict=True))


def register_model(h: Hearth, owner_key: str, model_id: bytes, runtime_hash: bytes, price: int, name: str) -> None:
    h.sender(owner_key).send(h.registry.functions.registerModel(model_id, runtime_hash, price, name))
    if h.settlement is not None:
        h.sender(owner_key).send(h.settlement.functions.setPriceCeiling(model_id, PRICE_CEILING))
    h.manifest.models.append(ModelEntry(
        model_id="0x" + model_id.hex(), name=name, runtime_hash="0x" + runtime_hash.hex(), price_per_unit=price))


def list_numerics_classes(h: Hearth, owner_key: str, names: tuple[str, ...] = NUMERICS_CLASSES) -> None:
    """Lists numerics classes in the registry (receipts may name only listed ones)."""
    for name in names:
        h.sender(owner_key).send(h.registry.functions.setNumericsClass(gpu_class_bytes(name), True))
        if name not in h.manifest.numerics_classes:
            h.manifest.numerics_classes.append(name)


def fund(h: Hearth, owner_key: str, to: str, usd: int = 0, hst: int = 0) -> None:
    s = h.sender(owner_key)
    if usd:
        s.send(h.usd.functions.mint(to, usd))
    if hst:
        s.send(h.hst.functions.mint(to, hst))


def stake_provider(h: Hearth, key: str, amount: int, model_ids: list[bytes],
                   endpoint: str = "http://127.0.0.1:0", region: str = "local", gpu_class: str = "cpu") -> None:
    s = h.sender(key)
    s.send(h.hst.functions.approve(h.staking.address, amount))
    s.send(h.staking.functions.register(endpoint, region, gpu_class, amount))
    for m in model_ids:
        s.send(h.staking.functions.setServing(m, True))


def minilm_ids() -> tuple[bytes, bytes]:
    """MiniLM's content hash (the on-chain model id) and the reference runtime hash."""
    from worker.model.encoder import runtime_hash
    from worker.model.weights import model_content_hash

    return model_content_hash(), runtime_hash("torch", "fp32")


@dataclass(frozen=True)
class ServingProvider:
    """A serving-plane provider of ``make up``: a devnet role, where it serves and its quote."""

    role: str
    region: str
    #: quoted price per unit (token), in hUSD wei
    price: int
    port: int
    #: quoted price per token of SmolLM2 (prompt plus completion), in hUSD wei; None: MiniLM only
    llm_price: int | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def models(self) -> tuple[str, ...]:
        """The registry names it serves (``HEARTH_SERVING_MODELS`` / ``--models`` of its process)."""
        return (MINILM_NAME, LLM_NAME) if self.llm_price is not None else (MINILM_NAME,)


#: ``make up``'s serving-plane providers: (role, region, MiniLM price per token, SmolLM2 price per
#: token). Two regions and two prices, so that both the region preference and the price order show
#: in routing. Both serve SmolLM2 too (about 1.9 GB resident each with MiniLM: fp32 weights and
#: their [in, out] copy, KV cache; they load it in 10-20 s at start), so chat completions have a
#: second provider to fail over to.
SERVING_PROVIDERS = (("provider-eu", "eu-west", 150, 400), ("provider-us", "us-east", 100, 300))
#: the payer of ``make up``'s serving plane, what it deposits into the escrow, and the lane it
#: opens to each provider (the gateway tops the lanes up from the deposit afterwards)
SERVING_PAYER = "client"
SERVING_DEPOSIT = 200 * USD
SERVING_LANE = 1_200_000
#: how long the payer's authorization of the gateway's signer lasts
SERVING_SIGNER_TTL_S = 365 * 86400


def serving_providers(ports: list[int]) -> list[ServingProvider]:
    """``make up``'s providers on ``ports`` (one each, in :data:`SERVING_PROVIDERS` order)."""
    if len(ports) != len(SERVING_PROVIDERS):
        raise ValueError(f"{len(SERVING_PROVIDERS)} provider ports are needed, got {len(ports)}")
    return [ServingProvider(r, g, p, port, llm) for (r, g, p, llm), port in zip(SERVING_PROVIDERS, ports, strict=True)]


def setup_serving_plane(dn: Devnet, providers: list[ServingProvider], *, payer: str = SERVING_PAYER,
                        signer_role: str = "relayer", deposit: int = SERVING_DEPOSIT, lane: int = SERVING_LANE) -> None:
    """What the serving plane needs on the devnet: each provider funded, registered with its
    endpoint and region, staked, serving MiniLM (and SmolLM2 when it has an ``llm_price``) and
    quoting its prices; the payer's deposit,
    its authorization of the gateway's receipt signer (the relayer key on a devnet) *with
    allocation rights* so the gateway can top its lanes up, and a first lane to each provider."""
    from contracts.settlement import Settlement

    h, acc = dn.hearth, dn.accounts
    owner = acc["deployer"].key
    ids = {m.name: bytes.fromhex(m.model_id.removeprefix("0x")) for m in dn.manifest.models}
    model_id = ids[MINILM_NAME]
    s = Settlement(h)
    for p in providers:
        # The lanes and the signer's authorization below are per payer and provider, not per
        # model: they pay for SmolLM2 as for MiniLM.
        serves = [ids[m] for m in p.models]
        fund(h, owner, acc[p.role].address, usd=100 * USD, hst=1_000 * HST)
        stake_provider(h, acc[p.role].key, PROVIDER_STAKE, serves, endpoint=p.endpoint, region=p.region)
        s.quote_price(acc[p.role].key, model_id, p.price)
        if p.llm_price is not None:
            s.quote_price(acc[p.role].key, ids[LLM_NAME], p.llm_price)
        log.info("serving provider %s (%s) at %s, region %s, prices %s", p.role, acc[p.role].address, p.endpoint,
                 p.region, {MINILM_NAME: p.price, LLM_NAME: p.llm_price} if p.llm_price is not None else p.price)
    key = acc[payer].key
    s.approve(key, deposit)
    s.deposit(key, deposit)
    expiry = int(h.w3.eth.get_block("latest")["timestamp"]) + SERVING_SIGNER_TTL_S
    s.authorize_signer(key, acc[signer_role].key, expiry, can_allocate=True)
    s.allocate(key, acc[payer].address, {acc[p.role].address: lane for p in providers})
    log.info("payer %s deposited %d, authorized the gateway signer %s to allocate, lanes of %d to %d providers",
             payer, deposit, acc[signer_role].address, lane, len(providers))


def smollm2_ids() -> tuple[bytes, bytes]:
    """SmolLM2's content hash (keccak of the GGUF bytes: the on-chain model id) and the runtime
    hash of the PyTorch path (`worker.workloads.generation.RUNTIME`)."""
    from worker.model.llm import model_hash
    from worker.workloads.generation import runtime_hash

    return model_hash(), runtime_hash()


@dataclass
class Devnet:
    anvil: Anvil
    manifest: Manifest
    accounts: dict[str, accts.DevAccount]
    hearth: Hearth


def bring_up(
    port: int = 8545, chain_id: int = 31337, block_time: float | None = None,
    anvil_log: Path | None = None, write: bool = True, params: MarketParams | None = None,
    serving: list[ServingProvider] | None = None,
) -> Devnet:
    """Starts Anvil and deploys a funded, staked devnet; writes manifest and accounts. With
    ``serving``, also sets those providers and the payer up for the serving plane
    (:func:`setup_serving_plane`)."""
    # Deploy on automine (a block per transaction: seconds, not a block time per transaction),
    # then switch to interval mining when a block time is asked for.
    anvil = Anvil(port=port, chain_id=chain_id, log_path=anvil_log).start()
    try:
        acc = accts.derive(anvil.mnemonic)
        manifest = deploy_contracts(anvil.rpc_url, acc["deployer"].key, acc["treasury"].address, params=params)
        h = Hearth(manifest)
        owner = acc["deployer"].key
        model_id, runtime_hash = minilm_ids()
        register_model(h, owner, model_id, runtime_hash, DEFAULT_PRICE_PER_UNIT, MINILM_NAME)
        # The per-job providers below serve MiniLM only; a serving-plane provider declares SmolLM2
        # served when it runs it (``make up``'s, in setup_serving_plane; others with
        # HEARTH_SERVING_ANNOUNCE), so the gateway never routes it to one that does not.
        register_model(h, owner, *smollm2_ids(), LLM_PRICE_PER_UNIT, LLM_NAME)
        list_numerics_classes(h, owner)
        for role in ("client", "client2"):
            fund(h, owner, acc[role].address, usd=1_000 * USD)
        for role in ("provider", "verifier", "verifier2", "cheater"):
            fund(h, owner, acc[role].address, usd=100 * USD, hst=1_000 * HST)
            stake_provider(h, acc[role].key, PROVIDER_STAKE, [model_id])
        dn = Devnet(anvil, manifest, acc, h)
        if serving:
            setup_serving_plane(dn, serving)
        if block_time:
            anvil_call(h.w3, "evm_setIntervalMining", [int(block_time)])
            anvil.block_time = block_time
        if write:
            from deploy.settings import CliSettings

            paths = CliSettings()
            manifest.save(paths.manifest_file())
            accts.save(acc, paths.data_dir / accts.ACCOUNTS_FILE)
        return dn
    except BaseException:
        anvil.stop()
        raise


def stop_on_signals() -> None:
    """SIGTERM, SIGHUP (a closed terminal) and SIGINT stop the foreground devnet like Ctrl-C, so
    that Anvil is always stopped cleanly; SIGINT explicitly, in case it was inherited ignored."""

    def _raise(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise)


def deployment_lines(manifest: Manifest, manifest_file: Path) -> list[str]:
    """What ``make devnet`` and ``make up`` print of a deployment: each contract's address, then
    where the manifest is, in one aligned column."""
    names = [*manifest.contracts, "manifest"]
    width = max(len(n) for n in names)
    return [*(f"  {n:<{width}} {c.address}" for n, c in manifest.contracts.items()),
            f"  {'manifest':<{width}} {manifest_file}"]


def run_foreground(port: int, chain_id: int, block_time: float | None) -> None:
    """``python -m deploy devnet``: bring the devnet up and keep it until Ctrl-C."""
    from rich.console import Console

    stop_on_signals()
    console = Console(soft_wrap=True)  # a log: paths are never wrapped
    console.print("The chain alone: no indexer, worker or gateway (`make up` runs those). Jobs wait for you to "
                  "claim and deliver them with `hearth job ...`.")
    with console.status("starting Anvil, compiling and deploying..."):
        dn = bring_up(port=port, chain_id=chain_id, block_time=block_time)
    console.print(f"[green]devnet up[/] at {dn.anvil.rpc_url}, chain id {chain_id}")
    from deploy.settings import CliSettings

    for line in deployment_lines(dn.manifest, CliSettings().manifest_file()):
        console.print(line)
    console.print("Ctrl-C stops it.")
    try:
        while dn.anvil.proc and dn.anvil.proc.poll() is None:
            time.sleep(0.5)
        console.print("[red]anvil exited[/]")
    except KeyboardInterrupt:
        console.print("stopping anvil...")
    finally:
        dn.anvil.stop()

