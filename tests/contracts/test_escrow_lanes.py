"""PaymentEscrow: deposits, lanes, thaws, authorized signers, provider bonds, governance."""

from __future__ import annotations

from contract_kit import deploy, events_of, reverts
from settlement_kit import USD, Settle, signer_address, signer_key

from contracts.settlement import sign_signer_authorization


def test_deposit_allocate_and_withdraw_unallocated_move_exact_amounts(settle: Settle) -> None:
    m, e = settle.m, settle.escrow
    before = m.usd("client")
    m.send("client", m.h.usd.functions.approve(e.address, 10 * USD))
    rcpt = m.send("client", e.functions.deposit(10 * USD))
    assert m.event(rcpt, "Deposited") == {"payer": m.addr("client"), "amount": 10 * USD, "deposit": 10 * USD}
    rcpt = m.send("client", e.functions.allocate(m.addr("client"), [m.addr("provider"), m.addr("verifier")],
                                                 [3 * USD, 2 * USD]))
    assert m.events(rcpt, "Allocated") == [
        {"payer": m.addr("client"), "provider": m.addr("provider"), "amount": 3 * USD, "laneBalance": 3 * USD,
         "by": m.addr("client")},
        {"payer": m.addr("client"), "provider": m.addr("verifier"), "amount": 2 * USD, "laneBalance": 2 * USD,
         "by": m.addr("client")},
    ]
    assert settle.deposit_of("client") == 5 * USD
    rcpt = m.send("client", e.functions.withdrawDeposit(5 * USD))
    assert m.event(rcpt, "DepositWithdrawn") == {"payer": m.addr("client"), "amount": 5 * USD, "deposit": 0}
    assert m.usd("client") == before - 5 * USD
    assert m.usd(e.address) == 5 * USD
    assert settle.lane("client", "provider").balance == 3 * USD


def test_deposit_and_allocate_in_one_call_pulls_the_sum(settle: Settle) -> None:
    m, e = settle.m, settle.escrow
    m.send("client", m.h.usd.functions.approve(e.address, 7 * USD))
    fn = e.functions.depositAndAllocate([m.addr("provider"), m.addr("verifier")], [4 * USD, 3 * USD])
    rcpt = m.send("client", fn)
    assert m.event(rcpt, "Deposited")["amount"] == 7 * USD
    assert len(m.events(rcpt, "Allocated")) == 2
    assert settle.deposit_of("client") == 0
    assert settle.lane("client", "verifier").balance == 3 * USD


def test_deposits_and_allocations_refuse_zero_excess_and_mismatched_lists(settle: Settle) -> None:
    m, e = settle.m, settle.escrow
    with reverts("ZeroAmount"):
        m.send("client", e.functions.deposit(0))
    with reverts("ZeroAmount"):
        m.send("client", e.functions.withdrawDeposit(0))
    with reverts("ZeroAmount"):
        m.send("client", e.functions.depositAndAllocate([], []))
    with reverts("LengthMismatch"):
        m.send("client", e.functions.depositAndAllocate([m.addr("provider")], []))
    with reverts("LengthMismatch"):
        m.send("client", e.functions.allocate(m.addr("client"), [m.addr("provider")], []))
    settle.fund_lane("client", {"provider": USD}, extra=USD)
    with reverts("InsufficientDeposit", m.addr("client"), 2 * USD, USD):
        m.send("client", e.functions.withdrawDeposit(2 * USD))
    with reverts("ZeroAmount"):
        m.send("client", e.functions.allocate(m.addr("client"), [m.addr("provider")], [0]))


def test_the_same_deposit_cannot_fund_two_providers(settle: Settle) -> None:
    """Attack: a payer promises one deposit to two providers. Lanes make that impossible: the
    second allocation of the same money is refused, so every lane is fully backed."""
    m, e = settle.m, settle.escrow
    m.send("client", m.h.usd.functions.approve(e.address, USD))
    m.send("client", e.functions.deposit(USD))
    with reverts("InsufficientDeposit", m.addr("client"), USD, 0):
        m.send("client", e.functions.allocate(m.addr("client"), [m.addr("provider"), m.addr("verifier")],
                                              [USD, USD]))
    m.send("client", e.functions.allocate(m.addr("client"), [m.addr("provider")], [USD]))
    with reverts("InsufficientDeposit", m.addr("client"), USD, 0):
        m.send("client", e.functions.allocate(m.addr("client"), [m.addr("verifier")], [USD]))


