"""Staking: registration, metadata, serving, stake, unbonding, withdrawal, parameters, and the
market-only hooks (lockCollateral, unlockCollateral, slash with jail).

The market-only hooks are exercised on a second Staking whose market is the `spare` account,
so a test can call them directly."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from contract_kit import (
    HST,
    USD,
    Market,
    deploy,
    events_of,
    reverts,
)
from web3.contract import Contract

ZERO = "0x" + "00" * 20


@pytest.fixture
def harness(market: Market) -> Iterator[Contract]:
    """A Staking whose market is the `spare` EOA, with `provider` staked 200 HST and serving."""
    staking = deploy(market, "Staking", market.addr("deployer"), market.h.hst.address,
                     market.addr("spare"), market.min_stake, market.unbonding_period, market.jail_period)
    market.send("provider", market.h.hst.functions.approve(staking.address, 200 * HST))
    market.send("provider", staking.functions.register("http://p", "eu", "h100", 200 * HST))
    market.send("provider", staking.functions.setServing(market.model_id, True))
    yield staking


def info(market: Market, staking: Contract, role: str) -> tuple[int, int, int]:
    p = staking.functions.getProvider(market.addr(role)).call()
    return p[0], p[1], p[2]  # staked, locked, unbonding


# ---------------------------------------------------------------- registration and metadata


def test_register_records_the_provider_its_metadata_and_its_stake(market: Market) -> None:
    s = market.staking
    market.send("deployer", market.h.hst.functions.mint(market.addr("spare"), market.min_stake))
    market.send("spare", market.h.hst.functions.approve(s.address, market.min_stake))
    rcpt = market.send("spare", s.functions.register("https://gpu.example", "eu-west", "h100", market.min_stake))
    assert market.event(rcpt, "ProviderRegistered") == {
        "provider": market.addr("spare"), "endpoint": "https://gpu.example", "region": "eu-west",
        "gpuClass": "h100",
    }
    assert market.event(rcpt, "Staked") == {
        "provider": market.addr("spare"), "amount": market.min_stake, "total": market.min_stake}
    p = market.provider_info("spare")
    assert (p["registered"], p["endpoint"], p["region"], p["gpu_class"], p["staked"]) == (
        True, "https://gpu.example", "eu-west", "h100", market.min_stake)
    assert s.functions.isActive(market.addr("spare")).call()
    assert s.functions.classOf(market.addr("spare")).call() == b"h100".ljust(32, b"\x00")
    assert not s.functions.isEligible(market.addr("spare"), market.model_id).call()  # serves nothing yet


def test_register_reverts_below_the_minimum_stake(market: Market) -> None:
    s = market.staking
    market.send("spare", market.h.hst.functions.approve(s.address, market.min_stake))
    with reverts("StakeBelowMinimum", market.min_stake - 1, market.min_stake):
        market.send("spare", s.functions.register("x", "y", "cpu", market.min_stake - 1))


def test_register_reverts_on_a_gpu_class_longer_than_32_bytes(market: Market) -> None:
    with reverts("GpuClassTooLong", 33):
        market.send("spare", market.staking.functions.register("x", "y", "g" * 33, market.min_stake))


def test_register_reverts_when_already_registered(market: Market) -> None:
    with reverts("AlreadyRegistered", market.addr("provider")):
        market.send("provider", market.staking.functions.register("x", "y", "z", market.min_stake))


def test_serving_more_than_the_maximum_number_of_models_reverts(market: Market) -> None:
    s = market.staking.functions
    cap = int(s.MAX_MODELS_PER_PROVIDER().call())
    for i in range(cap - 1):
        market.send("provider", s.setServing(bytes([i + 1]) * 32, True))
    with reverts("TooManyModels", market.addr("provider"), cap):
        market.send("provider", s.setServing(b"\xee" * 32, True))


def test_eligible_set_follows_serving_stake_and_class_changes(market: Market) -> None:
    s = market.staking.functions
    cpu = b"cpu".ljust(32, b"\x00")
    assert s.eligibleSet(market.model_id, cpu).call() == [4, 4 * market.stake0]
    rcpt = market.send("provider", s.setServing(market.model_id, False))
    assert market.event(rcpt, "EligibilityChanged") == {
        "provider": market.addr("provider"), "modelId": market.model_id, "gpuClass": cpu, "weight": 0}
    assert s.eligibleSet(market.model_id, cpu).call() == [3, 3 * market.stake0]
    rcpt = market.send("provider", s.setServing(market.model_id, True))
    assert market.event(rcpt, "EligibilityChanged")["weight"] == market.stake0
    rcpt = market.send("provider", s.requestUnbond(HST))
    assert market.event(rcpt, "EligibilityChanged")["weight"] == market.stake0 - HST
    market.send("provider", s.updateProvider("http://p", "eu", "h100"))
    assert s.eligibleSet(market.model_id, cpu).call() == [3, 3 * market.stake0]
    assert s.eligibleSet(market.model_id, b"h100".ljust(32, b"\x00")).call() == [1, market.stake0 - HST]
    market.send("provider", s.requestUnbond(market.stake0 - HST - market.min_stake + 1))
    assert s.eligibleSet(market.model_id, b"h100".ljust(32, b"\x00")).call() == [0, 0]
    assert not s.isEligible(market.addr("provider"), market.model_id).call()


def test_update_provider_replaces_the_metadata(market: Market) -> None:
    rcpt = market.send("provider", market.staking.functions.updateProvider("https://new", "us", "a100"))
    assert market.event(rcpt, "ProviderUpdated") == {
        "provider": market.addr("provider"), "endpoint": "https://new", "region": "us", "gpuClass": "a100",
    }
    assert market.provider_info("provider")["endpoint"] == "https://new"


def test_set_serving_toggles_the_model(market: Market) -> None:
    rcpt = market.send("provider", market.staking.functions.setServing(market.model_id, False))
    assert market.event(rcpt, "ModelServingSet") == {
        "provider": market.addr("provider"), "modelId": market.model_id, "serving": False,
    }
    assert not market.staking.functions.serves(market.addr("provider"), market.model_id).call()


@pytest.mark.parametrize("call", ["updateProvider", "setServing", "stake"])
def test_provider_calls_revert_for_an_unregistered_account(market: Market, call: str) -> None:
    fns = market.staking.functions
    fn = {
        "updateProvider": lambda: fns.updateProvider("a", "b", "c"),
        "setServing": lambda: fns.setServing(market.model_id, True),
        "stake": lambda: fns.stake(HST),
    }[call]()
    with reverts("NotRegistered", market.addr("client")):
        market.send("client", fn)


# ---------------------------------------------------------------- stake, unbond, withdraw


def test_stake_adds_to_the_stake_and_pulls_the_tokens(market: Market) -> None:
    before = market.hst("provider")
    market.send("provider", market.h.hst.functions.approve(market.staking.address, 50 * HST))
    rcpt = market.send("provider", market.staking.functions.stake(50 * HST))
    assert market.event(rcpt, "Staked") == {
        "provider": market.addr("provider"), "amount": 50 * HST, "total": market.stake0 + 50 * HST,
    }
    assert market.hst("provider") == before - 50 * HST
    assert market.provider_info("provider")["staked"] == market.stake0 + 50 * HST


def test_stake_and_unbond_revert_on_zero(market: Market) -> None:
    with reverts("ZeroAmount"):
        market.send("provider", market.staking.functions.stake(0))
    with reverts("ZeroAmount"):
        market.send("provider", market.staking.functions.requestUnbond(0))


def test_request_unbond_moves_stake_to_unbonding_and_restarts_the_clock(market: Market) -> None:
    s = market.staking.functions
    t0 = market.clock.now()
    rcpt = market.send("provider", s.requestUnbond(100 * HST))
    assert market.event(rcpt, "UnbondRequested") == {
        "provider": market.addr("provider"), "amount": 100 * HST, "unbonding": 100 * HST,
        "readyAt": t0 + market.unbonding_period,
    }
    market.clock.advance(1000)
    rcpt = market.send("provider", s.requestUnbond(50 * HST))
    assert market.event(rcpt, "UnbondRequested")["readyAt"] == t0 + 1000 + market.unbonding_period
    p = market.provider_info("provider")
    assert (p["staked"], p["unbonding"], p["unbond_ready_at"]) == (
        market.stake0 - 150 * HST, 150 * HST, t0 + 1000 + market.unbonding_period)


def test_request_unbond_reverts_on_collateral_locked_by_a_claim(market: Market) -> None:
    p = market.post()
    market.claim(p.job_id, p.job)
    free = market.stake0 - market.collateral(USD)
    with reverts("InsufficientFreeStake", market.addr("provider"), free + 1, free):
        market.send("provider", market.staking.functions.requestUnbond(free + 1))
    market.send("provider", market.staking.functions.requestUnbond(free))
    assert market.provider_info("provider")["staked"] == market.collateral(USD)


def test_unbonding_below_the_minimum_stake_makes_the_provider_inactive(market: Market) -> None:
    s = market.staking.functions
    market.send("provider", s.requestUnbond(market.stake0 - market.min_stake))
    assert s.isActive(market.addr("provider")).call()
    market.send("provider", s.requestUnbond(1))
    assert not s.isActive(market.addr("provider")).call()


def test_withdraw_pays_out_unbonded_stake_once_the_period_has_passed(market: Market) -> None:
    s = market.staking.functions
    market.send("provider", s.requestUnbond(100 * HST))
    ready = market.provider_info("provider")["unbond_ready_at"]
    market.clock.warp(ready - 1)
    with reverts("UnbondingNotReady", market.addr("provider"), ready):
        market.send("provider", s.withdraw())
    market.clock.warp(ready)
    before = market.hst("provider")
    rcpt = market.send("provider", s.withdraw())
    assert market.event(rcpt, "StakeWithdrawn") == {"provider": market.addr("provider"), "amount": 100 * HST}
    assert market.hst("provider") == before + 100 * HST
    assert market.provider_info("provider")["unbonding"] == 0
    with reverts("NothingUnbonding", market.addr("provider")):
        market.send("provider", s.withdraw())


# ---------------------------------------------------------------- market-only hooks


@pytest.mark.parametrize("hook", ["lockCollateral", "lockBond", "unlockCollateral", "slash"])
def test_market_hooks_revert_for_any_caller_but_the_market(market: Market, hook: str) -> None:
    fns = market.staking.functions
    victim = market.addr("verifier")
    fn = {
        "lockCollateral": lambda: fns.lockCollateral(victim, market.model_id, HST),
        "unlockCollateral": lambda: fns.unlockCollateral(victim, 0),
        "lockBond": lambda: fns.lockBond(victim, HST),
        "slash": lambda: fns.slash(victim, 0, 100 * HST, market.addr("cheater"), True),
    }[hook]()
    for role in ("cheater", "deployer"):  # a provider, and even the owner
        with reverts("OnlyMarket", market.addr(role)):
            market.send(role, fn)


def test_lock_and_unlock_collateral_move_stake_between_free_and_locked(market: Market, harness: Contract) -> None:
    f = harness.functions
    market.send("spare", f.lockCollateral(market.addr("provider"), market.model_id, 30 * HST))
    assert info(market, harness, "provider") == (200 * HST, 30 * HST, 0)
    with reverts("InsufficientFreeStake", market.addr("provider"), 171 * HST, 170 * HST):
        market.send("spare", f.lockCollateral(market.addr("provider"), market.model_id, 171 * HST))
    with reverts("CollateralUnderflow", market.addr("provider"), 31 * HST, 30 * HST):
        market.send("spare", f.unlockCollateral(market.addr("provider"), 31 * HST))
    market.send("spare", f.unlockCollateral(market.addr("provider"), 30 * HST))
    assert info(market, harness, "provider") == (200 * HST, 0, 0)


def test_lock_collateral_reverts_for_an_inactive_or_non_serving_provider(market: Market, harness: Contract) -> None:
    f = harness.functions
    with reverts("ModelNotServed", market.addr("verifier"), market.model_id):  # not registered here
        market.send("spare", f.lockCollateral(market.addr("verifier"), market.model_id, HST))
    other = b"\x77" * 32
    with reverts("ModelNotServed", market.addr("provider"), other):
        market.send("spare", f.lockCollateral(market.addr("provider"), other, HST))


def test_slash_takes_staked_first_then_unbonding_and_jails(market: Market, harness: Contract) -> None:
    f = harness.functions
    provider, recipient = market.addr("provider"), market.addr("client2")
    market.send("provider", f.requestUnbond(150 * HST))  # staked 50, unbonding 150
    now = market.clock.now()
    assert f.slash(provider, 0, 80 * HST, recipient, True).call({"from": market.addr("spare")}) == 80 * HST
    before = market.hst("client2")
    rcpt = market.send("spare", f.slash(provider, 0, 80 * HST, recipient, True))
    assert events_of(harness, rcpt, "Slashed") == [{
        "provider": provider, "recipient": recipient, "amount": 80 * HST, "fromStaked": 50 * HST,
        "jailedUntil": now + market.jail_period, "strikes": 0,
    }]
    assert info(market, harness, "provider") == (0, 0, 120 * HST)  # 50 from staked, 30 from unbonding
    assert market.hst("client2") == before + 80 * HST
    assert harness.functions.getProvider(provider).call()[4] == now + market.jail_period


def test_slash_is_capped_at_what_the_provider_has(market: Market, harness: Contract) -> None:
    f = harness.functions
    provider = market.addr("provider")
    assert f.slash(provider, 0, 10**6 * HST, market.addr("client2"), False).call(
        {"from": market.addr("spare")}) == 200 * HST
    market.send("spare", f.slash(provider, 0, 10**6 * HST, market.addr("client2"), False))
    assert info(market, harness, "provider") == (0, 0, 0)
    assert f.getProvider(provider).call()[4] == 0  # not jailed


def test_slash_never_takes_stake_locked_for_other_jobs(market: Market, harness: Contract) -> None:
    f = harness.functions
    provider = market.addr("provider")
    market.send("spare", f.lockCollateral(provider, market.model_id, 150 * HST))
    market.send("spare", f.lockCollateral(provider, market.model_id, 30 * HST))
    # The second job's 30 HST are unlocked and slashed whole; the first job's 150 stay.
    rcpt = market.send("spare", f.slash(provider, 30 * HST, 10**6 * HST, market.addr("client2"), False))
    assert events_of(harness, rcpt, "Slashed")[0]["amount"] == 50 * HST  # 20 free + the 30 unlocked
    assert info(market, harness, "provider") == (150 * HST, 150 * HST, 0)


def test_slash_reverts_on_an_unlock_above_the_locked_stake(market: Market, harness: Contract) -> None:
    with reverts("CollateralUnderflow", market.addr("provider"), 1, 0):
        market.send("spare", harness.functions.slash(market.addr("provider"), 1, 0, market.addr("client2"), False))


def test_a_third_strike_jails_a_repeat_offender(market: Market, harness: Contract) -> None:
    f = harness.functions
    provider = market.addr("provider")
    for strike in (1, 2):
        rcpt = market.send("spare", f.slash(provider, 0, HST, market.addr("client2"), False))
        assert (events_of(harness, rcpt, "Slashed")[0]["strikes"], f.getProvider(provider).call()[4]) == (strike, 0)
    rcpt = market.send("spare", f.slash(provider, 0, HST, market.addr("client2"), False))
    ev = events_of(harness, rcpt, "Slashed")[0]
    assert (ev["strikes"], ev["jailedUntil"]) == (0, market.clock.now() + market.jail_period)
    assert not f.isEligible(provider, market.model_id).call()


def test_a_jailed_provider_is_inactive_until_the_jail_ends(market: Market, harness: Contract) -> None:
    f = harness.functions
    provider = market.addr("provider")
    market.send("spare", f.slash(provider, 0, HST, market.addr("client2"), True))
    until = f.getProvider(provider).call()[4]
    with reverts("ProviderNotActive", provider):
        market.send("spare", f.lockCollateral(provider, market.model_id, HST))
    market.clock.warp(until - 1)
    assert not f.isActive(provider).call()
    market.send("client", f.refresh(provider))  # anyone; a no-op while jailed
    assert not f.isEligible(provider, market.model_id).call()
    market.clock.warp(until)
    assert f.isActive(provider).call()
    with reverts("ProviderNotActive", provider):  # back in the eligible set only once refreshed
        market.send("spare", f.lockCollateral(provider, market.model_id, HST))
    rcpt = market.send("client", f.refresh(provider))
    assert events_of(harness, rcpt, "EligibilityChanged")[0]["weight"] == 199 * HST
    market.send("spare", f.lockCollateral(provider, market.model_id, HST))


# ---------------------------------------------------------------- parameters


def test_set_parameters_stores_and_emits_them(market: Market) -> None:
    s = market.staking.functions
    rcpt = market.send("deployer", s.setParameters(10 * HST, 60, 120))
    assert market.event(rcpt, "ParametersSet") == {"minStake": 10 * HST, "unbondingPeriod": 60, "jailPeriod": 120}
    assert (s.minStake().call(), s.unbondingPeriod().call(), s.jailPeriod().call()) == (10 * HST, 60, 120)


@pytest.mark.parametrize("args", [(0, 60, 120), (HST, 0, 120)])
def test_set_parameters_reverts_on_zero_minimum_stake_or_unbonding_period(
    market: Market, args: tuple[int, int, int],
) -> None:
    with reverts("InvalidParameter"):
        market.send("deployer", market.staking.functions.setParameters(*args))


def test_set_parameters_is_owner_only(market: Market) -> None:
    with reverts("OwnableUnauthorizedAccount", market.addr("provider")):
        market.send("provider", market.staking.functions.setParameters(1, 1, 0))


def test_staking_cannot_be_deployed_without_a_market(market: Market) -> None:
    with reverts("InvalidParameter"):
        deploy(market, "Staking", market.addr("deployer"), market.h.hst.address, ZERO,
               market.min_stake, market.unbonding_period, market.jail_period)
