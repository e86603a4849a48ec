"""The fold of ``PaymentEscrow`` and ``BatchSettlement`` events (registered into the projector's
handler table on import; ``indexer.projector`` imports this module).

The escrow fold mirrors ``PaymentEscrow.sol``: every event carries the lane's (or bond's, or
deposit's) new balance where the contract has it, and the rest (the deposit an allocation drew
from, a seizure's credit to the payer) is the same arithmetic the contract does.
"""

from __future__ import annotations

from typing import Any

from indexer.decode import DecodedEvent
from indexer.projector import Projector, _on, new_row

ESCROW = "PaymentEscrow"
SETTLEMENT = "BatchSettlement"


def _deposit(p: Projector, payer: str) -> dict[str, Any]:
    return p._get("escrow_deposits", (payer,)) or new_row("escrow_deposits", payer=payer)


def _put_deposit(p: Projector, row: dict[str, Any], ev: DecodedEvent) -> None:
    row["updated_block"] = ev.block_number
    p._put("escrow_deposits", (row["payer"],), row, ev)


def _lane(p: Projector, payer: str, provider: str) -> dict[str, Any]:
    return p._get("escrow_lanes", (payer, provider)) or new_row("escrow_lanes", payer=payer, provider=provider)


def _put_lane(p: Projector, row: dict[str, Any], ev: DecodedEvent) -> None:
    row["updated_block"] = ev.block_number
    p._put("escrow_lanes", (row["payer"], row["provider"]), row, ev)


def _bond(p: Projector, provider: str) -> dict[str, Any]:
    return p._get("provider_bonds", (provider,)) or new_row("provider_bonds", provider=provider)


def _put_bond(p: Projector, row: dict[str, Any], ev: DecodedEvent) -> None:
    row["updated_block"] = ev.block_number
    p._put("provider_bonds", (row["provider"],), row, ev)


def _signer(p: Projector, payer: str, signer: str) -> dict[str, Any]:
    return p._get("escrow_signers", (payer, signer)) or new_row("escrow_signers", payer=payer, signer=signer)


def _put_signer(p: Projector, row: dict[str, Any], ev: DecodedEvent) -> None:
    row["updated_block"] = ev.block_number
    p._put("escrow_signers", (row["payer"], row["signer"]), row, ev)


def _case(p: Projector, batch_id: int, index: int) -> dict[str, Any]:
    return p._get("leaf_cases", (batch_id, index)) or new_row("leaf_cases", batch_id=batch_id, leaf_index=index)


def _put_case(p: Projector, row: dict[str, Any], ev: DecodedEvent) -> None:
    row["updated_block"] = ev.block_number
    p._put("leaf_cases", (row["batch_id"], row["leaf_index"]), row, ev)


# ---------------------------------------------------------------------------- escrow


@_on(ESCROW, "Deposited")
def _deposited(p: Projector, ev: DecodedEvent) -> None:
    a = ev.args
    row = _deposit(p, a["payer"])
    row["deposit"] = a["deposit"]
    row["deposited_total"] += a["amount"]
    _put_deposit(p, row, ev)


@_on(ESCROW, "DepositWithdrawn")
def _deposit_withdrawn(p: Projector, ev: DecodedEvent) -> None:
    row = _deposit(p, ev.args["payer"])
    row["deposit"] = ev.args["deposit"]
    _put_deposit(p, row, ev)


@_on(ESCROW, "Allocated")
def _allocated(p: Projector, ev: DecodedEvent) -> None:
    a = ev.args
    dep = _deposit(p, a["payer"])
    dep["deposit"] -= a["amount"]
    _put_deposit(p, dep, ev)
    lane = _lane(p, a["payer"], a["provider"])
    lane["balance"] = a["laneBalance"]
    lane["allocated"] += a["amount"]
    _put_lane(p, lane, ev)


@_on(ESCROW, "ThawStarted")
def _thaw_started(p: Projector, ev: DecodedEvent) -> None:
    a = ev.args
    lane = _lane(p, a["payer"], a["provider"])
    lane.update(thawing=a["amount"], thaw_end=a["thawEnd"])
    _put_lane(p, lane, ev)


