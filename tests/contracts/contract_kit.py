"""Drivers and assertions shared by the contract tests.

:class:`Market` drives one deployment (the session devnet, or a test-only one with other
tokens) through the same ``Hearth`` bindings and ``TxSender`` the services use, and keeps each
job's record by folding the events of every transaction it sends (the rule the indexer uses).
:class:`Clock` freezes chain time so that boundary tests are exact.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from typing import Any, cast

import pytest
from eth_utils import keccak
from web3 import Web3
from web3.contract import Contract
from web3.contract.contract import ContractConstructor, ContractFunction
from web3.exceptions import ContractCustomError, ContractLogicError, Web3RPCError
from web3.types import EventData, TxReceipt

from common.accounts import DevAccount
from contracts import eip712
from contracts.artifacts import load_test_artifacts
from contracts.bindings import Hearth, apply_job_event, vote_commitment
from contracts.chain import ErrorDecoder
from contracts.errors import ChainError
from contracts.manifest import DeployedContract, Manifest
from contracts.types import Job, JobRequest, MarketParams, Permit, Receipt, Status
from deploy.devnet import get_create_address

USD = 10**6
HST = 10**18
BPS = 10_000
PROVIDERS = ("provider", "verifier", "verifier2", "cheater")
INPUT = keccak(b"hearth test input")
OUTPUT = keccak(b"hearth test output")
WRONG_OUTPUT = keccak(b"a wrong output")
GPU = b"cpu".ljust(32, b"\x00")


def selector(signature: str) -> bytes:
    """The 4-byte selector of an error or function signature."""
    return keccak(text=signature)[:4]


@contextmanager
def reverts(name: str, *args: Any) -> Iterator[None]:
    """Asserts that the block raises the custom error ``name`` with exactly ``args``."""
    with pytest.raises(ChainError) as caught:
        yield
    err = caught.value
    assert err.error_name == name, f"expected {name}{args}, got {err}"
    assert _norm(err.error_args) == _norm(args), f"expected {name}{args}, got {err}"


def _norm(v: Any) -> Any:
    if isinstance(v, tuple | list):
        return tuple(_norm(x) for x in v)
    if isinstance(v, str) and v.startswith("0x"):
        return v.lower()
    if isinstance(v, Status):
        return int(v)
    return v


class Clock:
    """Frozen chain time. Anvil stamps every new block with the latest block's timestamp
    (timestamp interval 0) and time moves only by :meth:`warp`. Gas estimation, which sees the
    latest block, then sees the same ``block.timestamp`` as execution, so a test can stand
    exactly on a deadline. :meth:`unfreeze` must run before the test ends."""

    def __init__(self, w3: Web3) -> None:
        self.w3 = w3

    def rpc(self, method: str, params: list[Any] | None = None) -> Any:
        resp = self.w3.provider.make_request(method, params or [])  # type: ignore[arg-type]
        if "error" in resp:
            raise RuntimeError(f"{method}: {resp['error']}")
        return resp.get("result")

    def freeze(self) -> None:
        self.rpc("anvil_setBlockTimestampInterval", [0])

    def unfreeze(self) -> None:
        self.rpc("anvil_removeBlockTimestampInterval")

    def now(self) -> int:
        return int(self.rpc("eth_getBlockByNumber", ["latest", False])["timestamp"], 16)

    def warp(self, timestamp: int) -> None:
        """Mines a block at ``timestamp``; later blocks keep it until the next warp."""
        self.rpc("evm_setNextBlockTimestamp", [timestamp])
        self.rpc("anvil_mine", ["0x1"])

    def advance(self, seconds: int) -> None:
        self.warp(self.now() + seconds)

    def snapshot(self) -> str:
        return str(self.rpc("evm_snapshot"))

    def revert(self, snap: str) -> None:
        assert self.rpc("evm_revert", [snap]) is True


@dataclass(frozen=True)
class Event:
    name: str
    address: str
    args: dict[str, Any]


@dataclass(frozen=True)
class Step:
    """A job's record after a transaction, and the transaction's receipt."""

    job: Job
    rcpt: TxReceipt


@dataclass(frozen=True)
class Posted:
    job_id: int
    job: Job
    rcpt: TxReceipt


class Market:
    """One deployment of registry, staking and market, driven by named devnet accounts.

    Its configuration is read from the chain, never assumed: the model's ``price``, the
    market's ``params``, the staking periods and ``min_stake``, and ``stake0``, what the
    `provider` account has staked when the test starts."""

    def __init__(self, h: Hearth, accounts: dict[str, DevAccount], model_id: bytes,
                 runtime_hash: bytes, clock: Clock) -> None:
        self.h = h
        self.accounts = accounts
        self.model_id = model_id
        self.runtime_hash = runtime_hash
        self.clock = clock
        self.w3 = h.w3
        self._by_address: dict[str, Contract] = {
            c.address.lower(): c for c in (h.market, h.staking, h.registry, h.usd, h.hst)
        }
        self.reload()

    def reload(self) -> None:
        """Reads the deployment's configuration (after a test changed it)."""
        s = self.h.staking.functions
        self.params = MarketParams(*self.h.market.functions.params().call())
        self.min_stake = int(s.minStake().call())
        self.unbonding_period = int(s.unbondingPeriod().call())
        self.jail_period = int(s.jailPeriod().call())
        self.stake0 = int(s.getProvider(self.accounts["provider"].address).call()[0])
        try:
            self.price = int(self.h.registry.functions.priceOf(self.model_id).call())
        except (ContractCustomError, ContractLogicError):
            self.price = 0  # a fresh deployment registers the model after construction

    def revert(self, snap: str) -> None:
        """Reverts the chain to ``snap`` and resyncs every sender's nonce."""
        self.clock.revert(snap)
        for sender in self.h._senders.values():
            sender.resync()

    def set_params(self, params: MarketParams) -> TxReceipt:
        """Proposes ``params``, waits out ``PARAMS_DELAY`` and applies them; returns the apply's receipt."""
        self.send("deployer", self.market.functions.proposeParams(params.as_tuple()))
        self.clock.advance(int(self.market.functions.PARAMS_DELAY().call()))
        rcpt = self.send("relayer", self.market.functions.applyParams(params.as_tuple()))
        self.reload()
        return rcpt

    def collateral(self, max_payment: int = USD) -> int:
        """What claiming a job escrowing ``max_payment`` locks under the current parameters."""
        return self.params.collateral_for(max_payment)

    def fee(self, payment: int) -> int:
        """The protocol fee on ``payment`` under the current parameters."""
        return payment * self.params.fee_bps // BPS

    def due(self, units: int, max_payment: int) -> int:
        """What a receipt for ``units`` pays: min(max payment, units x price)."""
        return min(max_payment, units * self.price)

    @classmethod
    def from_devnet(cls, devnet: Any) -> Market:
        model = devnet.manifest.models[0]
        return cls(devnet.hearth, devnet.accounts, bytes.fromhex(model.model_id[2:]),
                   bytes.fromhex(model.runtime_hash[2:]), Clock(devnet.hearth.w3))

    # ------------------------------------------------------------ accounts and calls

    def addr(self, role: str) -> str:
        return self.accounts[role].address

    def key(self, role: str) -> str:
        return self.accounts[role].key

    def send(self, role: str, fn: ContractFunction | ContractConstructor) -> TxReceipt:
        return self.h.sender(self.key(role)).send(fn)

    def call(self, fn: ContractFunction) -> Any:
        """Calls a view, raising a reverted call as a decoded ``ChainError`` (as ``send`` does)."""
        try:
            return fn.call()
        except (ContractCustomError, ContractLogicError, Web3RPCError, ValueError) as exc:
            raise self.h.decoder.from_exception(exc) from None

    @property
    def market(self) -> Contract:
        return self.h.market

    @property
    def staking(self) -> Contract:
        return self.h.staking

    def credit(self, role_or_address: str) -> int:
        """The account's withdrawable balance in the market."""
        return int(self.market.functions.balanceOf(self._address(role_or_address)).call())

    def usd(self, role_or_address: str) -> int:
        return int(self.h.usd.functions.balanceOf(self._address(role_or_address)).call())

    def hst(self, role_or_address: str) -> int:
        return int(self.h.hst.functions.balanceOf(self._address(role_or_address)).call())

    def provider_info(self, role_or_address: str) -> dict[str, Any]:
        names = ("staked", "locked", "unbonding", "unbond_ready_at", "jailed_until", "registered",
                 "endpoint", "region", "gpu_class", "strikes")
        info = self.staking.functions.getProvider(self._address(role_or_address)).call()
        return dict(zip(names, info, strict=True))

    def status(self, job_id: int) -> Status:
        return Status(self.market.functions.jobStatus(job_id).call())

    def _address(self, role_or_address: str) -> str:
        if role_or_address.startswith("0x"):
            return Web3.to_checksum_address(role_or_address)
        return self.addr(role_or_address)

    # ------------------------------------------------------------ events

    def logs(self, rcpt: TxReceipt) -> list[Event]:
        """Every log of the receipt emitted by this deployment's contracts, decoded."""
        out = []
        for lg in rcpt["logs"]:
            contract = self._by_address.get(lg["address"].lower())
            if contract is not None:
                ev = decode_event(contract, lg)
                out.append(Event(ev["event"], lg["address"], dict(ev["args"])))
        return out

    def events(self, rcpt: TxReceipt, name: str) -> list[dict[str, Any]]:
        return [e.args for e in self.logs(rcpt) if e.name == name]


    def event(self, rcpt: TxReceipt, name: str) -> dict[str, Any]:
        """The one event called ``name`` in the receipt."""
        found = self.events(rcpt, name)
        assert len(found) == 1, f"expected one {name}, got {[e.name for e in self.logs(rcpt)]}"
        return found[0]

    def fold(self, job_id: int, job: Job | None, rcpt: TxReceipt) -> Job:
        """The job's record after the receipt's events (the indexer's rule)."""
        for e in self.logs(rcpt):
            if e.address.lower() == self.market.address.lower() and e.args.get("jobId") == job_id:
                job = apply_job_event(job, e.name, e.args)
        assert job is not None, f"no event for job {job_id}"
        return job

    # ------------------------------------------------------------ the job path

    def approve(self, role: str, amount: int = 2**256 - 1) -> None:
        self.send(role, self.h.usd.functions.approve(self.market.address, amount))

    def post(self, role: str = "client", max_payment: int = USD, ttl: int = 3600,
             input_hash: bytes = INPUT, approve: bool = True) -> Posted:
        if approve:
            self.approve(role, max_payment)
        deadline = self.clock.now() + ttl
        rcpt = self.send(role, self.market.functions.postJob(self.model_id, input_hash, max_payment, deadline))
        job_id = self.h.job_id_from(rcpt)
        return Posted(job_id, self.fold(job_id, None, rcpt), rcpt)

    def job_request(self, role: str = "client", max_payment: int = USD, ttl: int = 3600,
                    nonce: int | None = None, input_hash: bytes = INPUT) -> JobRequest:
        client = self.addr(role)
        if nonce is None:
            nonce = int(self.market.functions.nonces(client).call())
        return JobRequest(client, self.model_id, input_hash, max_payment, self.clock.now() + ttl, nonce)

    def sign_request(self, role: str, req: JobRequest, chain_id: int | None = None,
                     market: str | None = None) -> bytes:
        return eip712.sign_job_request(self.key(role), req, chain_id or self.h.chain_id,
                                       market or self.market.address)

    def permit(self, role: str, value: int, ttl: int = 3600, spender: str | None = None) -> Permit:
        owner = self.addr(role)
        nonce = int(self.h.usd.functions.nonces(owner).call())
        deadline = self.clock.now() + ttl
        v, r, s = eip712.sign_permit(
            self.key(role), self.h.usd.functions.name().call(), self.h.usd.address, self.h.chain_id,
            owner, spender or self.market.address, value, nonce, deadline,
        )
        return Permit(value, deadline, v, r, s)

    def post_with_sig(self, req: JobRequest, signature: bytes, permit: Permit | None = None,
                      relayer: str = "relayer") -> Posted:
        fn = self.market.functions.postJobWithSig(req.as_tuple(), signature, (permit or Permit()).as_tuple())
        rcpt = self.send(relayer, fn)
        job_id = self.h.job_id_from(rcpt)
        return Posted(job_id, self.fold(job_id, None, rcpt), rcpt)

    def claim(self, job_id: int, job: Job, role: str = "provider") -> Step:
        rcpt = self.send(role, self.market.functions.claimJob(job_id, job.as_tuple()))
        return Step(self.fold(job_id, job, rcpt), rcpt)

    def receipt(self, job_id: int, units: int = 1000, output: bytes = OUTPUT,
                model_hash: bytes | None = None) -> Receipt:
        return Receipt(job_id, output, units, model_hash or self.model_id, self.runtime_hash, GPU)

    def sign_receipt(self, role: str, rec: Receipt) -> bytes:
        return eip712.sign_receipt(self.key(role), rec, self.h.chain_id, self.market.address)

    def submit(self, job: Job, rec: Receipt, signature: bytes, relayer: str = "provider") -> Step:
        fn = self.market.functions.submitReceipt(job.as_tuple(), rec.as_tuple(), signature)
        rcpt = self.send(relayer, fn)
        return Step(self.fold(rec.job_id, job, rcpt), rcpt)

    def deliver(self, job_id: int, job: Job, units: int = 1000, output: bytes = OUTPUT,
                role: str = "provider", relayer: str | None = None) -> Step:
        rec = self.receipt(job_id, units, output)
        return self.submit(job, rec, self.sign_receipt(role, rec), relayer or role)

    def finalize(self, job_id: int, job: Job, role: str = "relayer") -> Step:
        rcpt = self.send(role, self.market.functions.finalize(job_id, job.as_tuple()))
        return Step(self.fold(job_id, job, rcpt), rcpt)

    def refund(self, job_id: int, job: Job, role: str = "relayer") -> Step:
        rcpt = self.send(role, self.market.functions.refund(job_id, job.as_tuple()))
        return Step(self.fold(job_id, job, rcpt), rcpt)

    def challenge(self, job_id: int, job: Job, role: str = "verifier", approve: bool = True) -> Step:
        if approve:
            self.approve(role, self.params.challenge_bond)
        rcpt = self.send(role, self.market.functions.challenge(job_id, job.as_tuple()))
        return Step(self.fold(job_id, job, rcpt), rcpt)

    def draw(self, job_id: int, role: str = "relayer") -> TxReceipt:
        """Mines past the dispute's draw block and draws its committee."""
        draw_block = int(self.market.functions.dispute(job_id).call()[4])
        # Gas estimation runs on the latest block, which must already be past drawBlock.
        behind = draw_block + 1 - self.w3.eth.block_number
        if behind > 0:
            self.clock.rpc("anvil_mine", [hex(behind)])
        return self.send(role, self.market.functions.drawCommittee(job_id))

    def commit(self, job_id: int, role: str, output: bytes, salt: bytes, units: int = 1000) -> TxReceipt:
        commitment = vote_commitment(job_id, self.addr(role), output, units, salt)
        return self.send(role, self.market.functions.commitVote(job_id, commitment))

    def reveal(self, job_id: int, role: str, output: bytes, salt: bytes, units: int = 1000) -> TxReceipt:
        return self.send(role, self.market.functions.revealVote(job_id, output, units, salt))

    def resolve(self, job_id: int, job: Job, role: str = "relayer") -> Step:
        rcpt = self.send(role, self.market.functions.resolveDispute(job_id, job.as_tuple()))
        return Step(self.fold(job_id, job, rcpt), rcpt)

    def resolve_escalated(self, job_id: int, job: Job, provider_won: bool, role: str = "deployer") -> Step:
        fn = self.market.functions.resolveEscalated(job_id, job.as_tuple(), provider_won)
        rcpt = self.send(role, fn)
        return Step(self.fold(job_id, job, rcpt), rcpt)

    def withdraw(self, role: str, to: str | None = None) -> TxReceipt:
        return self.send(role, self.market.functions.withdraw(to or self.addr(role)))

    def delivered(self, units: int = 1000, max_payment: int = USD, output: bytes = OUTPUT,
                  provider: str = "provider", client: str = "client") -> tuple[int, Job]:
        """A job posted, claimed and delivered; its challenge window is open."""
        p = self.post(client, max_payment)
        claimed = self.claim(p.job_id, p.job, provider).job
        return p.job_id, self.deliver(p.job_id, claimed, units, output, provider).job

    def vote(self, job_id: int, votes: dict[str, bytes | tuple[bytes, int]]) -> None:
        """Commits and reveals ``votes`` (member -> output hash, or (output hash, units); units
        default to 1000), ending past the reveal phase."""
        ballots = {r: v if isinstance(v, tuple) else (v, 1000) for r, v in votes.items()}
        for role, (output, units) in ballots.items():
            self.commit(job_id, role, output, _salt(role), units)
        d = self.dispute_times(job_id)
        self.clock.warp(d[0])
        for role, (output, units) in ballots.items():
            self.reveal(job_id, role, output, _salt(role), units)
        self.clock.warp(d[1])

    def dispute(self, job_id: int) -> dict[str, Any]:
        return self.h.dispute(job_id)

    def dispute_times(self, job_id: int) -> tuple[int, int]:
        """(commitEnd, revealEnd) of the job's dispute."""
        d = self.dispute(job_id)
        assert d["commitEnd"], f"job {job_id} has no drawn committee"
        return int(d["commitEnd"]), int(d["revealEnd"])

    def seats(self, job_id: int) -> list[str]:
        """The committee's seats as roles (a role drawn twice appears twice)."""
        by_addr = {a.address.lower(): r for r, a in self.accounts.items()}
        return [by_addr.get(a.lower(), a) for a in self.market.functions.committee(job_id).call()]

    def committee_roles(self, job_id: int) -> list[str]:
        """The committee's distinct members as roles, in seat order."""
        return list(dict.fromkeys(self.seats(job_id)))

    def challenged(self, job_id: int, job: Job, challenger: str = "verifier") -> tuple[Job, list[str]]:
        """Challenges and draws: (the job's record, the committee's distinct members)."""
        job = self.challenge(job_id, job, challenger).job
        self.draw(job_id)
        return job, self.committee_roles(job_id)

    def reward(self, role_or_address: str) -> int:
        """The account's withdrawable staking-token rewards in the market."""
        return int(self.market.functions.rewardOf(self._address(role_or_address)).call())


