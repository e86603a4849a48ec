"""A Hypothesis state machine over batched settlement: deposits, allocations, thaws, signer
changes, receipts aggregated into vouchers, collections, batch commits and leaf challenges.

Every rule predicts its outcome from a Python model (the custom error when it must revert, every
amount when it must not). After every step the invariants compare the chain with the model:

- the escrow's token balance == unallocated deposits + lane balances + provider bonds, and each
  of them is the model's;
- no voucher pays twice and nothing is collected past what was signed: a lane's ``collected``
  never exceeds the highest cumulative value signed for it, and equals what the provider was paid;
- nothing is collected past a lane: allocated == balance + collected + thawed-and-withdrawn;
- a thawed withdrawal never takes money a valid voucher had already claimed (checked in the
  rule: it pays min(thawing, what is left after collections)).

``HEARTH_SETTLEMENT_EXAMPLES`` sets the number of examples (default 12, about 30 s),
``HEARTH_HYPOTHESIS_SEED`` replays a run.
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import hypothesis
from contract_kit import Market, reverts
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test
from settlement_kit import BPS, USD, Settle, signer_address, signer_key
from web3.contract.contract import ContractFunction
from web3.types import TxReceipt

from contracts.settlement import Batch, SignedVoucher, Voucher, WorkBatch, sign_voucher

EXAMPLES = int(os.environ.get("HEARTH_SETTLEMENT_EXAMPLES", "12"))
STEPS = 14
PAYERS = ("client", "client2")
PROVIDERS = ("provider", "verifier")
GATEWAY = "gateway"  # client's off-chain signer
AMOUNTS = st.integers(0, 6).map(lambda k: k * USD // 2)


@dataclass
class LaneBook:
    allocated: int = 0
    balance: int = 0
    collected: int = 0
    withdrawn: int = 0
    thawing: int = 0
    thaw_end: int = 0
    signed: int = 0  # highest cumulative value signed so far


@dataclass
class Signed:
    voucher: SignedVoucher
    by_gateway: bool


@dataclass
class BatchBook:
    batch_id: int
    batch: Batch
    wb: WorkBatch
    cases: dict[int, str]


class SettlementMachine(RuleBasedStateMachine):
    def __init__(self, settle: Settle, base: list[str], outcomes: Counter[str]) -> None:
        super().__init__()
        m = settle.m
        m.clock.revert(base[0])
        base[0] = m.clock.snapshot()
        for s in m.h._senders.values():
            s.resync()
        self.settle, self.m = settle, m
        self.e = settle.escrow.functions
        self.b = settle.batches.functions
        self.outcomes = outcomes
        self.now = m.clock.now()
        self.deposits = dict.fromkeys(PAYERS, 0)
        self.lanes = {(p, q): LaneBook() for p in PAYERS for q in PROVIDERS}
        self.bonds = dict.fromkeys(PROVIDERS, 0)
        self.gateway_expiry = 0
        self.gateway_thaw_end = 0
        self.vouchers: list[Signed] = []
        self.batches: list[BatchBook] = []
        self.jailed_until = dict.fromkeys(PROVIDERS, 0)
        self.requests = 0

    # ------------------------------------------------------------ helpers

    def act(self, role: str, fn: ContractFunction, error: tuple[Any, ...] | None) -> TxReceipt | None:
        self.outcomes[f"{fn.fn_name}: {error[0] if error else 'ok'}"] += 1
        if error is None:
            return self.m.send(role, fn)
        with reverts(*error):
            self.m.send(role, fn)
        return None

    def warp(self, t: int) -> None:
        if t > self.now:
            self.m.clock.warp(t)
            self.now = t

    def a(self, role: str) -> str:
        return self.m.addr(role)

    def gateway_valid(self) -> bool:
        return self.now < self.gateway_expiry

    # ------------------------------------------------------------ money

    @initialize(lanes=st.lists(st.integers(0, 8).map(lambda k: k * USD // 2), min_size=4, max_size=4),
                extra=st.integers(0, 4).map(lambda k: k * USD), gateway=st.booleans(),
                bonds=st.lists(st.integers(0, 3).map(lambda k: k * USD), min_size=2, max_size=2))
    def fund(self, lanes: list[int], extra: int, gateway: bool, bonds: list[int]) -> None:
        """Deposits, lanes (one call for both providers), bonds and the client's gateway signer."""
        for i, payer in enumerate(PAYERS):
            amounts = dict(zip(PROVIDERS, lanes[2 * i:2 * i + 2], strict=True))
            total = sum(amounts.values()) + extra
            if total == 0:
                continue
            self.m.send(payer, self.m.h.usd.functions.approve(self.settle.escrow.address, total))
            self.act(payer, self.e.deposit(total), None)
            self.deposits[payer] += total
            funded = {q: a for q, a in amounts.items() if a}
            if funded:
                fn = self.e.allocate(self.a(payer), [self.a(q) for q in funded], list(funded.values()))
                self.act(payer, fn, None)
                for q, a in funded.items():
                    self.deposits[payer] -= a
                    self.lanes[(payer, q)].allocated += a
                    self.lanes[(payer, q)].balance += a
        for q, amount in zip(PROVIDERS, bonds, strict=True):
            if amount:
                self.bond(q, amount)
        if gateway:
            self.authorize_gateway(86400)

    @rule(payer=st.sampled_from(PAYERS), amount=AMOUNTS)
    def deposit(self, payer: str, amount: int) -> None:
        self.m.send(payer, self.m.h.usd.functions.approve(self.settle.escrow.address, amount))
        self.act(payer, self.e.deposit(amount), None if amount else ("ZeroAmount",))
        self.deposits[payer] += amount

    @rule(payer=st.sampled_from(PAYERS), provider=st.sampled_from(PROVIDERS), amount=AMOUNTS,
          by_gateway=st.booleans())
    def allocate(self, payer: str, provider: str, amount: int, by_gateway: bool) -> None:
        caller = "relayer" if by_gateway else payer
        err: tuple[Any, ...] | None = None
        if by_gateway and not (payer == "client" and self.relayer_allocates and self.now < self.relayer_expiry):
            err = ("NotAllocator", self.a(payer), self.a("relayer"))
        elif amount == 0:
            err = ("ZeroAmount",)
        elif amount > self.deposits[payer]:
            err = ("InsufficientDeposit", self.a(payer), amount, self.deposits[payer])
        self.act(caller, self.e.allocate(self.a(payer), [self.a(provider)], [amount]), err)
        if err is None:
            self.deposits[payer] -= amount
            lane = self.lanes[(payer, provider)]
            lane.allocated += amount
            lane.balance += amount

    relayer_allocates = False
    relayer_expiry = 0

    @rule(expiry_in=st.sampled_from([600, 86400]))
    def authorize_relayer_to_allocate(self, expiry_in: int) -> None:
        from contracts.settlement import sign_signer_authorization

        expiry = self.now + expiry_in
        proof = sign_signer_authorization(self.m.key("relayer"), self.a("client"), expiry, self.settle.chain_id,
                                          self.settle.escrow.address)
        self.act("client", self.e.authorizeSigner(self.a("relayer"), expiry, True, proof), None)
        self.relayer_allocates, self.relayer_expiry = True, expiry

    @rule(payer=st.sampled_from(PAYERS), amount=AMOUNTS)
    def withdraw_deposit(self, payer: str, amount: int) -> None:
        err: tuple[Any, ...] | None = None
        if amount == 0:
            err = ("ZeroAmount",)
        elif amount > self.deposits[payer]:
            err = ("InsufficientDeposit", self.a(payer), amount, self.deposits[payer])
        self.act(payer, self.e.withdrawDeposit(amount), err)
        if err is None:
            self.deposits[payer] -= amount

    @rule(payer=st.sampled_from(PAYERS), provider=st.sampled_from(PROVIDERS), amount=AMOUNTS)
    def thaw(self, payer: str, provider: str, amount: int) -> None:
        lane = self.lanes[(payer, provider)]
        err: tuple[Any, ...] | None = None
        if amount == 0:
            err = ("ZeroAmount",)
        elif amount > lane.balance:
            err = ("InsufficientLane", self.a(payer), self.a(provider), amount, lane.balance)
        self.act(payer, self.e.thaw(self.a(provider), amount), err)
        if err is None:
            lane.thawing, lane.thaw_end = amount, self.now + self.settle.thaw_delay

    @rule(payer=st.sampled_from(PAYERS), provider=st.sampled_from(PROVIDERS))
    def cancel_thaw(self, payer: str, provider: str) -> None:
        lane = self.lanes[(payer, provider)]
        err = None if lane.thaw_end else ("NothingThawing", self.a(payer), self.a(provider))
        self.act(payer, self.e.cancelThaw(self.a(provider)), err)
        lane.thawing = lane.thaw_end = 0

    @rule(payer=st.sampled_from(PAYERS), provider=st.sampled_from(PROVIDERS), wait=st.booleans())
    def withdraw_thawed(self, payer: str, provider: str, wait: bool) -> None:
        lane = self.lanes[(payer, provider)]
        if wait and lane.thaw_end:
            self.warp(lane.thaw_end)
        err: tuple[Any, ...] | None = None
        if not lane.thaw_end:
            err = ("NothingThawing", self.a(payer), self.a(provider))
        elif self.now < lane.thaw_end:
            err = ("ThawNotReady", lane.thaw_end)
        rcpt = self.act(payer, self.e.withdrawThawed(self.a(provider)), err)
        if rcpt is not None:
            # Only what collections left: never money a valid voucher already claimed.
            amount = min(lane.thawing, lane.balance)
            assert self.m.event(rcpt, "ThawWithdrawn")["amount"] == amount
            lane.balance -= amount
            lane.withdrawn += amount
            lane.thawing = lane.thaw_end = 0

    @rule(provider=st.sampled_from(PROVIDERS), amount=st.integers(1, 4).map(lambda k: k * USD))
    def bond(self, provider: str, amount: int) -> None:
        self.settle.bond(provider, amount)
        self.bonds[provider] += amount

    # ------------------------------------------------------------ signers and vouchers

    @rule(expiry_in=st.sampled_from([300, 86400]))
    def authorize_gateway(self, expiry_in: int) -> None:
        expiry = self.now + expiry_in
        self.outcomes["authorizeSigner: ok"] += 1
        self.settle.authorize("client", GATEWAY, expiry=expiry)
        self.gateway_expiry, self.gateway_thaw_end = expiry, 0

    @rule(revoke=st.booleans())
    def thaw_or_revoke_gateway(self, revoke: bool) -> None:
        gw = signer_address(GATEWAY)
        if not revoke:
            err = None if self.gateway_expiry else ("UnknownSigner", self.a("client"), gw)
            self.act("client", self.e.thawSigner(gw), err)
            if err is None:
                self.gateway_thaw_end = self.now + self.settle.thaw_delay
            return
        if self.gateway_thaw_end:
            self.warp(self.gateway_thaw_end)
        err = None if self.gateway_expiry and self.gateway_thaw_end else ("NothingThawing", self.a("client"), gw)
        self.act("client", self.e.revokeSigner(gw), err)
        if err is None:
            self.gateway_expiry = self.gateway_thaw_end = 0

    @rule(payer=st.sampled_from(PAYERS), provider=st.sampled_from(PROVIDERS),
          values=st.lists(st.integers(1, 3 * USD), min_size=1, max_size=3), by_gateway=st.booleans(),
          collect_now=st.booleans(), replay=st.booleans())
    def sign_receipts_into_a_voucher(self, payer: str, provider: str, values: list[int], by_gateway: bool,
                                     collect_now: bool, replay: bool) -> None:
        """Receipts for requests served; aggregated into the lane's next cumulative voucher."""
        by_gateway = by_gateway and payer == "client"
        lane = self.lanes[(payer, provider)]
        valid_now = not by_gateway or self.gateway_valid()
        cumulative = lane.signed + sum(values)
        v = Voucher(self.a(payer), self.a(provider), cumulative, self.now)
        key = signer_key(GATEWAY) if by_gateway else self.m.key(payer)
        self.vouchers.append(Signed(sign_voucher(key, v, self.settle.chain_id, self.settle.escrow.address),
                                    by_gateway))
        if valid_now:
            lane.signed = cumulative  # the provider serves only on a receipt it can redeem now
        if collect_now:
            picked = [self.vouchers[-1]] + ([self.vouchers[-1]] if replay else [])
            self._collect(provider, picked)

    @rule(data=st.data(), provider=st.sampled_from(PROVIDERS))
    def collect(self, data: st.DataObject, provider: str) -> None:
        if not self.vouchers:
            return
        picked = data.draw(st.lists(st.sampled_from(self.vouchers), min_size=1, max_size=3), label="vouchers")
        self._collect(provider, picked)

    def _collect(self, provider: str, picked: list[Signed]) -> None:
        err: tuple[Any, ...] | None = None
        staged = {k: (lane.balance, lane.collected) for k, lane in self.lanes.items()}
        paid = 0
        for s in picked:
            v = s.voucher.voucher
            payer = "client" if v.payer == self.a("client") else "client2"
            key = (payer, "provider" if v.provider == self.a("provider") else "verifier")
            if v.provider != self.a(provider):
                err = ("NotVoucherProvider", self.a(provider), v.provider)
                break
            if s.by_gateway and not self.gateway_valid():
                err = ("InvalidVoucherSignature", v.payer, v.provider)
                break
            balance, collected = staged[key]
            if v.cumulative_value <= collected:
                err = ("VoucherNotNewer", v.payer, v.provider, v.cumulative_value, collected)
                break
            amount = min(v.cumulative_value - collected, balance)
            staged[key] = (balance - amount, collected + amount)
            paid += amount
        if err is None and paid == 0:
            err = ("NothingCollected",)
        before = self.m.usd(provider)
        fn = self.e.collect([s.voucher.voucher.as_tuple() for s in picked], [s.voucher.signature for s in picked])
        self.act(provider, fn, err)
        if err is None:
            assert self.m.usd(provider) == before + paid
            for k, (balance, collected) in staged.items():
                self.lanes[k].balance, self.lanes[k].collected = balance, collected

    # ------------------------------------------------------------ batches and leaves

    def active(self, provider: str) -> bool:
        return self.now >= self.jailed_until[provider]

    @rule(provider=st.sampled_from(PROVIDERS), n=st.integers(1, 5), payer=st.sampled_from(PAYERS))
    def commit(self, provider: str, n: int, payer: str) -> None:
        receipts = self.settle.work(n, payer=payer, start=self.requests)
        self.requests += n
        if not self.active(provider):
            wb = self.settle.s.work_batch(receipts)
            self.act(provider, self.b.commitBatch(wb.root, wb.count, wb.units, wb.value),
                     ("ProviderNotActive", self.a(provider)))
            return
        self.outcomes["commitBatch: ok"] += 1
        batch_id, batch, wb, _ = self.settle.commit(provider, receipts)
        self.batches.append(BatchBook(batch_id, batch, wb, {}))

    @rule(data=st.data(), fraud=st.booleans(), withhold=st.booleans())
    def challenge_a_leaf(self, data: st.DataObject, fraud: bool, withhold: bool) -> None:
        if not self.batches:
            return
        bb = data.draw(st.sampled_from(self.batches), label="batch")
        index = data.draw(st.integers(0, bb.batch.count), label="index")  # count itself is out of range
        provider = "provider" if bb.batch.provider == self.a("provider") else "verifier"
        challenger = "verifier" if provider == "provider" else "provider"
        p = self.settle.params
        end = bb.batch.committed_at + p.challenge_window
        self.settle.approve_bond(challenger)
        if index >= bb.batch.count:
            err: tuple[Any, ...] | None = ("IndexOutOfRange", bb.batch_id, index, bb.batch.count)
            self.act(challenger, self.b.demandLeaf(bb.batch_id, bb.batch.as_tuple(), index), err)
            return
        if index in bb.cases:
            return
        if self.now >= end:
            self.act(challenger, self.b.demandLeaf(bb.batch_id, bb.batch.as_tuple(), index),
                     ("ChallengeWindowClosed", bb.batch_id, end))
            return
        leaf = bb.wb.receipts[index]
        if withhold:
            self.act(challenger, self.b.demandLeaf(bb.batch_id, bb.batch.as_tuple(), index), None)
            self.warp(self.now + p.reveal_window)
            rcpt = self.act("relayer", self.b.settleWithheldLeaf(bb.batch_id, bb.batch.as_tuple(), index), None)
            refund = 0
        else:
            if not self.active(challenger):
                self.act(challenger, self.b.challengeLeaf(bb.batch_id, bb.batch.as_tuple(), index, leaf.as_tuple(),
                                                          bb.wb.proof(index)), ("NotEligible", self.a(challenger)))
                return
            self.act(challenger, self.b.challengeLeaf(bb.batch_id, bb.batch.as_tuple(), index, leaf.as_tuple(),
                                                      bb.wb.proof(index)), None)
            self.outcomes[f"leaf dispute: {'fraud' if fraud else 'upheld'}"] += 1
            rcpt = self.settle.decide_by_committee(bb.batch_id, bb.batch, index, leaf, fraud, self.warp)
            if not fraud:
                bb.cases[index] = "upheld"
                return
            refund = min(leaf.value + leaf.value * p.penalty_bps // BPS, self.bonds[provider])
        assert rcpt is not None
        assert self.m.event(rcpt, "LeafFraudProven")["refunded"] == refund
        bb.cases[index] = "fraud"
        self.bonds[provider] -= refund
        if refund:
            payer = "client" if leaf.payer == self.a("client") else "client2"
            self.deposits[payer] += refund
        self.jailed_until[provider] = self.now + self.m.jail_period

    @rule(seconds=st.sampled_from([60, 600, 3600, 86400]))
    def time_passes(self, seconds: int) -> None:
        self.warp(self.now + seconds)

    # ------------------------------------------------------------ invariants

    @invariant()
    def books_balance(self) -> None:
        e = self.settle.escrow.functions
        for p in PAYERS:
            assert int(e.depositOf(self.a(p)).call()) == self.deposits[p]
        for (p, q), lane in self.lanes.items():
            chain = self.settle.lane(p, q)
            assert (chain.balance, chain.collected, chain.thawing, chain.thaw_end) == (
                lane.balance, lane.collected, lane.thawing, lane.thaw_end)
            assert lane.allocated == lane.balance + lane.collected + lane.withdrawn  # nothing past a lane
            assert lane.collected <= lane.signed  # no voucher paid twice or past what was signed
        for q in PROVIDERS:
            assert self.settle.bond_of(q) == self.bonds[q]
        total = sum(self.deposits.values()) + sum(x.balance for x in self.lanes.values()) + sum(self.bonds.values())
        assert self.m.usd(self.settle.escrow.address) == total


def test_settlement_invariants_hold_over_random_action_sequences(market: Market) -> None:
    seed = int(os.environ.get("HEARTH_HYPOTHESIS_SEED") or random.randrange(2**32))
    print(f"settlement machine: {EXAMPLES} examples of up to {STEPS} steps, seed {seed}")
    settle = Settle(market)
    base = [market.clock.snapshot()]
    outcomes: Counter[str] = Counter()

    @hypothesis.seed(seed)
    def machine() -> SettlementMachine:
        return SettlementMachine(settle, base, outcomes)

    started = time.monotonic()
    run_state_machine_as_test(machine, settings=settings(  # type: ignore[arg-type]  # a factory works too
        max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None, database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    ))
    print(f"{sum(outcomes.values())} transactions in {time.monotonic() - started:.0f}s; outcomes by call:")
    for name, count in sorted(outcomes.items()):
        print(f"  {name:<40} {count}")
