"""Gas of every market and staking step, and of a whole job's life, on a fresh devnet.

    python bench/gas.py [--out bench/results/gas.json] [--jobs 5]

Gas is the receipt's ``gasUsed`` (the 21,000 base and calldata included), with the same
compiler settings as the deployment (solc version, optimizer runs and EVM version are
recorded). A job's life is postJob (or postJobWithSig) + claimJob + submitReceipt + finalize.

The dispute steps (challenge, drawCommittee, commitVote, revealVote, resolveDispute) are also
measured at 10, 100 and 1,000 eligible providers (``--scale``), and the draw before and after
300 staked providers outside the disputed (model, class) set join: its gas does not change.

Storage writes from zero cost 20,000 gas more than writes to a non-zero slot, so the first job
on a deployment pays for zeroes the next ones find filled. The lifecycle is therefore reported
in several keys, all of them measured here, so nothing is hidden:

* ``per_job_lifecycle_gas`` / ``per_job_lifecycle_with_sig_gas``: the steady state, the
  second and later jobs of a client that approved the market once (infinite allowance), with
  the provider's and the treasury's credited balances already non-zero, and maxPayment set to
  exactly units x price (a client that tokenized its input knows the units), so no unused
  escrow goes back. The limit is 250,000 on ``per_job_lifecycle_gas`` (the script exits 1
  above it); ``with_sig_within_limit`` records whether the relayed path also fits.
* ``first_job_lifecycle_gas``: the first job ever on the deployment (job counter, provider
  and treasury balances all cold).
* ``per_job_lifecycle_with_unused_escrow_refund_gas``: steady state but maxPayment above the
  payment, so the client is credited the rest; ``..._first_refund_gas`` when that credit
  starts from zero.
* ``per_job_lifecycle_with_sig_and_permit_gas``: postJobWithSig carrying an EIP-2612 permit
  instead of a prior approval.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import shlex
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eth_account import Account  # noqa: E402
from eth_utils import keccak  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from web3.contract.contract import ContractFunction  # noqa: E402
from web3.types import TxReceipt  # noqa: E402

from contracts import eip712  # noqa: E402
from contracts.bindings import vote_commitment  # noqa: E402
from contracts.compiler import EVM_VERSION, OPTIMIZER_RUNS, find_compiler  # noqa: E402
from contracts.types import Job, JobRequest, MarketParams, Permit, Receipt  # noqa: E402
from deploy.devnet import Devnet, bring_up, free_port  # noqa: E402

log = logging.getLogger("bench.gas")

LIMIT = 250_000
#: Staked providers that are not in the disputed model's eligible set, added to show the draw
#: does not read them (the issue's 300 junk registrations, now each with the minimum stake).
JUNK = 300
UNITS = 1_000  # tokens of a typical short embedding request
GPU = b"cpu".ljust(32, b"\x00")
MAX = 2**256 - 1


@dataclass
class Bench:
    """Sends steps on the devnet and records their gas."""

    dn: Devnet
    steps: dict[str, list[int]] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.h = self.dn.hearth
        self.acc = self.dn.accounts
        self.model_id = bytes.fromhex(self.dn.manifest.models[0].model_id[2:])
        self.runtime_hash = bytes.fromhex(self.dn.manifest.models[0].runtime_hash[2:])
        self.price = int(self.h.registry.functions.priceOf(self.model_id).call())
        self.params = MarketParams(*self.h.market.functions.params().call())

    def send(self, role: str, fn: ContractFunction, step: str | None = None) -> TxReceipt:
        rcpt = self.h.sender(self.acc[role].key).send(fn)
        if step:
            self.steps.setdefault(step, []).append(int(rcpt["gasUsed"]))
        return rcpt

    def send_as(self, address: str, fn: ContractFunction, step: str | None = None) -> TxReceipt:
        """Sends from a devnet role's or a bench-made provider's address."""
        key = self.keys.get(address.lower()) or next(a.key for a in self.acc.values()
                                                     if a.address.lower() == address.lower())
        rcpt = self.h.sender(key).send(fn)
        if step:
            self.steps.setdefault(step, []).append(int(rcpt["gasUsed"]))
        return rcpt

    def add_provider(self, model_id: bytes, gpu_class: str) -> str:
        """A new EOA provider, staked the devnet minimum, serving ``model_id`` in ``gpu_class``."""
        acct = Account.from_key(keccak(text=f"bench provider {len(self.keys)}"))
        self.keys[acct.address.lower()] = "0x" + bytes(acct.key).hex()
        self.h.w3.provider.make_request("anvil_setBalance", [acct.address, hex(10**20)])  # type: ignore[arg-type]
        stake = int(self.h.staking.functions.minStake().call())
        self.send("deployer", self.h.hst.functions.mint(acct.address, stake))
        s = self.h.sender(self.keys[acct.address.lower()])
        s.send(self.h.hst.functions.approve(self.h.staking.address, stake))
        s.send(self.h.staking.functions.register("http://bench", "x", gpu_class, stake))
        s.send(self.h.staking.functions.setServing(model_id, True))
        return str(acct.address)

    def mine_past_draw(self, job_id: int) -> None:
        """Mines until the latest block is past the dispute's draw block."""
        draw_block = int(self.h.market.functions.dispute(job_id).call()[4])
        behind = draw_block + 1 - self.h.w3.eth.block_number
        if behind > 0:
            self.h.w3.provider.make_request("anvil_mine", [hex(behind)])  # type: ignore[arg-type]

    def advance(self, seconds: int) -> None:
        self.h.w3.provider.make_request("evm_increaseTime", [seconds])  # type: ignore[arg-type]
        self.h.w3.provider.make_request("anvil_mine", ["0x1"])  # type: ignore[arg-type]

    def now(self) -> int:
        return int(self.h.w3.eth.get_block("latest")["timestamp"])

    def fold(self, job_id: int, job: Job | None, rcpt: TxReceipt) -> Job:
        return self.h.fold_receipt(job_id, job, rcpt)

    # ------------------------------------------------------------ the job path

    def post(self, max_payment: int, step: str | None, client: str = "client", input_tag: str = "") -> tuple[int, Job]:
        fn = self.h.market.functions.postJob(self.model_id, keccak(text=f"input {input_tag}"), max_payment,
                                             self.now() + 3600)
        rcpt = self.send(client, fn, step)
        job_id = self.h.job_id_from(rcpt)
        return job_id, self.fold(job_id, None, rcpt)

    def post_with_sig(self, max_payment: int, step: str | None, permit: bool = False,
                      client: str = "client", input_tag: str = "") -> tuple[int, Job]:
        a = self.acc[client]
        nonce = int(self.h.market.functions.nonces(a.address).call())
        req = JobRequest(a.address, self.model_id, keccak(text=f"input {input_tag}"), max_payment,
                         self.now() + 3600, nonce)
        sig = eip712.sign_job_request(a.key, req, self.h.chain_id, self.h.market.address)
        p = Permit()
        if permit:
            deadline = self.now() + 3600
            v, r, s = eip712.sign_permit(
                a.key, self.h.usd.functions.name().call(), self.h.usd.address, self.h.chain_id, a.address,
                self.h.market.address, max_payment, int(self.h.usd.functions.nonces(a.address).call()), deadline)
            p = Permit(max_payment, deadline, v, r, s)
        rcpt = self.send("relayer", self.h.market.functions.postJobWithSig(req.as_tuple(), sig, p.as_tuple()), step)
        job_id = self.h.job_id_from(rcpt)
        return job_id, self.fold(job_id, None, rcpt)

    def claim(self, job_id: int, job: Job, step: str | None, provider: str = "provider") -> Job:
        fn = self.h.market.functions.claimJob(job_id, job.as_tuple())
        return self.fold(job_id, job, self.send(provider, fn, step))

    def deliver(self, job_id: int, job: Job, step: str | None, output: bytes | None = None,
                provider: str = "provider") -> Job:
        rec = Receipt(job_id, output or keccak(text=f"output {job_id}"), UNITS, self.model_id, self.runtime_hash, GPU)
        sig = eip712.sign_receipt(self.acc[provider].key, rec, self.h.chain_id, self.h.market.address)
        fn = self.h.market.functions.submitReceipt(job.as_tuple(), rec.as_tuple(), sig)
        return self.fold(job_id, job, self.send(provider, fn, step))

    def finalize(self, job_id: int, job: Job, step: str | None) -> Job:
        fn = self.h.market.functions.finalize(job_id, job.as_tuple())
        return self.fold(job_id, job, self.send("relayer", fn, step))

    def lifecycle(self, post: Callable[[str | None], tuple[int, Job]], prefix: str | None) -> int:
        """Posts (with ``post``), claims, delivers and finalizes one job; returns the total gas."""
        names = [f"{prefix}:{s}" if prefix else None for s in ("post", "claim", "receipt", "finalize")]
        before = {k: len(v) for k, v in self.steps.items()}
        job_id, job = post(names[0])
        job = self.claim(job_id, job, names[1])
        job = self.deliver(job_id, job, names[2])
        self.advance(self.params.challenge_window)
        self.finalize(job_id, job, names[3])
        return sum(sum(v[before.get(k, 0):]) for k, v in self.steps.items() if prefix and k.startswith(prefix + ":"))


