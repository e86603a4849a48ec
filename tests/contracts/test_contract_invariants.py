"""A Hypothesis state machine over random sequences of market and staking actions (the job
path: post, claim, deliver, release an expired claim, finalize, refund, withdraw; staking).
The dispute game has its own adversarial machine (``test_dispute_invariants.py``).

Every rule predicts its outcome from a Python model of the market (the custom error and its
arguments when it must revert, the new job record and every balance change when it must not),
and checks the job's events against the model. After every step the invariants compare the
chain with the model in one batched read:

- the market's payment-token balance == escrow (maxPayment of open jobs) + the sum of
  credited balances, and every credited balance is the model's;
- nothing is paid twice: a finalized or refunded job cannot be settled again (a rule tries,
  with its current and its stale record) and every job's status is the model's;
- stake is conserved per provider: deposited == staked + unbonding + slashed + withdrawn, the
  chain's staked, locked and unbonding are the model's (locked == the collateral of the
  provider's open jobs), membership of the model's eligible set is the model's, and Staking's
  token balance == the sum of staked + unbonding.

Chain time is frozen (see ``Clock``) so boundaries are exact; rules warp onto them. Each
example starts from the same snapshot. ``HEARTH_HYPOTHESIS_EXAMPLES`` sets the number of
examples (default 100: about 2.5 minutes on CI; raise it for a deeper search),
``HEARTH_HYPOTHESIS_SEED`` replays a run (the seed is printed).
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import hypothesis
from contract_kit import GPU, HST, USD, Market, reverts
from eth_abi import decode, encode
from eth_utils import keccak
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from web3.contract.contract import ContractFunction
from web3.types import TxReceipt

from contracts import eip712
from contracts.types import Job, JobRequest, Permit, Receipt, Status

EXAMPLES = int(os.environ.get("HEARTH_HYPOTHESIS_EXAMPLES", "100"))
STEPS = 12
CLIENTS = ("client", "client2")
PROVIDERS = ("provider", "verifier", "verifier2", "cheater", "spare")  # spare starts unregistered
ACCOUNTS = (*CLIENTS, *PROVIDERS, "treasury", "relayer", "deployer")
OPEN = (Status.POSTED, Status.CLAIMED, Status.DELIVERED, Status.CHALLENGED)
SETTLED = (Status.FINALIZED, Status.REFUNDED)
#: Market parameters per example. The first choice of each (None) keeps the devnet's, which
#: Hypothesis tries most; the others stress the edges: no fee or all of it, no penalty or all
#: of the collateral, no collateral, collateral that grows fast with the job, claim timeouts.
PARAM_CHOICES = st.fixed_dictionaries({
    "fee_bps": st.sampled_from([None, 0, 1, 3_333, 10_000]),
    "refund_penalty_bps": st.sampled_from([None, 0, 1, 10_000]),
    "claim_collateral": st.sampled_from([None, 0, 1, 250 * HST]),
    "collateral_per_payment_wei": st.sampled_from([None, 0, 10**14]),
    "claim_timeout": st.sampled_from([None, 1, 5000]),
})
ZERO = "0x" + "00" * 20
PROVIDER_INFO = "(uint96,uint96,uint96,uint40,uint40,bool,string,string,string,uint8)"  # IStaking.ProviderInfo
#: When a rule acts: now, or after time moves to one second before, onto, or one second past the
#: boundary that decides its outcome (a deadline, a window's end). Rules carry their own waiting
#: so that a 12-step example gets deep into a job's life.
WHEN = st.sampled_from(["now", "before", "at", "after", "after"])


@dataclass
class StakeBook:
    registered: bool
    serving: bool
    staked: int = 0
    locked: int = 0
    unbonding: int = 0
    ready_at: int = 0
    jailed_until: int = 0
    deposited: int = 0
    slashed: int = 0
    withdrawn: int = 0
    strikes: int = 0
    #: whether it is in the model's eligible set (re-evaluated on its own changes and refresh)
    eligible: bool = False


@dataclass
class ModelJob:
    job_id: int
    client: str
    record: Job
    truth: bytes  # the output an honest provider would deliver
    stale: list[Job] = field(default_factory=list)  # every earlier record
    provider: str | None = None

    @property
    def status(self) -> Status:
        return self.record.status

    def __repr__(self) -> str:  # what a failing example prints for a drawn job
        return f"job {self.job_id} ({self.status.label}, provider {self.provider})"


def call(signature: str, arg: str | int) -> str:
    """Calldata of a one-argument call (web3's encode_abi is too slow to run per step)."""
    kind = "address" if isinstance(arg, str) else "uint256"
    return "0x" + (keccak(text=signature)[:4] + encode([kind], [arg])).hex()


def setup_accounts(m: Market) -> None:
    """Approvals for everyone, and HST and hUSD for `spare`: done once, before the snapshot."""
    m.send("deployer", m.h.hst.functions.mint(m.addr("spare"), 1_000 * HST))
    m.send("deployer", m.h.usd.functions.mint(m.addr("spare"), 100 * USD))
    for role in (*CLIENTS, *PROVIDERS):
        m.approve(role)
    for role in PROVIDERS:
        m.send(role, m.h.hst.functions.approve(m.staking.address, 2**256 - 1))


class MarketMachine(RuleBasedStateMachine):
    def __init__(self, m: Market, base: list[str], outcomes: Counter[str]) -> None:
        super().__init__()
        self.m = m
        self.outcomes = outcomes
        m.clock.revert(base[0])
        base[0] = m.clock.snapshot()
        for s in m.h._senders.values():
            s.resync()
        self.fn = m.market.functions
        self.addr = {r: m.addr(r) for r in ACCOUNTS}
        self.role_of = {a: r for r, a in self.addr.items()}
        self.now = m.clock.now()
        self.params = m.params
        self.jobs: dict[int, ModelJob] = {}
        self.credits = dict.fromkeys(ACCOUNTS, 0)
        self.stakes = {r: StakeBook(registered=r != "spare", serving=r != "spare", eligible=r != "spare")
                       for r in PROVIDERS}
        self.provider_list = [r for r in PROVIDERS if r != "spare"]
        self.nonces = dict.fromkeys(CLIENTS, 0)
        usd, hst, mk, sk = m.h.usd.address, m.h.hst.address, m.market.address, m.staking.address
        self.book_calls = [(usd, call("balanceOf(address)", mk)), (hst, call("balanceOf(address)", sk))]
        self.book_calls += [(mk, call("balanceOf(address)", self.addr[r])) for r in ACCOUNTS]
        self.book_calls += [(hst, call("balanceOf(address)", self.addr[r])) for r in ACCOUNTS]
        self.book_calls += [(sk, call("getProvider(address)", self.addr[r])) for r in PROVIDERS]
        reads = iter(self._read([(hst, call("balanceOf(address)", self.addr[r])) for r in ACCOUNTS]
                                + [(sk, call("getProvider(address)", self.addr[r])) for r in self.provider_list]))
        self.hst_wallet = {r: decode(["uint256"], next(reads))[0] for r in ACCOUNTS}
        for r in self.provider_list:  # what bring_up staked: the deposits this example starts from
            self.stakes[r].staked = self.stakes[r].deposited = decode([PROVIDER_INFO], next(reads))[0][0]

    # ------------------------------------------------------------ helpers

    def act(self, role: str, fn: ContractFunction, error: tuple[Any, ...] | None) -> TxReceipt | None:
        """Sends ``fn``; asserts it reverts with ``error`` (name, *args) when one is predicted."""
        self.outcomes[f"{fn.fn_name}: {error[0] if error else 'ok'}"] += 1
        if error is None:
            return self.m.send(role, fn)
        with reverts(*error):
            self.m.send(role, fn)
        return None

    def jobs_in(self, *statuses: Status) -> list[ModelJob]:
        return [j for j in self.jobs.values() if j.status in statuses]

    def pick(self, data: st.DataObject, jobs: list[ModelJob]) -> ModelJob:
        return data.draw(st.sampled_from(jobs), label="job")

    def update(self, j: ModelJob, new: Job, rcpt: TxReceipt) -> None:
        """Moves the job to ``new`` and checks that its events say the same."""
        assert self.m.fold(j.job_id, j.record, rcpt) == new
        j.stale.append(j.record)
        j.record = new

    def active(self, role: str) -> bool:
        p = self.stakes[role]
        return p.registered and p.staked >= self.m.min_stake and self.now >= p.jailed_until

    def sync(self, role: str) -> None:
        """Staking re-evaluates membership of the eligible set on the provider's own changes."""
        p = self.stakes[role]
        p.eligible = self.active(role) and p.serving

    def free(self, role: str) -> int:
        p = self.stakes[role]
        return max(p.staked - p.locked, 0)

    def slash(self, role: str, unlock: int, amount: int, recipient: str, rcpt: TxReceipt) -> None:
        """Staking.slash: unlock, then take from free stake, then from unbonding; a strike."""
        self.outcomes["(slash as a refund or release penalty)"] += 1
        p = self.stakes[role]
        p.locked -= unlock
        from_staked = min(amount, p.staked - p.locked)
        from_unbonding = min(amount - from_staked, p.unbonding)
        p.staked -= from_staked
        p.unbonding -= from_unbonding
        p.slashed += from_staked + from_unbonding
        self.hst_wallet[recipient] += from_staked + from_unbonding
        if amount:
            p.strikes += 1
        if p.strikes >= 3:
            self.outcomes["(a third strike jails)"] += 1
            p.jailed_until, p.strikes = self.now + self.m.jail_period, 0
        self.sync(role)
        assert self.m.event(rcpt, "Slashed") == {
            "provider": self.addr[role], "recipient": self.addr[recipient], "amount": from_staked + from_unbonding,
            "fromStaked": from_staked, "jailedUntil": p.jailed_until, "strikes": p.strikes,
        }

    def warp(self, timestamp: int) -> None:
        if timestamp > self.now:
            self.m.clock.warp(timestamp)
            self.now = timestamp

    def wait(self, when: str, boundary: int) -> None:
        """Time moves to ``boundary`` - 1, ``boundary`` or ``boundary`` + 1 (never back)."""
        if when != "now":
            self.warp(boundary + {"before": -1, "at": 0, "after": 1}[when])

    @staticmethod
    def job_status_call(job_id: int) -> str:
        return call("jobStatus(uint256)", job_id)

    def _read(self, calls: list[tuple[str, str]]) -> list[bytes]:
        """eth_calls in one JSON-RPC batch."""
        resps = self.m.w3.provider.make_batch_request(  # type: ignore[attr-defined]
            [("eth_call", [{"to": to, "data": data}, "latest"]) for to, data in calls])
        assert isinstance(resps, list), resps
        return [bytes.fromhex(r["result"][2:]) for r in resps]

    # ------------------------------------------------------------ jobs

    @initialize(jobs=st.lists(st.tuples(
        st.sampled_from(CLIENTS), st.integers(1, 5 * USD), st.sampled_from([300, 700, 3600]), st.booleans(),
        st.sampled_from(["posted", "claimed", "delivered"]), st.sampled_from([0, 0, 1, 2, 3]),
        st.integers(1, 6 * USD), st.booleans(),
    ), min_size=1, max_size=4), params=PARAM_CHOICES,
        unbond=st.lists(st.tuples(st.integers(0, 3), st.sampled_from(["half", "all"])), max_size=2))
    def initial_jobs(self, jobs: list[tuple[str, int, int, bool, str, int, int, bool]],
                     params: dict[str, int | None], unbond: list[tuple[int, str]]) -> None:
        """The example's market parameters (proposed, then applied after the delay), and a few
        jobs to start from: posted, claimed or delivered, through the same rules and checks as
        later steps. Then some providers of these jobs unbond half or all of their free stake,
        so that slashes meet stake that is unbonding and collateral that is all the provider
        has left."""
        changes = {k: v for k, v in params.items() if v is not None}
        if changes:
            self.params = replace(self.params, **changes)
            self.m.send("deployer", self.fn.proposeParams(self.params.as_tuple()))
            self.warp(self.now + int(self.fn.PARAMS_DELAY().call()))
            self.m.send("relayer", self.fn.applyParams(self.params.as_tuple()))
        for client, max_payment, ttl, relayed, stage, provider, units, honest in jobs:
            self.post(client, max_payment, ttl, relayed)
            j = self.jobs[len(self.jobs)]
            if stage != "posted":
                self.claim_job(j, PROVIDERS[provider])
            if stage == "delivered" and j.status == Status.CLAIMED:
                self.deliver_job(j, units, honest, "self")
        for index, share in unbond:
            holder = self.jobs[index % len(jobs) + 1].provider
            if holder:
                self.request_unbond(holder, share)

    @precondition(lambda self: len(self.jobs_in(*OPEN)) < 6)
    @rule(client=st.sampled_from(CLIENTS), max_payment=st.integers(1, 5 * USD),
          ttl=st.sampled_from([1, 300, 700, 3600]), relayed=st.booleans())
    def post(self, client: str, max_payment: int, ttl: int, relayed: bool) -> None:
        deadline = self.now + ttl
        input_hash = keccak(text=f"input {len(self.jobs)}")
        self.outcomes[f"{'postJobWithSig' if relayed else 'postJob'}: ok"] += 1
        if relayed:
            req = JobRequest(self.addr[client], self.m.model_id, input_hash, max_payment, deadline, self.nonces[client])
            sig = eip712.sign_job_request(self.m.key(client), req, self.m.h.chain_id, self.m.market.address)
            rcpt = self.m.send("relayer", self.fn.postJobWithSig(req.as_tuple(), sig, Permit().as_tuple()))
            self.nonces[client] += 1
        else:
            rcpt = self.m.send(client, self.fn.postJob(self.m.model_id, input_hash, max_payment, deadline))
        job_id = len(self.jobs) + 1
        p = self.params
        record = Job(self.addr[client], ZERO, self.m.model_id, input_hash, max_payment, self.m.price, 0, 0,
                     deadline, p.challenge_window, Status.POSTED, b"\x00" * 32, treasury=p.treasury,
                     fee_bps=p.fee_bps)
        assert self.m.fold(job_id, None, rcpt) == record
        assert self.m.event(rcpt, "JobPosted")["relayer"] == self.addr["relayer" if relayed else client]
        self.jobs[job_id] = ModelJob(job_id, client, record, truth=keccak(b"output:" + input_hash))

    @precondition(lambda self: self.jobs_in(Status.POSTED))
    @rule(data=st.data(), who=st.sampled_from(PROVIDERS), when=WHEN)
    def claim(self, data: st.DataObject, who: str, when: str) -> None:
        j = self.pick(data, self.jobs_in(Status.POSTED))
        self.wait(when, j.record.deadline)
        self.claim_job(j, who)

    def claim_job(self, j: ModelJob, who: str) -> None:
        a = self.addr[who]
        error: tuple[Any, ...] | None = None
        collateral = self.params.collateral_for(j.record.max_payment)
        if not self.now < j.record.deadline:
            error = ("DeadlinePassed", j.record.deadline)
        elif not self.stakes[who].serving:
            error = ("ModelNotServed", a, self.m.model_id)
        elif not self.stakes[who].eligible:
            error = ("ProviderNotActive", a)
        elif self.free(who) < collateral:
            error = ("InsufficientFreeStake", a, collateral, self.free(who))
        rcpt = self.act(who, self.fn.claimJob(j.job_id, j.record.as_tuple()), error)
        if rcpt:
            expiry = min(self.now + self.params.claim_timeout, j.record.deadline)
            self.update(j, j.record.with_(provider=a, collateral=collateral, claim_expiry=expiry,
                                          status=Status.CLAIMED), rcpt)
            j.provider = who
            self.stakes[who].locked += collateral

    @precondition(lambda self: self.jobs_in(Status.CLAIMED))
    @rule(data=st.data(), when=WHEN, caller=st.sampled_from(["relayer", "client", "verifier"]))
    def release(self, data: st.DataObject, when: str, caller: str) -> None:
        """Anyone releases a claim not delivered by its expiry: a penalty to the client, the job open again."""
        j = self.pick(data, self.jobs_in(Status.CLAIMED))
        self.wait(when, j.record.claim_expiry)
        r = j.record
        error = None if self.now > r.claim_expiry else ("ClaimNotExpired", j.job_id, r.claim_expiry)
        rcpt = self.act(caller, self.fn.releaseClaim(j.job_id, r.as_tuple()), error)
        if rcpt is None:
            return
        assert j.provider is not None
        penalty = r.collateral * self.params.refund_penalty_bps // 10_000
        assert self.m.event(rcpt, "ClaimReleased") == {"jobId": j.job_id, "provider": r.provider, "penalty": penalty}
        provider = j.provider
        self.update(j, r.with_(provider=ZERO, collateral=0, claim_expiry=0, status=Status.POSTED), rcpt)
        j.provider = None
        self.slash(provider, r.collateral, penalty, j.client, rcpt)

    @precondition(lambda self: self.jobs_in(Status.CLAIMED))
    @rule(data=st.data(), units=st.integers(0, 6 * USD), honest=st.booleans(),
          relayer=st.sampled_from(["self", "relayer", "cheater"]), when=WHEN)
    def deliver(self, data: st.DataObject, units: int, honest: bool, relayer: str, when: str) -> None:
        j = self.pick(data, self.jobs_in(Status.CLAIMED))
        self.wait(when, j.record.claim_expiry)
        self.deliver_job(j, units, honest, relayer)

    def deliver_job(self, j: ModelJob, units: int, honest: bool, relayer: str) -> None:
        assert j.provider is not None
        output = j.truth if honest else keccak(b"wrong:" + j.truth)
        rec = Receipt(j.job_id, output, units, self.m.model_id, self.m.runtime_hash, GPU)
        sig = eip712.sign_receipt(self.m.key(j.provider), rec, self.m.h.chain_id, self.m.market.address)
        error: tuple[Any, ...] | None = None
        if not self.now <= j.record.claim_expiry:
            error = ("ClaimExpired", j.job_id, j.record.claim_expiry)
        elif units == 0:
            error = ("ZeroUnits", j.job_id)
        sender = j.provider if relayer == "self" else relayer
        rcpt = self.act(sender, self.fn.submitReceipt(j.record.as_tuple(), rec.as_tuple(), sig), error)
        if rcpt:
            payment = self.m.due(units, j.record.max_payment)
            self.update(j, j.record.with_(payment=payment, output_hash=output, status=Status.DELIVERED,
                                          units=units, gpu_class=GPU,
                                          challenge_end=self.now + j.record.challenge_end), rcpt)

    @precondition(lambda self: self.jobs_in(Status.DELIVERED))
    @rule(data=st.data(), when=WHEN)
    def finalize(self, data: st.DataObject, when: str) -> None:
        j = self.pick(data, self.jobs_in(Status.DELIVERED))
        self.wait(when, j.record.challenge_end)
        r = j.record
        error = None if self.now >= r.challenge_end else ("ChallengeWindowOpen", j.job_id, r.challenge_end)
        rcpt = self.act("relayer", self.fn.finalize(j.job_id, r.as_tuple()), error)
        if rcpt is None:
            return
        assert j.provider is not None
        fee = r.payment * r.fee_bps // 10_000  # the fee of the job's posting
        self.update(j, r.with_(status=Status.FINALIZED), rcpt)
        self.credits[j.provider] += r.payment - fee
        self.credits[self.role_of[r.treasury]] += fee
        self.credits[j.client] += r.max_payment - r.payment
        self.stakes[j.provider].locked -= r.collateral
        assert self.m.event(rcpt, "JobFinalized") == {
            "jobId": j.job_id, "provider": r.provider, "client": r.client, "providerAmount": r.payment - fee,
            "fee": fee, "clientRefund": r.max_payment - r.payment, "treasury": r.treasury,
        }

    @precondition(lambda self: self.jobs_in(Status.POSTED, Status.CLAIMED))
    @rule(data=st.data(), when=WHEN)
    def refund(self, data: st.DataObject, when: str) -> None:
        j = self.pick(data, self.jobs_in(Status.POSTED, Status.CLAIMED))
        self.wait(when, j.record.deadline)
        r = j.record
        error = None if self.now > r.deadline else ("DeadlineNotPassed", j.job_id, r.deadline)
        rcpt = self.act("relayer", self.fn.refund(j.job_id, r.as_tuple()), error)
        if rcpt is None:
            return
        claimed = r.status == Status.CLAIMED
        penalty = r.collateral * self.params.refund_penalty_bps // 10_000
        self.update(j, r.with_(status=Status.REFUNDED), rcpt)
        self.credits[j.client] += r.max_payment
        assert self.m.event(rcpt, "JobRefunded") == {
            "jobId": j.job_id, "client": r.client, "amount": r.max_payment, "penalty": penalty,
        }
        if claimed:
            assert j.provider is not None
            self.slash(j.provider, r.collateral, penalty, j.client, rcpt)
        else:
            assert self.m.events(rcpt, "Slashed") == []

    @precondition(lambda self: self.jobs_in(*SETTLED))
    @rule(data=st.data(), call=st.sampled_from(["finalize", "refund"]), stale=st.booleans())
    def settle_again(self, data: st.DataObject, call: str, stale: bool) -> None:
        """Nothing is paid twice: a settled job cannot be finalized or refunded, whether the
        caller passes its current record or any record it had before."""
        j = self.pick(data, self.jobs_in(*SETTLED))
        record = data.draw(st.sampled_from(j.stale), label="stale record") if stale else j.record
        if call == "finalize":
            if j.status == Status.FINALIZED:
                error: tuple[Any, ...] = ("WrongStatus", j.job_id, Status.FINALIZED)
            elif record == j.record:
                error = ("WrongStatus", j.job_id, Status.REFUNDED)
            else:
                error = ("JobMismatch", j.job_id)
            self.act("relayer", self.fn.finalize(j.job_id, record.as_tuple()), error)
            return
        if record.status not in (Status.POSTED, Status.CLAIMED):
            error = ("WrongStatus", j.job_id, record.status)
        elif j.status == Status.FINALIZED:
            error = ("WrongStatus", j.job_id, Status.FINALIZED)
        else:
            error = ("JobMismatch", j.job_id)
        self.act("relayer", self.fn.refund(j.job_id, record.as_tuple()), error)

    @rule(data=st.data(), anyone=st.sampled_from([False, False, True]))
    def withdraw(self, data: st.DataObject, anyone: bool) -> None:
        """withdraw by an account with a credit, or by anyone."""
        holders = [r for r in ACCOUNTS if self.credits[r]]
        who = data.draw(st.sampled_from(ACCOUNTS if anyone or not holders else holders), label="who")
        amount = self.credits[who]
        error = None if amount else ("NothingToWithdraw", self.addr[who])
        rcpt = self.act(who, self.fn.withdraw(self.addr[who]), error)
        if rcpt:
            assert self.m.event(rcpt, "Withdrawn") == {
                "account": self.addr[who], "to": self.addr[who], "amount": amount}
            self.credits[who] = 0

    # ------------------------------------------------------------ staking

    @rule(who=st.sampled_from(PROVIDERS),
          op=st.sampled_from(["stake", "stake", "unbond", "unbond", "withdraw", "register", "serve", "refresh"]),
          amount=st.sampled_from([0, 1, 10 * HST, 90 * HST, 400 * HST]),
          share=st.sampled_from(["zero", "half", "all", "all+1"]), flag=st.booleans(), when=WHEN)
    def staking(self, who: str, op: str, amount: int, share: str, flag: bool, when: str) -> None:
        """stake, requestUnbond, withdraw (once unbonded), register or setServing by a provider
        (or `spare`)."""
        if op == "stake":
            self.stake(who, amount)
        elif op == "unbond":
            self.request_unbond(who, share)
        elif op == "withdraw":
            if self.stakes[who].unbonding:
                self.wait(when, self.stakes[who].ready_at)
            self.withdraw_stake(who)
        elif op == "register":
            self.register(who, amount)
        elif op == "refresh":
            self.act("relayer", self.m.staking.functions.refresh(self.addr[who]), None)
            self.sync(who)
        else:
            self.set_serving(who, flag)

    def stake(self, who: str, amount: int) -> None:
        p = self.stakes[who]
        error: tuple[Any, ...] | None = None
        if not p.registered:
            error = ("NotRegistered", self.addr[who])
        elif amount == 0:
            error = ("ZeroAmount",)
        elif amount > self.hst_wallet[who]:
            error = ("ERC20InsufficientBalance", self.addr[who], self.hst_wallet[who], amount)
        rcpt = self.act(who, self.m.staking.functions.stake(amount), error)
        if rcpt:
            p.staked += amount
            p.deposited += amount
            self.hst_wallet[who] -= amount
            self.sync(who)
            assert self.m.event(rcpt, "Staked") == {"provider": self.addr[who], "amount": amount, "total": p.staked}

    def register(self, who: str, amount: int) -> None:
        p = self.stakes[who]
        error: tuple[Any, ...] | None = None
        if p.registered:
            error = ("AlreadyRegistered", self.addr[who])
        elif amount < self.m.min_stake:
            error = ("StakeBelowMinimum", amount, self.m.min_stake)
        if self.act(who, self.m.staking.functions.register("http://x", "local", "cpu", amount), error):
            p.registered = True
            p.staked += amount
            p.deposited += amount
            self.hst_wallet[who] -= amount
            self.provider_list.append(who)
            self.sync(who)

    def set_serving(self, who: str, serving: bool) -> None:
        p = self.stakes[who]
        error = None if p.registered else ("NotRegistered", self.addr[who])
        if self.act(who, self.m.staking.functions.setServing(self.m.model_id, serving), error):
            p.serving = serving
            self.sync(who)

    def request_unbond(self, who: str, share: str) -> None:
        p, free = self.stakes[who], self.free(who)
        amount = {"zero": 0, "half": free // 2, "all": free, "all+1": free + 1}[share]
        error: tuple[Any, ...] | None = None
        if amount == 0:
            error = ("ZeroAmount",)
        elif amount > free:
            error = ("InsufficientFreeStake", self.addr[who], amount, free)
        rcpt = self.act(who, self.m.staking.functions.requestUnbond(amount), error)
        if rcpt:
            p.staked -= amount
            p.unbonding += amount
            p.ready_at = self.now + self.m.unbonding_period
            self.sync(who)
            assert self.m.event(rcpt, "UnbondRequested") == {
                "provider": self.addr[who], "amount": amount, "unbonding": p.unbonding, "readyAt": p.ready_at,
            }

    def withdraw_stake(self, who: str) -> None:
        p = self.stakes[who]
        error: tuple[Any, ...] | None = None
        if p.unbonding == 0:
            error = ("NothingUnbonding", self.addr[who])
        elif self.now < p.ready_at:
            error = ("UnbondingNotReady", self.addr[who], p.ready_at)
        rcpt = self.act(who, self.m.staking.functions.withdraw(), error)
        if rcpt:
            assert self.m.event(rcpt, "StakeWithdrawn") == {"provider": self.addr[who], "amount": p.unbonding}
            p.withdrawn += p.unbonding
            self.hst_wallet[who] += p.unbonding
            p.unbonding = 0

    # ------------------------------------------------------------ time


    def boundaries(self) -> list[int]:
        out = []
        for j in self.jobs.values():
            if j.status in OPEN:
                out += [j.record.deadline, j.record.challenge_end, j.record.claim_expiry]
        for p in self.stakes.values():
            out += [p.ready_at, p.jailed_until]
        return sorted({t for t in out if t > self.now})

    @rule(data=st.data(), to_boundary=st.booleans(), offset=st.sampled_from([-1, 0, 1]),
          seconds=st.sampled_from([1, 300, 600, 3600, -1]))
    def time_passes(self, data: st.DataObject, to_boundary: bool, offset: int, seconds: int) -> None:
        """Time moves on: by a period, or exactly onto (or one second either side of) a
        deadline, window end, unbonding or jail end."""
        boundaries = self.boundaries()
        if to_boundary and boundaries:
            self.warp(data.draw(st.sampled_from(boundaries), label="boundary") + offset)
        else:
            self.warp(self.now + (seconds if seconds > 0 else self.m.jail_period))

    # ------------------------------------------------------------ invariants

    @invariant()
    def books_balance(self) -> None:
        out = iter(self._read(self.book_calls + [(self.m.market.address, self.job_status_call(i)) for i in self.jobs]))
        uint: Callable[[bytes], int] = lambda raw: decode(["uint256"], raw)[0]  # noqa: E731
        market_balance, staking_balance = uint(next(out)), uint(next(out))
        credits = {r: uint(next(out)) for r in ACCOUNTS}
        wallets = {r: uint(next(out)) for r in ACCOUNTS}
        info = {r: decode([PROVIDER_INFO], next(out))[0] for r in PROVIDERS}
        statuses = {i: Status(uint(next(out))) for i in self.jobs}

        escrow = sum(j.record.max_payment for j in self.jobs_in(*OPEN))
        assert credits == self.credits
        assert market_balance == escrow + sum(self.credits.values())
        assert statuses == {i: j.status for i, j in self.jobs.items()}
        assert wallets == self.hst_wallet
        total = 0
        for r, p in self.stakes.items():
            staked, locked, unbonding = info[r][0], info[r][1], info[r][2]
            assert (staked, locked, unbonding) == (p.staked, p.locked, p.unbonding), r
            assert p.deposited == staked + unbonding + p.slashed + p.withdrawn, r
            assert p.locked == sum(j.record.collateral for j in self.jobs_in(Status.CLAIMED, Status.DELIVERED,
                                                                             Status.CHALLENGED) if j.provider == r)
            assert info[r][9] == p.strikes, r
            assert self.m.staking.functions.isEligible(self.addr[r], self.m.model_id).call() == p.eligible, r
            total += staked + unbonding
        assert staking_balance == total


def test_market_and_staking_invariants_hold_over_random_action_sequences(market: Market) -> None:
    seed = int(os.environ.get("HEARTH_HYPOTHESIS_SEED") or random.randrange(2**32))
    print(f"state machine: {EXAMPLES} examples of up to {STEPS} steps, seed {seed} "
          f"(replay with HEARTH_HYPOTHESIS_SEED={seed})")
    setup_accounts(market)
    base = [market.clock.snapshot()]
    outcomes: Counter[str] = Counter()
    examples = 0

    @hypothesis.seed(seed)
    def machine() -> MarketMachine:
        nonlocal examples
        examples += 1
        return MarketMachine(market, base, outcomes)

    started = time.monotonic()
    run_state_machine_as_test(machine, settings=settings(  # type: ignore[arg-type]  # a factory works too
        max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None, database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    ))
    print(f"{examples} examples, {sum(outcomes.values())} transactions in {time.monotonic() - started:.0f}s; "
          "outcomes by call:")
    for name, count in sorted(outcomes.items()):
        print(f"  {name:<45} {count}")