def events_of(contract: Contract, rcpt: TxReceipt, name: str) -> list[dict[str, Any]]:
    """The ``name`` events that ``contract`` emitted in the receipt, decoded."""
    out = []
    for lg in rcpt["logs"]:
        if lg["address"].lower() == contract.address.lower():
            ev = decode_event(contract, lg)
            if ev["event"] == name:
                out.append(dict(ev["args"]))
    return out


_EVENT_TABLES: dict[tuple[str, ...], dict[bytes, Any]] = {}


def decode_event(contract: Contract, lg: Any) -> EventData:
    """Decodes a log of ``contract``. Unlike ``bindings.decode_log``, whose cache is keyed by
    address alone, the table is keyed by the contract's event signatures: the tests deploy
    different contracts at the same address (a snapshot revert rewinds the deployer's nonce)."""
    sigs = tuple(sorted(
        f"{item['name']}({','.join(_abi_type(i) for i in item['inputs'])})"
        for item in cast(list[dict[str, Any]], contract.abi) if item.get("type") == "event"
    ))
    table = _EVENT_TABLES.get(sigs)
    if table is None:
        table = {keccak(text=sig): sig.split("(")[0] for sig in sigs}
        _EVENT_TABLES[sigs] = table
    name = table[bytes(lg["topics"][0])]
    return contract.events[name]().process_log(lg)  # type: ignore[no-any-return]