def run(n_jobs: int, scale: list[int]) -> dict[str, Any]:
    dn = bring_up(port=free_port(), write=False)
    try:
        return measure(Bench(dn), n_jobs, scale)
    finally:
        dn.anvil.stop()


def measure(b: Bench, n_jobs: int, scale: list[int]) -> dict[str, Any]:
    h, m = b.h, b.h.market.functions
    exact = UNITS * b.price  # maxPayment of a client that knows its units
    out: dict[str, Any] = {}

    # Approvals once (infinite), as a steady client and the verifiers do.
    for role in ("client", "client2", "verifier", "verifier2", "cheater"):
        b.send(role, h.usd.functions.approve(h.market.address, MAX))

    # The first job ever: job counter, provider and treasury balances start at zero.
    out["first_job_lifecycle_gas"] = b.lifecycle(lambda s: b.post(exact, s, input_tag="first"), "first")

    # Steady state: the second and later jobs, exact maxPayment.
    runs = [b.lifecycle(partial(b.post, exact, input_tag=f"steady {i}"), "steady") for i in range(n_jobs)]
    out["per_job_lifecycle_gas"] = int(statistics.median(runs))
    sig_runs = [b.lifecycle(partial(b.post_with_sig, exact, input_tag=f"sig {i}"), "sig")
                for i in range(n_jobs)]
    out["per_job_lifecycle_with_sig_gas"] = int(statistics.median(sig_runs))

    # Unused escrow goes back to the client: its credit starts at zero, then is non-zero.
    b.send("client2", h.usd.functions.approve(h.market.address, MAX))
    out["per_job_lifecycle_with_unused_escrow_first_refund_gas"] = b.lifecycle(
        lambda s: b.post(2 * exact, s, client="client2", input_tag="refund first"), "refund-first")
    refund_runs = [b.lifecycle(partial(b.post, 2 * exact, client="client2", input_tag=f"refund {i}"),
                               "refund") for i in range(n_jobs)]
    out["per_job_lifecycle_with_unused_escrow_refund_gas"] = int(statistics.median(refund_runs))

    # postJobWithSig carrying a permit, from a client with no allowance.
    b.send("client", h.usd.functions.approve(h.market.address, 0))
    permit_runs = [b.lifecycle(partial(b.post_with_sig, exact, permit=True, input_tag=f"permit {i}"),
                               "permit") for i in range(n_jobs)]
    out["per_job_lifecycle_with_sig_and_permit_gas"] = int(statistics.median(permit_runs))
    b.send("client", h.usd.functions.approve(h.market.address, MAX))

    # postJob with a finite allowance (it is decreased, one more storage write).
    b.send("client", h.usd.functions.approve(h.market.address, 10 * exact))
    b.post(exact, "postJob (finite allowance)", input_tag="finite")
    b.send("client", h.usd.functions.approve(h.market.address, MAX))

    # Refunds after the deadline: of an unclaimed job, and of a claimed one (penalty slashed).
    j1, job1 = b.post(exact, None, input_tag="lapse 1")
    j2, job2 = b.post(exact, None, input_tag="lapse 2")
    job2 = b.claim(j2, job2, None)
    b.advance(3601)
    b.send("relayer", m.refund(j1, job1.as_tuple()), "refund (unclaimed)")
    b.send("relayer", m.refund(j2, job2.as_tuple()), "refund (claimed, penalty slashed)")

    # Disputes: provider wins, provider loses, no quorum escalated and settled by governance.
    def dispute(tag: str, agree: bool | None) -> tuple[int, Job]:
        """Challenge, draw, and (unless ``agree`` is None) every member commits and reveals."""
        job_id, job = b.post(exact, None, input_tag=tag)
        job = b.claim(job_id, job, None)
        job = b.deliver(job_id, job, None)
        job = b.fold(job_id, job, b.send("verifier", m.challenge(job_id, job.as_tuple()), "challenge"))
        b.mine_past_draw(job_id)
        b.send("relayer", m.drawCommittee(job_id), "drawCommittee")
        members = list(dict.fromkeys(m.committee(job_id).call()))
        out_hash = job.output_hash if agree else keccak(text="other")
        salt = keccak(text=tag)
        if agree is not None:
            for a in members:
                commitment = vote_commitment(job_id, a, out_hash, UNITS, salt)
                b.send_as(a, m.commitVote(job_id, commitment), "commitVote")
        b.advance(b.params.commit_period)
        if agree is not None:
            for a in members:
                b.send_as(a, m.revealVote(job_id, out_hash, UNITS, salt), "revealVote")
        b.advance(b.params.reveal_period)
        return job_id, job

    job_id, job = dispute("wins", True)
    rcpt = b.send("relayer", m.resolveDispute(job_id, job.as_tuple()), "resolveDispute (provider wins)")
    job = b.fold(job_id, job, rcpt)
    b.finalize(job_id, job, "finalize (after a won dispute)")
    job_id, job = dispute("no quorum", None)
    b.send("relayer", m.resolveDispute(job_id, job.as_tuple()), "resolveDispute (no quorum, escalated)")
    b.send("deployer", m.resolveEscalated(job_id, job.as_tuple(), True), "resolveEscalated (by the owner)")
    job_id, job = dispute("loses", False)
    b.send("relayer", m.resolveDispute(job_id, job.as_tuple()), "resolveDispute (provider loses, slashed)")

    # Payouts.
    for role in ("provider", "treasury", "client2", "verifier"):
        b.send(role, m.withdraw(b.acc[role].address), "withdraw")
    b.send("verifier", m.withdrawRewards(b.acc["verifier"].address), "withdrawRewards")

    # Staking.
    s = h.staking.functions
    b.send("deployer", h.hst.functions.mint(b.acc["spare"].address, 1_000 * 10**18))
    b.send("spare", h.hst.functions.approve(h.staking.address, MAX))
    b.send("spare", s.register("https://gpu.example", "eu-west", "cpu", 200 * 10**18), "Staking.register")
    b.send("spare", s.setServing(b.model_id, True), "Staking.setServing")
    b.send("spare", s.stake(100 * 10**18), "Staking.stake (top-up)")
    b.send("spare", s.requestUnbond(50 * 10**18), "Staking.requestUnbond")
    b.advance(int(s.unbondingPeriod().call()))
    b.send("spare", s.withdraw(), "Staking.withdraw")

    named = {k: v for k, v in b.steps.items() if ":" not in k}
    for prefix, label in (("steady", "postJob"), ("sig", "postJobWithSig"), ("permit", "postJobWithSig (permit)")):
        named[label] = b.steps[f"{prefix}:post"]
    for step, label in (("claim", "claimJob"), ("receipt", "submitReceipt"), ("finalize", "finalize")):
        named[label] = b.steps[f"steady:{step}"]
    named["postJob (first job)"] = b.steps["first:post"]
    named["claimJob (first job)"] = b.steps["first:claim"]
    named["finalize (first job: cold provider and treasury balances)"] = b.steps["first:finalize"]
    named["finalize (unused escrow back to the client)"] = b.steps["refund:finalize"]
    out["steps"] = {k: int(statistics.median(v)) for k, v in named.items()}
    out["lifecycle_breakdown"] = {
        "postJob": out["steps"]["postJob"], "claimJob": out["steps"]["claimJob"],
        "submitReceipt": out["steps"]["submitReceipt"], "finalize": out["steps"]["finalize"],
    }
    out["steady_state_runs"] = {"postJob": runs, "postJobWithSig": sig_runs, "unused_escrow": refund_runs,
                                "permit": permit_runs}
    out["limit"] = LIMIT
    out["within_limit"] = out["per_job_lifecycle_gas"] <= LIMIT
    out["with_sig_within_limit"] = out["per_job_lifecycle_with_sig_gas"] <= LIMIT
    out["units"] = UNITS
    out["price_per_unit"] = b.price
    if scale:
        out["dispute_scaling"] = dispute_scaling(b, exact, scale)
        sc = out["dispute_scaling"]
        for n in sc["eligible"]:
            key = str(n)
            out[f"challenge_gas_{n}_eligible"] = sc["steps"][key]["challenge"]
            out[f"draw_gas_{n}_eligible"] = sc["steps"][key]["drawCommittee"]
        out["draw_gas_with_non_eligible"] = sc["non_eligible"]
        out["draw_sampling_gas_unchanged_by_non_eligible"] = (
            sc["non_eligible"]["sampling_gas_before"] == sc["non_eligible"]["sampling_gas_after"])
    return out