def test_thaw_returns_money_only_after_a_delay_longer_than_the_settlement_horizon(settle: Settle) -> None:
    m, e = settle.m, settle.escrow
    assert settle.thaw_delay >= settle.horizon + int(e.functions.thawMargin().call())
    assert settle.thaw_delay >= int(e.functions.minThawDelay().call())
    settle.fund_lane("client", {"provider": 5 * USD})
    with reverts("InsufficientLane", m.addr("client"), m.addr("provider"), 6 * USD, 5 * USD):
        m.send("client", e.functions.thaw(m.addr("provider"), 6 * USD))
    with reverts("ZeroAmount"):
        m.send("client", e.functions.thaw(m.addr("provider"), 0))
    with reverts("NothingThawing", m.addr("client"), m.addr("provider")):
        m.send("client", e.functions.withdrawThawed(m.addr("provider")))
    rcpt = m.send("client", e.functions.thaw(m.addr("provider"), 2 * USD))
    end = m.clock.now() + settle.thaw_delay
    assert m.event(rcpt, "ThawStarted") == {"payer": m.addr("client"), "provider": m.addr("provider"),
                                            "amount": 2 * USD, "thawEnd": end}
    m.clock.warp(end - 1)
    with reverts("ThawNotReady", end):
        m.send("client", e.functions.withdrawThawed(m.addr("provider")))
    m.clock.warp(end)
    before = m.usd("client")
    rcpt = m.send("client", e.functions.withdrawThawed(m.addr("provider")))
    assert m.event(rcpt, "ThawWithdrawn") == {"payer": m.addr("client"), "provider": m.addr("provider"),
                                              "amount": 2 * USD, "laneBalance": 3 * USD}
    assert m.usd("client") == before + 2 * USD
    assert settle.lane("client", "provider").thaw_end == 0


def test_only_the_payer_cancels_its_thaw(settle: Settle) -> None:
    m, e = settle.m, settle.escrow
    settle.fund_lane("client", {"provider": 5 * USD})
    m.send("client", e.functions.thaw(m.addr("provider"), 5 * USD))
    # The provider "cancelling" acts on its own (empty) lane to itself, never on the payer's.
    with reverts("NothingThawing", m.addr("provider"), m.addr("provider")):
        m.send("provider", e.functions.cancelThaw(m.addr("provider")))
    rcpt = m.send("client", e.functions.cancelThaw(m.addr("provider")))
    assert m.event(rcpt, "ThawCancelled") == {"payer": m.addr("client"), "provider": m.addr("provider")}
    assert settle.lane("client", "provider").thawing == 0
    with reverts("NothingThawing", m.addr("client"), m.addr("provider")):
        m.send("client", e.functions.cancelThaw(m.addr("provider")))


def test_the_thaw_delay_follows_the_settlement_horizon_when_governance_lengthens_it(settle: Settle) -> None:
    m = settle.m
    p = settle.params
    longer = p.__class__(*[*p.as_tuple()[:1], p.challenge_window * 10, *p.as_tuple()[2:]])
    m.send("deployer", settle.batches.functions.setParams(longer.as_tuple()))
    settle.reload()
    assert settle.thaw_delay == settle.horizon + int(settle.escrow.functions.thawMargin().call())


def test_signer_authorization_needs_the_signers_proof_naming_the_payer(settle: Settle) -> None:
    m, e = settle.m, settle.escrow
    expiry = m.clock.now() + 86400
    rcpt = settle.authorize("client", "gateway", expiry=expiry, can_allocate=True)
    assert m.event(rcpt, "SignerAuthorized") == {"payer": m.addr("client"), "signer": signer_address("gateway"),
                                                 "expiry": expiry, "canAllocate": True}
    assert e.functions.isValidSigner(m.addr("client"), signer_address("gateway")).call() is True
    # A proof for another payer, or by another key, proves nothing.
    proof = sign_signer_authorization(signer_key("other"), m.addr("client"), expiry, settle.chain_id, e.address)
    with reverts("InvalidSignerProof", m.addr("client"), signer_address("api-key")):
        m.send("client", e.functions.authorizeSigner(signer_address("api-key"), expiry, False, proof))
    proof = sign_signer_authorization(signer_key("api-key"), m.addr("client2"), expiry, settle.chain_id, e.address)
    with reverts("InvalidSignerProof", m.addr("client"), signer_address("api-key")):
        m.send("client", e.functions.authorizeSigner(signer_address("api-key"), expiry, False, proof))
    with reverts("ExpiryInPast", m.clock.now()):
        settle.authorize("client", "api-key", expiry=m.clock.now())