@_on(ESCROW, "ThawCancelled")
def _thaw_cancelled(p: Projector, ev: DecodedEvent) -> None:
    lane = _lane(p, ev.args["payer"], ev.args["provider"])
    lane.update(thawing=0, thaw_end=0)
    _put_lane(p, lane, ev)


@_on(ESCROW, "ThawWithdrawn")
def _thaw_withdrawn(p: Projector, ev: DecodedEvent) -> None:
    a = ev.args
    lane = _lane(p, a["payer"], a["provider"])
    lane.update(balance=a["laneBalance"], thawing=0, thaw_end=0)
    lane["withdrawn"] += a["amount"]
    _put_lane(p, lane, ev)


@_on(ESCROW, "Collected")
def _collected(p: Projector, ev: DecodedEvent) -> None:
    a = ev.args
    lane = _lane(p, a["payer"], a["provider"])
    lane.update(balance=a["laneBalance"], collected=a["collected"])
    _put_lane(p, lane, ev)
    p.rows.insert("escrow_collections", (ev.tx_hash, ev.log_index), new_row(
        "escrow_collections", tx_hash=ev.tx_hash, log_index=ev.log_index, payer=a["payer"],
        provider=a["provider"], amount=a["amount"], collected=a["collected"],
        cumulative_value=a["cumulativeValue"], lane_balance=a["laneBalance"], block=ev.block_number,
        timestamp=ev.block_timestamp), ev.block_number)


@_on(ESCROW, "SignerAuthorized")
def _signer_authorized(p: Projector, ev: DecodedEvent) -> None:
    a = ev.args
    row = _signer(p, a["payer"], a["signer"])
    row.update(expiry=a["expiry"], can_allocate=a["canAllocate"], thaw_end=0, revoked=False)
    _put_signer(p, row, ev)


@_on(ESCROW, "SignerThawStarted")
def _signer_thaw(p: Projector, ev: DecodedEvent) -> None:
    row = _signer(p, ev.args["payer"], ev.args["signer"])
    row["thaw_end"] = ev.args["thawEnd"]
    _put_signer(p, row, ev)


@_on(ESCROW, "SignerThawCancelled")
def _signer_thaw_cancelled(p: Projector, ev: DecodedEvent) -> None:
    row = _signer(p, ev.args["payer"], ev.args["signer"])
    row["thaw_end"] = 0
    _put_signer(p, row, ev)


@_on(ESCROW, "SignerRevoked")
def _signer_revoked(p: Projector, ev: DecodedEvent) -> None:
    row = _signer(p, ev.args["payer"], ev.args["signer"])
    row.update(expiry=0, thaw_end=0, can_allocate=False, revoked=True)
    _put_signer(p, row, ev)


@_on(ESCROW, "BondDeposited")
def _bond_deposited(p: Projector, ev: DecodedEvent) -> None:
    row = _bond(p, ev.args["provider"])
    row["amount"] = ev.args["bond"]
    _put_bond(p, row, ev)


@_on(ESCROW, "BondThawStarted")
def _bond_thaw(p: Projector, ev: DecodedEvent) -> None:
    row = _bond(p, ev.args["provider"])
    row.update(thawing=ev.args["amount"], thaw_end=ev.args["thawEnd"])
    _put_bond(p, row, ev)


@_on(ESCROW, "BondWithdrawn")
def _bond_withdrawn(p: Projector, ev: DecodedEvent) -> None:
    row = _bond(p, ev.args["provider"])
    row.update(amount=ev.args["bond"], thawing=0, thaw_end=0)
    _put_bond(p, row, ev)


@_on(ESCROW, "BondSeized")
def _bond_seized(p: Projector, ev: DecodedEvent) -> None:
    a = ev.args
    row = _bond(p, a["provider"])
    row["amount"] = a["bond"]
    row["seized_total"] += a["amount"]
    _put_bond(p, row, ev)
    dep = _deposit(p, a["payer"])
    dep["deposit"] += a["amount"]
    _put_deposit(p, dep, ev)


