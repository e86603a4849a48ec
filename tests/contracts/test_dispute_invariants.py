"""A Hypothesis state machine of the dispute game against an adversary.

The adversary controls `cheater` and three sybil providers (staked the minimum, serving the
model); the honest side is `provider`, `verifier` and `verifier2`. Rules: jobs delivered
honestly or wrongly (a wrong output, or the right output with inflated units), challenges by
either side, grinding challengers that try to draw the committee at once, the draw, committee
members that vote the truth, collude with the adversary or stay silent, resolution at and past
every deadline, governance decisions, pauses, finalization, withdrawals. Invariants after every
step, read from the chain:

- funds are conserved to the wei: the market holds exactly the escrow of open jobs, the bonds
  of open disputes and every payment-token credit; its staking-token balance is exactly the
  sum of reward credits; Staking holds exactly staked + unbonding; and the staking token's
  total across every wallet, Staking and the market never changes;
- no dispute stays open past its deadline: for every challenged job past its deadline (the
  draw's 256-block horizon, the reveal end, the escalation end, at once without a committee),
  `resolveDispute` succeeds when anyone calls it;
- an honest provider facing an honest majority is never slashed: a correct receipt whose
  revealed seats are mostly honest (with a quorum) is upheld, and no correct receipt is ever
  slashed without a majority of colluding seats.

``HEARTH_HYPOTHESIS_EXAMPLES`` sets the number of examples (default 15)."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from contract_kit import GPU, HST, USD, Market, reverts
from eth_abi import encode
from eth_account import Account
from eth_utils import keccak
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from contracts import eip712
from contracts.bindings import vote_commitment
from contracts.types import Job, Outcome, Phase, Receipt, Status

EXAMPLES = int(os.environ.get("HEARTH_HYPOTHESIS_EXAMPLES", "15"))
STEPS = 12
HONEST = ("provider", "verifier", "verifier2")
SYBILS = ("sybil0", "sybil1", "sybil2")
ADVERSARY = ("cheater", *SYBILS)
PROVIDERS = (*HONEST, *ADVERSARY)
CLIENTS = ("client", "client2")
UNITS = 1000


@dataclass
class Case:
    job_id: int
    record: Job
    provider: str
    truth: bytes
    correct: bool
    challenger: str | None = None
    ballots: dict[str, str] = field(default_factory=dict)  # member -> truth | collude | silent


class DisputeMachine(RuleBasedStateMachine):
    def __init__(self, m: Market, keys: dict[str, str], snap: list[str], outcomes: Counter[str]) -> None:
        super().__init__()
        self.m, self.keys, self.outcomes = m, keys, outcomes
        m.revert(snap[0])
        snap[0] = m.clock.snapshot()
        self.fn = m.market.functions
        self.addr = {r: Account.from_key(k).address for r, k in keys.items()}
        self.role_of = {a.lower(): r for r, a in self.addr.items()}
        self.cases: dict[int, Case] = {}
        self.hst_total = self.hst_holdings()

    # ------------------------------------------------------------ helpers

    def send(self, role: str, fn: Any) -> Any:
        self.outcomes[f"{fn.fn_name}: ok"] += 1
        return self.m.h.sender(self.keys[role]).send(fn)

    def expect(self, role: str, fn: Any, *error: Any) -> None:
        self.outcomes[f"{fn.fn_name}: {error[0]}"] += 1
        with reverts(*error):
            self.m.h.sender(self.keys[role]).send(fn)

    def read(self, calls: list[tuple[str, str, str | int]]) -> list[int]:
        """uint256 views in one JSON-RPC batch: (contract address, signature, argument)."""
        resps = self.m.w3.provider.make_batch_request(  # type: ignore[attr-defined]
            [("eth_call", [{"to": to, "data": _calldata(sig, arg)}, "latest"]) for to, sig, arg in calls])
        assert isinstance(resps, list), resps
        return [int(r["result"][2:66], 16) for r in resps]

    def hst_holdings(self) -> int:
        hst = self.m.h.hst.address
        holders = [*self.addr.values(), self.m.staking.address, self.m.market.address]
        return sum(self.read([(hst, "balanceOf(address)", a) for a in holders]))

    def open_cases(self, *statuses: Status) -> list[Case]:
        return [c for c in self.cases.values() if c.record.status in statuses]

    def dispute(self, c: Case) -> dict[str, Any]:
        return self.m.dispute(c.job_id)

    # ------------------------------------------------------------ jobs

    @precondition(lambda self: len(self.open_cases(Status.DELIVERED, Status.CHALLENGED)) < 4)
    @rule(data=st.data(), provider=st.sampled_from(PROVIDERS), cheat=st.sampled_from(["no", "no", "output", "units"]),
          client=st.sampled_from(CLIENTS), max_payment=st.integers(1, 3 * USD),
          challenger=st.none() | st.sampled_from(PROVIDERS))
    def deliver(self, data: st.DataObject, provider: str, cheat: str, client: str, max_payment: int,
                challenger: str | None) -> None:
        """A job posted, claimed and delivered: by an honest provider always correctly, by the
        adversary with a wrong output or inflated units when it cheats; with ``challenger``,
        challenged at once and carried on (see ``challenge``)."""
        self.deliver_case(provider, cheat, client, max_payment)
        if challenger is not None and self.open_cases(Status.DELIVERED):
            self.challenge(data, challenger, data.draw(st.booleans(), label="grind"),
                           data.draw(st.sampled_from(["draw", "vote", "resolve", "resolve"]), label="then"))

    def deliver_case(self, provider: str, cheat: str, client: str, max_payment: int) -> None:
        if provider in HONEST:
            cheat = "no"
        if self.m.market.functions.paused().call():
            return
        if not self.m.staking.functions.isEligible(self.addr[provider], self.m.model_id).call():
            self.send("relayer", self.m.staking.functions.refresh(self.addr[provider]))
            if not self.m.staking.functions.isEligible(self.addr[provider], self.m.model_id).call():
                return  # jailed
        free = self.m.provider_info(self.addr[provider])
        if free["staked"] - free["locked"] < self.m.collateral(max_payment):
            return
        now = self.m.clock.now()
        rcpt = self.send(client, self.fn.postJob(self.m.model_id, keccak(text=f"in {len(self.cases)}"), max_payment,
                                                 now + 3600))
        job_id = self.m.h.job_id_from(rcpt)
        job = self.m.fold(job_id, None, rcpt)
        job = self.m.fold(job_id, job, self.send(provider, self.fn.claimJob(job_id, job.as_tuple())))
        truth = keccak(text=f"truth {job_id}")
        output = keccak(text=f"wrong {job_id}") if cheat == "output" else truth
        units = 10**6 if cheat == "units" else UNITS
        rec = Receipt(job_id, output, units, self.m.model_id, self.m.runtime_hash, GPU)
        sig = eip712.sign_receipt(self.keys[provider], rec, self.m.h.chain_id, self.m.market.address)
        job = self.m.fold(job_id, job, self.send("relayer", self.fn.submitReceipt(job.as_tuple(), rec.as_tuple(), sig)))
        self.cases[job_id] = Case(job_id, job, provider, truth, correct=cheat == "no")

    @precondition(lambda self: self.open_cases(Status.DELIVERED))
    @rule(data=st.data(), challenger=st.sampled_from(PROVIDERS), grind=st.booleans(),
          then=st.sampled_from(["stop", "draw", "vote", "resolve", "resolve", "resolve"]))
    def challenge(self, data: st.DataObject, challenger: str, grind: bool, then: str) -> None:
        """A challenge by anyone (the adversary's sybils included, also of its own receipts);
        a grinding challenger at once tries to draw, which must fail: the seed does not exist yet.
        ``then`` carries the dispute on through the draw, the vote and the resolution."""
        c = data.draw(st.sampled_from(self.open_cases(Status.DELIVERED)), label="job")
        self.challenge_case(data, c, challenger, grind)
        if then == "stop" or c.record.status != Status.CHALLENGED:
            return
        self.draw(data, "relayer", False)
        if then == "draw":
            return
        if self.dispute(c)["phase"] == Phase.VOTING:
            self.vote(data, data.draw(st.sampled_from([False] * 4 + [True]), label="honest silent"),
                      data.draw(st.sampled_from(["collude", "collude", "silent", "truth"]), label="adversary"))
        if then == "resolve":
            self.resolve(data, "client2", data.draw(st.booleans(), label="governance"))

    def challenge_case(self, data: st.DataObject, c: Case, challenger: str, grind: bool) -> None:
        a = self.addr[challenger]
        if self.m.clock.now() >= c.record.challenge_end:
            self.expect(challenger, self.fn.challenge(c.job_id, c.record.as_tuple()), "ChallengeWindowClosed",
                        c.job_id)
            return
        eligible = self.m.staking.functions.isEligible(a, self.m.model_id).call()
        if challenger == c.provider or not eligible:
            self.expect(challenger, self.fn.challenge(c.job_id, c.record.as_tuple()), "ChallengerNotEligible", a)
            return
        rcpt = self.send(challenger, self.fn.challenge(c.job_id, c.record.as_tuple()))
        c.record = self.m.fold(c.job_id, c.record, rcpt)
        c.challenger = challenger
        if grind:
            draw_block = self.dispute(c)["drawBlock"]
            self.expect(challenger, self.fn.drawCommittee(c.job_id), "DrawNotReady", c.job_id, draw_block)

    @precondition(lambda self: any(self.dispute(c)["phase"] == Phase.AWAITING_DRAW
                                   for c in self.open_cases(Status.CHALLENGED)))
    @rule(data=st.data(), drawer=st.sampled_from((*PROVIDERS, *CLIENTS)), late=st.sampled_from([False] * 5 + [True]))
    def draw(self, data: st.DataObject, drawer: str, late: bool) -> None:
        """Anyone draws once the draw block is past; rarely, nobody did for 256 blocks."""
        cases = [c for c in self.open_cases(Status.CHALLENGED) if self.dispute(c)["phase"] == Phase.AWAITING_DRAW]
        c = data.draw(st.sampled_from(cases), label="job")
        draw_block = self.dispute(c)["drawBlock"]
        target = draw_block + (257 if late else 1)
        if self.m.w3.eth.block_number < target:
            self.m.clock.rpc("anvil_mine", [hex(target - self.m.w3.eth.block_number)])
        if late:
            self.expect(drawer, self.fn.drawCommittee(c.job_id), "DrawExpired", c.job_id, draw_block)
            return
        rcpt = self.send(drawer, self.fn.drawCommittee(c.job_id))
        seats = [self.role_of[a.lower()] for a in self.m.event(rcpt, "CommitteeDrawn")["seats"]]
        assert c.provider not in seats and c.challenger not in seats  # the parties never sit

    @precondition(lambda self: any(self.dispute(c)["phase"] == Phase.VOTING and not c.ballots
                                   for c in self.open_cases(Status.CHALLENGED)))
    @rule(data=st.data(), honest_silent=st.sampled_from([False] * 4 + [True]),
          adversary=st.sampled_from(["collude", "collude", "silent", "truth"]))
    def vote(self, data: st.DataObject, honest_silent: bool, adversary: str) -> None:
        """The committee votes: honest members re-execute and vote the truth (or one stays
        silent); the adversary's members collude (vote for the adversary), stay silent or vote
        the truth."""
        now = self.m.clock.now()
        cases = [c for c in self.open_cases(Status.CHALLENGED)
                 if self.dispute(c)["phase"] == Phase.VOTING and not c.ballots and now < self.dispute(c)["commitEnd"]]
        if not cases:  # the commit phases have passed: nobody voted, the members stay silent
            return
        c = data.draw(st.sampled_from(cases), label="job")
        members = list(dict.fromkeys(self.role_of[a.lower()] for a in self.fn.committee(c.job_id).call()))
        for r in members:
            c.ballots[r] = adversary if r in ADVERSARY else "truth"
        if honest_silent and any(r in HONEST for r in members):
            c.ballots[next(r for r in members if r in HONEST)] = "silent"
        votes: dict[str, tuple[bytes, int]] = {}
        for r, how in c.ballots.items():
            if how == "silent":
                continue
            if how == "truth":
                votes[r] = (c.truth, UNITS)
            elif c.provider in ADVERSARY:  # collude: uphold the adversary's receipt
                votes[r] = (c.record.output_hash, c.record.units)
            else:  # collude: convict the honest provider
                votes[r] = (keccak(b"lie"), UNITS)
        salt = keccak(text=f"salt {c.job_id}")
        for r, (out, units) in votes.items():
            info = self.m.provider_info(self.addr[r])
            if info["staked"] - info["locked"] < self.m.params.member_bond * 3:
                c.ballots[r] = "silent"
                continue
            self.send(r, self.fn.commitVote(c.job_id, vote_commitment(c.job_id, self.addr[r], out, units, salt)))
        commit_end, reveal_end = self.m.dispute_times(c.job_id)
        self.m.clock.warp(max(commit_end, self.m.clock.now()))
        for r, (out, units) in votes.items():
            if c.ballots[r] != "silent":
                self.send(r, self.fn.revealVote(c.job_id, out, units, salt))

    @precondition(lambda self: self.open_cases(Status.CHALLENGED))
    @rule(data=st.data(), caller=st.sampled_from((*PROVIDERS, *CLIENTS)), governance=st.booleans())
    def resolve(self, data: st.DataObject, caller: str, governance: bool) -> None:
        """Resolution at the dispute's deadline (anyone), or by honest governance while escalated."""
        c = data.draw(st.sampled_from(self.open_cases(Status.CHALLENGED)), label="job")
        d = self.dispute(c)
        if governance and d["phase"] == Phase.ESCALATED and self.m.clock.now() < d["escalationEnd"]:
            rcpt = self.send("deployer", self.fn.resolveEscalated(c.job_id, c.record.as_tuple(), c.correct))
            self.check_outcome(c, d, rcpt, by_governance=True)
            return
        self.reach_deadline(c, d)
        rcpt = self.send(caller, self.fn.resolveDispute(c.job_id, c.record.as_tuple()))
        self.check_outcome(c, d, rcpt, by_governance=False)

    def reach_deadline(self, c: Case, d: dict[str, Any]) -> None:
        if d["phase"] == Phase.AWAITING_DRAW:
            target = d["drawBlock"] + 257
            if self.m.w3.eth.block_number < target:
                self.m.clock.rpc("anvil_mine", [hex(target - self.m.w3.eth.block_number)])
        elif d["phase"] == Phase.VOTING:
            self.m.clock.warp(max(d["revealEnd"], self.m.clock.now()))
        elif d["phase"] == Phase.ESCALATED:
            self.m.clock.warp(max(d["escalationEnd"], self.m.clock.now()))

    def check_outcome(self, c: Case, d: dict[str, Any], rcpt: Any, by_governance: bool) -> None:
        ev = self.m.event(rcpt, "DisputeResolved")
        outcome = Outcome(ev["outcome"])
        self.outcomes[f"(outcome {outcome.label}, provider {'honest' if c.correct else 'cheating'})"] += 1
        c.record = self.m.fold(c.job_id, c.record, rcpt)
        if outcome == Outcome.ESCALATED:
            return
        seats = [self.role_of[a.lower()] for a in self.fn.committee(c.job_id).call()]
        honest_seats = sum(1 for r in seats if c.ballots.get(r) == "truth")
        colluding = sum(1 for r in seats if c.ballots.get(r) == "collude")
        quorum = self.m.params.committee_size // 2 + 1
        if c.correct:
            if by_governance or (honest_seats >= quorum and honest_seats > colluding) or colluding == 0:
                # An honest provider facing an honest majority (or honest governance, or no
                # collusion at all) is never slashed.
                assert outcome != Outcome.PROVIDER_LOST and ev["slashed"] == 0, (outcome, c.ballots, seats)
        elif by_governance or (honest_seats >= quorum and honest_seats > colluding):
            assert outcome == Outcome.PROVIDER_LOST and ev["slashed"] == c.record.collateral
        if outcome == Outcome.NEUTRAL:
            assert ev["slashed"] == 0

    @precondition(lambda self: self.open_cases(Status.DELIVERED))
    @rule(data=st.data())
    def finalize(self, data: st.DataObject) -> None:
        c = data.draw(st.sampled_from(self.open_cases(Status.DELIVERED)), label="job")
        self.m.clock.warp(max(c.record.challenge_end, self.m.clock.now()))
        c.record = self.m.fold(c.job_id, c.record, self.send("relayer", self.fn.finalize(c.job_id,
                                                                                          c.record.as_tuple())))

    @rule(pause=st.sampled_from([True, False, False]))
    def pause(self, pause: bool) -> None:
        """Governance pauses or unpauses; nothing in the dispute game stops either way."""
        paused = self.fn.paused().call()
        if pause == paused:
            if not pause:
                return
            self.expect("deployer", self.fn.pause() if pause else self.fn.unpause(),
                        "EnforcedPause" if pause else "ExpectedPause")
        else:
            self.send("deployer", self.fn.pause() if pause else self.fn.unpause())

    @rule(who=st.sampled_from((*PROVIDERS, *CLIENTS, "treasury")), stake_token=st.booleans())
    def withdraw(self, who: str, stake_token: bool) -> None:
        a = self.addr[who]
        amount = (self.fn.rewardOf(a) if stake_token else self.fn.balanceOf(a)).call()
        fn = self.fn.withdrawRewards(a) if stake_token else self.fn.withdraw(a)
        if amount == 0:
            self.expect(who, fn, "NothingToWithdraw", a)
        else:
            self.send(who, fn)

    @rule(seconds=st.sampled_from([60, 600, 3600, 86_400]))
    def time_passes(self, seconds: int) -> None:
        self.m.clock.advance(seconds)

    # ------------------------------------------------------------ invariants

    @invariant()
    def funds_are_conserved_to_the_wei(self) -> None:
        mk, sk, usd, hst = self.m.market.address, self.m.staking.address, self.m.h.usd.address, self.m.h.hst.address
        escrow = sum(c.record.max_payment for c in self.open_cases(Status.DELIVERED, Status.CHALLENGED))
        bonds = self.m.params.challenge_bond * len(self.open_cases(Status.CHALLENGED))
        accounts = list(self.addr.values())
        calls: list[tuple[str, str, str | int]] = [(usd, "balanceOf(address)", mk), (hst, "balanceOf(address)", mk),
                                                   (hst, "balanceOf(address)", sk)]
        calls += [(mk, "balanceOf(address)", a) for a in accounts] + [(mk, "rewardOf(address)", a) for a in accounts]
        out = self.read(calls)
        market_usd, market_hst, staking_hst = out[:3]
        credits, rewards = out[3:3 + len(accounts)], out[3 + len(accounts):3 + 2 * len(accounts)]
        assert market_usd == escrow + bonds + sum(credits)
        assert market_hst == sum(rewards)
        infos = [self.m.staking.functions.getProvider(self.addr[r]).call() for r in PROVIDERS]
        assert staking_hst == sum(i[0] + i[2] for i in infos)
        assert self.hst_holdings() == self.hst_total

    @invariant()
    def no_dispute_stays_open_past_its_deadline(self) -> None:
        head, now = self.m.w3.eth.block_number, self.m.clock.now()
        for c in self.open_cases(Status.CHALLENGED):
            d = self.dispute(c)
            past = (
                (d["phase"] == Phase.AWAITING_DRAW and head > d["drawBlock"] + 256)
                or d["phase"] == Phase.NO_COMMITTEE
                or (d["phase"] == Phase.VOTING and now >= d["revealEnd"])
                or (d["phase"] == Phase.ESCALATED and now >= d["escalationEnd"])
            )
            if past:  # anyone can end it now (a read-only call: the state is unchanged)
                self.fn.resolveDispute(c.job_id, c.record.as_tuple()).call({"from": self.addr["client2"]})


def _calldata(signature: str, arg: str | int) -> str:
    kind = "address" if isinstance(arg, str) else "uint256"
    return "0x" + (keccak(text=signature)[:4] + encode([kind], [arg])).hex()


def _setup(m: Market) -> dict[str, str]:
    keys = {r: m.key(r) for r in (*HONEST, "cheater", *CLIENTS, "relayer", "deployer", "treasury")}
    for i, r in enumerate(SYBILS):
        acct = Account.from_key(keccak(text=f"dispute machine sybil {i}"))
        keys[r] = "0x" + bytes(acct.key).hex()
        m.clock.rpc("anvil_setBalance", [acct.address, hex(10**20)])
        m.send("deployer", m.h.hst.functions.mint(acct.address, m.min_stake))
        s = m.h.sender(keys[r])
        s.send(m.h.hst.functions.approve(m.staking.address, m.min_stake))
        s.send(m.staking.functions.register("http://sybil", "x", "cpu", m.min_stake))
        s.send(m.staking.functions.setServing(m.model_id, True))
    for r in (*PROVIDERS, *CLIENTS):
        m.send("deployer", m.h.usd.functions.mint(Account.from_key(keys[r]).address, 100 * USD))
        m.h.sender(keys[r]).send(m.h.usd.functions.approve(m.market.address, 2**256 - 1))
    assert HST  # amounts above are in the staking token's wei
    return keys


def test_the_dispute_game_holds_against_sybils_grinders_liars_and_pauses(market: Market) -> None:
    keys = _setup(market)
    snap = [market.clock.snapshot()]
    outcomes: Counter[str] = Counter()
    def machine() -> DisputeMachine:
        return DisputeMachine(market, keys, snap, outcomes)

    run_state_machine_as_test(machine, settings=settings(  # type: ignore[arg-type]  # a factory works too
        max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None, database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    ))
    for name, count in sorted(outcomes.items()):
        print(f"  {name:<55} {count}")
    assert outcomes["drawCommittee: ok"] and outcomes["resolveDispute: ok"]