def _abi_type(inp: dict[str, Any]) -> str:
    if inp["type"].startswith("tuple"):
        return f"({','.join(_abi_type(c) for c in inp['components'])}){inp['type'][5:]}"
    return str(inp["type"])


def _salt(role: str) -> bytes:
    return keccak(text=f"salt:{role}")


# ---------------------------------------------------------------- test-only deployments


@cache
def all_errors_decoder() -> ErrorDecoder:
    """Decodes the custom errors of every source and test contract."""
    return ErrorDecoder(a.abi for a in load_test_artifacts().values())


def deploy(m: Market, name: str, *args: Any, role: str = "deployer", library: str | None = None) -> Contract:
    """Deploys a source or test contract from ``role`` (linking ``library`` where it links
    DisputeGame); returns it bound to its address."""
    art = load_test_artifacts()[name]
    bytecode = art.linked(library or m.h.dispute_game.address) if art.needs_linking else art.bytecode
    factory = m.w3.eth.contract(abi=art.abi, bytecode=bytecode)
    rcpt = m.send(role, factory.constructor(*args))
    assert rcpt["contractAddress"] is not None
    return m.w3.eth.contract(address=rcpt["contractAddress"], abi=art.abi)


def deploy_market(m: Market, payment: Contract, stake: Contract | None = None,
                  params: MarketParams | None = None, owner: str = "deployer") -> Market:
    """A second deployment (registry, staking, market) on the same chain, paying in ``payment``
    and staking ``stake`` (the devnet's HST by default), with the devnet's model registered at
    its price and ``m``'s parameters. Staking binds the market immutably, so the market's
    CREATE address is computed first."""
    stake = stake or m.h.hst
    start = m.w3.eth.block_number
    registry = deploy(m, "ModelRegistry", m.addr(owner), role=owner)
    game = deploy(m, "DisputeGame", role=owner)
    nonce = m.w3.eth.get_transaction_count(Web3.to_checksum_address(m.addr(owner)), "pending")
    predicted = get_create_address(m.addr(owner), nonce + 1)
    staking = deploy(m, "Staking", m.addr(owner), stake.address, predicted, m.min_stake,
                     m.unbonding_period, m.jail_period, role=owner)
    p = params or m.params
    market = deploy(m, "JobMarket", m.addr(owner), payment.address, staking.address,
                    registry.address, p.as_tuple(), role=owner, library=game.address)
    assert market.address == predicted
    contracts = {
        "HearthUSD": payment, "HearthStake": stake, "ModelRegistry": registry, "DisputeGame": game,
        "Staking": staking, "JobMarket": market,
    }
    manifest = Manifest(
        chain_id=m.h.chain_id, rpc_url=m.h.manifest.rpc_url, deployment_block=start + 1,
        contracts={n: DeployedContract(address=c.address, abi=cast(list[dict[str, Any]], c.abi))
                   for n, c in contracts.items()},
    )
    h = Hearth(manifest, m.w3)
    h.decoder = all_errors_decoder()
    other = Market(h, m.accounts, m.model_id, m.runtime_hash, m.clock)
    other.send(owner, registry.functions.registerModel(m.model_id, m.runtime_hash, m.price, "all-MiniLM-L6-v2"))
    other.send(owner, registry.functions.setNumericsClass(GPU, True))
    other.reload()
    return other


def stake(m: Market, role: str, amount: int, serve: bool = True, mint: bool = False) -> None:
    """Registers ``role`` on ``m``'s staking, stakes ``amount`` and serves the model."""
    if mint:
        m.send("deployer", m.h.hst.functions.mint(m.addr(role), amount))
    m.send(role, m.h.hst.functions.approve(m.staking.address, amount))
    m.send(role, m.staking.functions.register("http://127.0.0.1:0", "local", "cpu", amount))
    if serve:
        m.send(role, m.staking.functions.setServing(m.model_id, True))