@_on(ESCROW, "ParametersSet")
def _escrow_params(p: Projector, ev: DecodedEvent) -> None:
    p._param("escrow.min_thaw_delay", ev.args["minThawDelay"], ev)
    p._param("escrow.thaw_margin", ev.args["thawMargin"], ev)


@_on(ESCROW, "SettlementSet")
def _escrow_settlement(p: Projector, ev: DecodedEvent) -> None:
    p._param("escrow.settlement", ev.args["settlement"], ev)


@_on("Staking", "SettlementSet")
def _staking_settlement(p: Projector, ev: DecodedEvent) -> None:
    p._param("staking.settlement", ev.args["settlement"], ev)


# ---------------------------------------------------------------------------- batches


@_on(SETTLEMENT, "BatchCommitted")
def _batch_committed(p: Projector, ev: DecodedEvent) -> None:
    a = ev.args
    p._put("batches", (a["batchId"],), new_row(
        "batches", batch_id=a["batchId"], provider=a["provider"], root=a["root"], count=a["count"],
        units=a["units"], value=a["value"], committed_at=a["committedAt"], challenge_end=a["challengeEnd"],
        block=ev.block_number, tx_hash=ev.tx_hash), ev)


@_on(SETTLEMENT, "LeafDemanded")
def _leaf_demanded(p: Projector, ev: DecodedEvent) -> None:
    a = ev.args
    row = _case(p, a["batchId"], a["index"])
    row.update(status="demanded", challenger=a["challenger"], bond=a["bond"], deadline=a["deadline"])
    _put_case(p, row, ev)


@_on(SETTLEMENT, "LeafRevealed")
def _leaf_revealed(p: Projector, ev: DecodedEvent) -> None:
    a = ev.args
    leaf = a["leaf"]
    row = _case(p, a["batchId"], a["index"])
    row.update(status="revealed", payer=leaf["payer"], value=leaf["value"], output_hash=leaf["outputHash"],
               bond=0, deadline=a["challengeDeadline"])
    _put_case(p, row, ev)


@_on(SETTLEMENT, "LeafChallenged")
def _leaf_challenged(p: Projector, ev: DecodedEvent) -> None:
    a = ev.args
    row = _case(p, a["batchId"], a["index"])
    row.update(status="disputed", challenger=a["challenger"], payer=a["payer"], value=a["value"],
               output_hash=a["outputHash"], bond=a["bond"], deadline=a["deadline"])
    _put_case(p, row, ev)


@_on(SETTLEMENT, "LeafUpheld")
def _leaf_upheld(p: Projector, ev: DecodedEvent) -> None:
    a = ev.args
    row = _case(p, a["batchId"], a["index"])
    row.update(status="upheld", bond=0, by_default=a["byDefault"])
    _put_case(p, row, ev)


@_on(SETTLEMENT, "LeafFraudProven")
def _leaf_fraud(p: Projector, ev: DecodedEvent) -> None:
    a = ev.args
    row = _case(p, a["batchId"], a["index"])
    row.update(status="fraud", bond=0, challenger=a["challenger"], payer=a["payer"], withheld=a["withheld"],
               slashed=a["slashed"], refunded=a["refunded"], challenger_reward=a["challengerReward"])
    _put_case(p, row, ev)


@_on(SETTLEMENT, "PriceQuoted")
def _price_quoted(p: Projector, ev: DecodedEvent) -> None:
    a = ev.args
    p._put("provider_prices", (a["provider"], a["modelId"]), new_row(
        "provider_prices", provider=a["provider"], model_id=a["modelId"], price=a["price"],
        updated_block=ev.block_number), ev)


@_on(SETTLEMENT, "PriceCeilingSet")
def _price_ceiling(p: Projector, ev: DecodedEvent) -> None:
    a = ev.args
    p._put("price_ceilings", (a["modelId"],), new_row(
        "price_ceilings", model_id=a["modelId"], ceiling=a["ceiling"], updated_block=ev.block_number), ev)


@_on(SETTLEMENT, "ParamsSet")
def _settlement_params(p: Projector, ev: DecodedEvent) -> None:
    for name, value in ev.args["params"].items():
        p._param(f"settlement.{name}", value, ev)
