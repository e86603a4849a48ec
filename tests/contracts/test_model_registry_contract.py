"""ModelRegistry: registerModel, updateModel, getModel, activePrice, priceOf; and how price and
status changes reach jobs already in the market."""

from __future__ import annotations

from contract_kit import USD, Market, reverts

from contracts.types import Status

NEW_MODEL = b"\x11" * 32
RUNTIME = b"\x22" * 32


def register(market: Market, model_id: bytes = NEW_MODEL, price: int = 7, name: str = "tiny") -> dict[str, object]:
    rcpt = market.send("deployer", market.h.registry.functions.registerModel(model_id, RUNTIME, price, name))
    return market.event(rcpt, "ModelRegistered")


def test_register_model_stores_it_active(market: Market) -> None:
    assert register(market) == {"modelId": NEW_MODEL, "runtimeHash": RUNTIME, "pricePerUnit": 7, "name": "tiny"}
    r = market.h.registry.functions
    assert tuple(r.getModel(NEW_MODEL).call()) == (RUNTIME, 7, True, "tiny")
    assert r.activePrice(NEW_MODEL).call() == 7
    assert r.priceOf(NEW_MODEL).call() == 7


def test_register_model_reverts_on_zero_id_zero_price_or_a_duplicate(market: Market) -> None:
    with reverts("ZeroModelId"):
        register(market, model_id=b"\x00" * 32)
    with reverts("ZeroPrice"):
        register(market, price=0)
    with reverts("ModelAlreadyRegistered", market.model_id):
        register(market, model_id=market.model_id)


def test_register_and_update_model_are_owner_only(market: Market) -> None:
    r = market.h.registry.functions
    with reverts("OwnableUnauthorizedAccount", market.addr("client")):
        market.send("client", r.registerModel(NEW_MODEL, RUNTIME, 1, "x"))
    with reverts("OwnableUnauthorizedAccount", market.addr("client")):
        market.send("client", r.updateModel(market.model_id, RUNTIME, 1, False))


def test_update_model_changes_runtime_price_and_status(market: Market) -> None:
    r = market.h.registry.functions
    rcpt = market.send("deployer", r.updateModel(market.model_id, RUNTIME, 3, False))
    assert market.event(rcpt, "ModelUpdated") == {
        "modelId": market.model_id, "runtimeHash": RUNTIME, "pricePerUnit": 3, "active": False,
    }
    assert tuple(r.getModel(market.model_id).call())[:3] == (RUNTIME, 3, False)
    with reverts("UnknownModel", market.model_id):
        market.call(r.activePrice(market.model_id))
    assert r.priceOf(market.model_id).call() == 3  # still priced for jobs in flight


def test_update_model_reverts_for_an_unknown_model_or_zero_price(market: Market) -> None:
    r = market.h.registry.functions
    with reverts("UnknownModel", NEW_MODEL):
        market.send("deployer", r.updateModel(NEW_MODEL, RUNTIME, 1, True))
    with reverts("ZeroPrice"):
        market.send("deployer", r.updateModel(market.model_id, RUNTIME, 0, True))


def test_views_revert_for_an_unknown_model(market: Market) -> None:
    r = market.h.registry.functions
    for fn in (r.getModel(NEW_MODEL), r.activePrice(NEW_MODEL), r.priceOf(NEW_MODEL)):
        with reverts("UnknownModel", NEW_MODEL):
            market.call(fn)


def test_a_job_keeps_the_price_it_was_posted_at(market: Market) -> None:
    p = market.post(max_payment=USD)
    market.send("deployer", market.h.registry.functions.updateModel(market.model_id, market.runtime_hash, 50, True))
    claimed = market.claim(p.job_id, p.job).job
    assert market.deliver(p.job_id, claimed, units=1000).job.payment == 1000 * market.price
    assert market.post(max_payment=USD).job.price_per_unit == 50


def test_deactivating_a_model_does_not_strand_a_claimed_job(market: Market) -> None:
    p = market.post()
    claimed = market.claim(p.job_id, p.job).job
    deactivate = market.h.registry.functions.updateModel(market.model_id, market.runtime_hash, market.price, False)
    market.send("deployer", deactivate)
    delivered = market.deliver(p.job_id, claimed).job
    market.clock.warp(delivered.challenge_end)
    assert market.finalize(p.job_id, delivered).job.status == Status.FINALIZED


def test_check_receipt_accepts_a_listed_runtime_and_numerics_class_only(market: Market) -> None:
    from contract_kit import GPU

    r = market.h.registry.functions
    assert market.call(r.checkReceipt(market.model_id, market.runtime_hash, GPU)) == []
    with reverts("RuntimeNotListed", market.model_id, RUNTIME):
        market.call(r.checkReceipt(market.model_id, RUNTIME, GPU))
    with reverts("NumericsClassNotListed", b"fp4".ljust(32, b"\x00")):
        market.call(r.checkReceipt(market.model_id, market.runtime_hash, b"fp4".ljust(32, b"\x00")))