def test_a_signer_allowed_to_allocate_tops_up_lanes_and_others_cannot(settle: Settle) -> None:
    m, e = settle.m, settle.escrow
    settle.fund_lane("client", {}, extra=5 * USD)
    expiry = m.clock.now() + 86400
    proof = sign_signer_authorization(m.key("relayer"), m.addr("client"), expiry, settle.chain_id, e.address)
    with reverts("NotAllocator", m.addr("client"), m.addr("relayer")):
        m.send("relayer", e.functions.allocate(m.addr("client"), [m.addr("provider")], [USD]))
    m.send("client", e.functions.authorizeSigner(m.addr("relayer"), expiry, False, proof))
    with reverts("NotAllocator", m.addr("client"), m.addr("relayer")):
        m.send("relayer", e.functions.allocate(m.addr("client"), [m.addr("provider")], [USD]))
    m.send("client", e.functions.authorizeSigner(m.addr("relayer"), expiry, True, proof))
    rcpt = m.send("relayer", e.functions.allocate(m.addr("client"), [m.addr("provider")], [USD]))
    assert m.event(rcpt, "Allocated")["by"] == m.addr("relayer")
    m.clock.warp(expiry)
    with reverts("NotAllocator", m.addr("client"), m.addr("relayer")):
        m.send("relayer", e.functions.allocate(m.addr("client"), [m.addr("provider")], [USD]))


def test_revoking_a_signer_needs_a_thaw_which_the_payer_can_cancel(settle: Settle) -> None:
    m, e = settle.m, settle.escrow
    gw = signer_address("gateway")
    with reverts("UnknownSigner", m.addr("client"), gw):
        m.send("client", e.functions.thawSigner(gw))
    settle.authorize("client", "gateway")
    with reverts("NothingThawing", m.addr("client"), gw):
        m.send("client", e.functions.revokeSigner(gw))
    with reverts("NothingThawing", m.addr("client"), gw):
        m.send("client", e.functions.cancelSignerThaw(gw))
    rcpt = m.send("client", e.functions.thawSigner(gw))
    end = m.clock.now() + settle.thaw_delay
    assert m.event(rcpt, "SignerThawStarted") == {"payer": m.addr("client"), "signer": gw, "thawEnd": end}
    rcpt = m.send("client", e.functions.cancelSignerThaw(gw))
    assert m.event(rcpt, "SignerThawCancelled") == {"payer": m.addr("client"), "signer": gw}
    m.send("client", e.functions.thawSigner(gw))
    with reverts("ThawNotReady", end):
        m.send("client", e.functions.revokeSigner(gw))
    m.clock.warp(end)
    assert e.functions.isValidSigner(m.addr("client"), gw).call() is True  # valid until revoked
    rcpt = m.send("client", e.functions.revokeSigner(gw))
    assert m.event(rcpt, "SignerRevoked") == {"payer": m.addr("client"), "signer": gw}
    assert e.functions.isValidSigner(m.addr("client"), gw).call() is False
    assert tuple(e.functions.getSigner(m.addr("client"), gw).call()) == (0, 0, False)


def test_provider_bond_thaws_and_stays_locked_while_its_batches_are_challengeable(settle: Settle) -> None:
    m, e = settle.m, settle.escrow
    with reverts("ZeroAmount"):
        m.send("provider", e.functions.depositBond(0))
    rcpt = settle.bond("provider", 10 * USD)
    assert m.event(rcpt, "BondDeposited") == {"provider": m.addr("provider"), "amount": 10 * USD, "bond": 10 * USD}
    with reverts("InsufficientDeposit", m.addr("provider"), 11 * USD, 10 * USD):
        m.send("provider", e.functions.thawBond(11 * USD))
    with reverts("ZeroAmount"):
        m.send("provider", e.functions.thawBond(0))
    with reverts("NothingThawing", m.addr("provider"), m.addr("provider")):
        m.send("provider", e.functions.withdrawBond())
    rcpt = m.send("provider", e.functions.thawBond(4 * USD))
    end = m.clock.now() + settle.thaw_delay
    assert m.event(rcpt, "BondThawStarted") == {"provider": m.addr("provider"), "amount": 4 * USD, "thawEnd": end}
    m.clock.advance(settle.thaw_delay - settle.horizon + 1)
    _, batch, _, _ = settle.commit("provider", settle.work(2))
    locked = batch.committed_at + settle.horizon
    assert locked > end
    m.clock.warp(end)
    with reverts("BondLocked", m.addr("provider"), locked):
        m.send("provider", e.functions.withdrawBond())
    m.clock.warp(locked)
    rcpt = m.send("provider", e.functions.withdrawBond())
    assert m.event(rcpt, "BondWithdrawn") == {"provider": m.addr("provider"), "amount": 4 * USD, "bond": 6 * USD}