def dispute_scaling(b: Bench, exact: int, sizes: list[int]) -> dict[str, Any]:
    """The dispute steps at ``sizes`` eligible providers (devnet's four included), and the draw
    before and after ``JUNK`` staked providers that are not eligible (another class or model)
    join: a draw reads O(log n) nodes of the eligible set's tree, never the provider list."""
    h, m = b.h, b.h.market.functions
    steps: dict[str, dict[str, int]] = {}
    non_eligible: dict[str, Any] = {}

    def release_provider() -> None:
        """The provider lost a dispute and was jailed: let it back in once the jail has passed."""
        b.advance(int(h.staking.functions.jailPeriod().call()))
        b.send("relayer", h.staking.functions.refresh(b.acc["provider"].address))

    release_provider()
    n_eligible = int(h.staking.functions.eligibleSet(b.model_id, GPU).call()[0])

    def one_dispute(tag: str) -> dict[str, int]:
        job_id, job = b.post(exact, None, input_tag=tag)
        job = b.claim(job_id, job, None)
        job = b.deliver(job_id, job, None, output=keccak(text="wrong " + tag))
        gas: dict[str, int] = {}
        rcpt = b.send("verifier", m.challenge(job_id, job.as_tuple()))
        gas["challenge"] = int(rcpt["gasUsed"])
        job = b.fold(job_id, job, rcpt)
        b.mine_past_draw(job_id)
        gas["drawCommittee"] = int(b.send("relayer", m.drawCommittee(job_id))["gasUsed"])
        members = list(dict.fromkeys(m.committee(job_id).call()))
        right = keccak(text=f"output {job_id}")
        salt = keccak(text=tag)
        commits, reveals = [], []
        for a in members:
            commits.append(b.send_as(a, m.commitVote(job_id, vote_commitment(job_id, a, right, UNITS, salt))))
        b.advance(b.params.commit_period)
        for a in members:
            reveals.append(b.send_as(a, m.revealVote(job_id, right, UNITS, salt)))
        b.advance(b.params.reveal_period)
        gas["commitVote"] = int(statistics.median(int(r["gasUsed"]) for r in commits))
        gas["revealVote"] = int(statistics.median(int(r["gasUsed"]) for r in reveals))
        gas["resolveDispute"] = int(b.send("relayer", m.resolveDispute(job_id, job.as_tuple()))["gasUsed"])
        gas["committee_members"] = len(members)
        release_provider()
        return gas

    for n in sizes:
        while n_eligible < n:
            b.add_provider(b.model_id, "cpu")
            n_eligible += 1
        steps[str(n)] = one_dispute(f"scale {n}")
        if n == sizes[0]:
            # The sampling itself, with one fixed seed, before and after the junk joins: the same
            # seats must come out for the same gas. (A whole drawCommittee also writes one
            # storage record per distinct member drawn, so its gas moves with the committee a
            # seed happens to draw, not with the providers outside the set.)
            def sample() -> tuple[int, list[str]]:
                fn = h.staking.functions.drawCommittee(b.model_id, GPU, 8, b.params.committee_size, 2,
                                                       b.acc["provider"].address, b.acc["verifier"].address)
                return int(fn.estimate_gas()), list(fn.call())
            before_gas, before_seats = sample()
            before = one_dispute(f"scale {n} before junk")["drawCommittee"]
            for i in range(JUNK):
                if i % 2:
                    b.add_provider(b.model_id, "h100")  # same model, another class
                else:
                    b.add_provider(keccak(text="another model"), "cpu")  # same class, another model
            after_gas, after_seats = sample()
            after = one_dispute(f"scale {n} after junk")["drawCommittee"]
            assert before_seats == after_seats, "the non-eligible providers changed the draw"
            non_eligible = {"eligible": n, "non_eligible_added": JUNK,
                            "sampling_gas_before": before_gas, "sampling_gas_after": after_gas,
                            "draw_gas_before": before, "draw_gas_after": after}
    return {"eligible": sizes, "steps": steps, "non_eligible": non_eligible}


def report(res: dict[str, Any], console: Console) -> None:
    t = Table(title="Hearth gas per step (median; receipt gasUsed)")
    t.add_column("step")
    t.add_column("gas", justify="right")
    for k, v in sorted(res["steps"].items()):
        t.add_row(k, f"{v:,}")
    console.print(t)
    life = Table(title=f"A job's life: post + claim + receipt + finalize (limit {res['limit']:,})")
    life.add_column("case")
    life.add_column("gas", justify="right")
    life.add_column("", justify="left")
    for key in ("per_job_lifecycle_gas", "per_job_lifecycle_with_sig_gas", "per_job_lifecycle_with_sig_and_permit_gas",
                "first_job_lifecycle_gas", "per_job_lifecycle_with_unused_escrow_refund_gas",
                "per_job_lifecycle_with_unused_escrow_first_refund_gas"):
        v = res[key]
        mark = "[green]<= limit[/]" if v <= res["limit"] else "[yellow]above the limit[/]"
        steady = key in ("per_job_lifecycle_gas", "per_job_lifecycle_with_sig_gas")
        life.add_row(key, f"{v:,}", mark if steady else "")
    console.print(life)
    if "dispute_scaling" in res:
        sc = res["dispute_scaling"]
        t = Table(title="Dispute steps against the eligible set's size (devnet committee; receipt gasUsed)")
        t.add_column("eligible", justify="right")
        for col in ("challenge", "drawCommittee", "commitVote", "revealVote", "resolveDispute"):
            t.add_column(col, justify="right")
        for n in sc["eligible"]:
            row = sc["steps"][str(n)]
            t.add_row(str(n), *(f"{row[c]:,}" for c in ("challenge", "drawCommittee", "commitVote", "revealVote",
                                                        "resolveDispute")))
        console.print(t)
        ne = sc["non_eligible"]
        console.print(f"stake-weighted sampling of a committee at {ne['eligible']} eligible, fixed seed: "
                      f"{ne['sampling_gas_before']:,} gas; after {ne['non_eligible_added']} staked non-eligible "
                      f"providers joined: {ne['sampling_gas_after']:,} gas (same seats)")
        console.print(f"whole drawCommittee (different seeds): {ne['draw_gas_before']:,} / "
                      f"{ne['draw_gas_after']:,} gas")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "gas.json")
    ap.add_argument("--jobs", type=int, default=5, help="steady-state jobs per case (the median is reported)")
    ap.add_argument("--scale", type=lambda v: [int(x) for x in v.split(",")] if v else [], default=[10, 100, 1000],
                    help="eligible-set sizes for the dispute steps (comma-separated; empty: skip)")
    args = ap.parse_args()
    logging.basicConfig(level=os.environ.get("HEARTH_LOG_LEVEL", "WARNING"))
    console = Console()
    compiler = find_compiler()
    with console.status("fresh Anvil, deploying and measuring..."):
        res = run(args.jobs, args.scale)
    res = {
        "command": shlex.join(["python", "bench/gas.py", *sys.argv[1:]]),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "solc": compiler.version,
        "solc_binary": "native" if compiler.native else "solcjs",
        "evm_version": EVM_VERSION,
        "optimizer_runs": OPTIMIZER_RUNS,
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        **res,
    }
    report(res, console)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    console.print(f"wrote {args.out}")
    if not res["with_sig_within_limit"]:
        console.print(f"[yellow]the relayed (postJobWithSig) lifecycle is above {LIMIT:,} gas[/]")
    if not res["within_limit"]:
        console.print(f"[red]steady-state lifecycle above {LIMIT:,} gas[/]")
        sys.exit(1)


if __name__ == "__main__":
    main()