def test_only_the_settlement_seizes_bonds_and_it_is_bound_once(settle: Settle) -> None:
    m, e = settle.m, settle.escrow
    with reverts("OnlySettlement", m.addr("provider")):
        m.send("provider", e.functions.seizeBond(m.addr("provider"), m.addr("provider"), 1))
    with reverts("SettlementAlreadySet"):
        m.send("deployer", e.functions.setSettlement(m.addr("deployer")))
    with reverts("SettlementAlreadySet"):
        m.send("deployer", m.staking.functions.setSettlement(m.addr("deployer")))
    assert e.functions.settlement().call() == settle.batches.address
    assert m.staking.functions.settlement().call() == settle.batches.address
    with reverts("OwnableUnauthorizedAccount", m.addr("client")):
        m.send("client", e.functions.setSettlement(m.addr("client")))


def test_a_fresh_escrow_binds_its_settlement_and_refuses_bad_parameters(settle: Settle) -> None:
    m = settle.m
    fresh = deploy(m, "PaymentEscrow", m.addr("deployer"), m.h.usd.address, 100, 10)
    assert fresh.functions.thawDelay().call() == 100  # no settlement yet: the minimum applies
    with reverts("InvalidParameter"):
        m.send("deployer", fresh.functions.setSettlement("0x" + "00" * 20))
    rcpt = m.send("deployer", fresh.functions.setSettlement(settle.batches.address))
    assert events_of(fresh, rcpt, "SettlementSet") == [{"settlement": settle.batches.address}]
    assert fresh.functions.thawDelay().call() == settle.horizon + 10
    with reverts("InvalidParameter"):
        m.send("deployer", settle.escrow.functions.setParameters(0, 10))
    rcpt = m.send("deployer", settle.escrow.functions.setParameters(10**6, 60))
    assert m.event(rcpt, "ParametersSet") == {"minThawDelay": 10**6, "thawMargin": 60}
    assert settle.escrow.functions.thawDelay().call() == 10**6


def test_a_fee_on_transfer_payment_token_is_refused_at_deposit(settle: Settle) -> None:
    """Vulnerable version: credit `amount` whatever arrived; the last withdrawal would fail."""
    m = settle.m
    token = deploy(m, "FeeOnTransferToken")
    esc = deploy(m, "PaymentEscrow", m.addr("deployer"), token.address, 100, 10)
    m.send("client", token.functions.mint(m.addr("client"), 10 * USD))
    m.send("client", token.functions.approve(esc.address, 10 * USD))
    with reverts("TokenTransferShortfall", USD, USD - USD // 100):
        m.send("client", esc.functions.deposit(USD))


def test_staking_refuses_withdrawal_until_the_last_batch_is_past_its_horizon(settle: Settle) -> None:
    """Attack: commit a batch, unbond and withdraw before anyone can prove fraud in it.
    Vulnerable version: `withdraw` checks only the unbonding period."""
    m = settle.m
    _, batch, _, _ = settle.commit("provider", settle.work(1))
    locked = batch.committed_at + settle.horizon
    assert int(m.staking.functions.lockedUntil(m.addr("provider")).call()) == locked
    assert int(settle.batches.functions.lockedUntil(m.addr("provider")).call()) == locked
    m.send("provider", m.staking.functions.requestUnbond(m.stake0 // 2))
    m.clock.advance(m.unbonding_period)
    assert m.clock.now() < locked
    with reverts("StakeLocked", m.addr("provider"), locked):
        m.send("provider", m.staking.functions.withdraw())
    with reverts("OnlySettlement", m.addr("provider")):
        m.send("provider", m.staking.functions.extendLock(m.addr("provider"), 0))
    m.clock.warp(locked)
    rcpt = m.send("provider", m.staking.functions.withdraw())
    assert m.event(rcpt, "StakeWithdrawn")["amount"] == m.stake0 // 2


def test_get_lane_returns_the_lanes_raw_struct(settle: Settle) -> None:
    m, e = settle.m, settle.escrow
    before = tuple(e.functions.getLane(m.addr("client"), m.addr("provider")).call())
    settle.fund_lane("client", {"provider": 2 * USD})
    balance, collected, thawing, thaw_end = e.functions.getLane(m.addr("client"), m.addr("provider")).call()
    assert (balance, collected, thawing, thaw_end) == (before[0] + 2 * USD, *before[1:])
    lane = settle.lane("client", "provider")
    assert (lane.balance, lane.collected, lane.thawing, lane.thaw_end) == (balance, collected, thawing, thaw_end)
