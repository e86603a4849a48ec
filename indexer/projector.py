"""The fold of decoded events into the projection tables.

Pure logic over a :class:`RowStore` (rows as plain dicts, keyed by primary-key tuples), so the
same code serves live indexing, reorg replays and ``rebuild``. A job row's record fields and
status come from the protocol's fold (``contracts.jobfold.job_changes``, the one the CLI and the
worker rebuild jobs with), its status written as the label of ``contracts.types.Status``; this
module adds what only the index keeps (when and in which transaction each state happened,
amounts paid out, penalties). The stake fold mirrors ``Staking.sol`` (including the
collateral lock and release the market performs without a staking event).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from sqlmodel import SQLModel

from common.index_models import PROJECTION_TABLES
from contracts.jobfold import job_changes
from contracts.jobstate import OUTCOME_STATE, ChallengeState
from contracts.types import Outcome, Status
from indexer.decode import DecodedEvent

log = logging.getLogger(__name__)

ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
Key = tuple[Any, ...]

#: table name -> primary key column names, in order
def _table_of(model: type[SQLModel]) -> Any:
    return model.__table__  # type: ignore[attr-defined]


PRIMARY_KEYS: dict[str, tuple[str, ...]] = {
    _table_of(m).name: tuple(c.name for c in _table_of(m).primary_key.columns)
    for m in PROJECTION_TABLES
}
_MODELS: dict[str, type[SQLModel]] = {_table_of(m).name: m for m in PROJECTION_TABLES}


_DEFAULTS: dict[str, dict[str, Any]] = {}


def new_row(table: str, **values: Any) -> dict[str, Any]:
    """A full row of ``table`` with the model's defaults, overridden by ``values``."""
    defaults = _DEFAULTS.get(table)
    if defaults is None:
        fields = _MODELS[table].model_fields
        defaults = _DEFAULTS[table] = {
            n: f.get_default(call_default_factory=True) for n, f in fields.items()}
    row = {k: (list(v) if isinstance(v, list) else v) for k, v in defaults.items()}
    row.update(values)
    return row


class RowStore(Protocol):
    def get(self, table: str, key: Key) -> dict[str, Any] | None:
        """A copy of the row (the caller may change it and ``put`` it back), or None."""

    def put(self, table: str, key: Key, row: dict[str, Any], block: int) -> None:
        """Writes the row; ``block`` is the block of the event that changed it."""

    def insert(self, table: str, key: Key, row: dict[str, Any], block: int) -> None:
        """Writes a row known not to exist yet (event-keyed tables)."""


Handler = Callable[["Projector", DecodedEvent], None]
_HANDLERS: dict[tuple[str, str], Handler] = {}


def _on(contract: str, name: str) -> Callable[[Handler], Handler]:
    def deco(f: Handler) -> Handler:
        _HANDLERS[(contract, name)] = f
        return f
    return deco


def touches(ev: DecodedEvent) -> list[tuple[str, Key]]:
    """The existing rows an event reads, for batched prefetching (a hint; misses still load)."""
    a = ev.args
    if ev.contract == "JobMarket":
        jid = a.get("jobId")
        if ev.name == "JobPosted":
            return [("jobs", (jid,))]
        if ev.name == "JobClaimed":
            return [("jobs", (jid,)), ("providers", (a["provider"],))]
        if ev.name == "ReceiptSubmitted":
            return [("jobs", (jid,)), ("receipts", (jid,))]
        if ev.name == "JobFinalized":
            return [("jobs", (jid,)), ("providers", (a["provider"],)), ("balances", (a["provider"],)),
                    ("balances", (a["treasury"],)), ("balances", (a["client"],))]
        if ev.name == "JobRefunded":
            return [("jobs", (jid,)), ("balances", (a["client"],))]
        if ev.name in ("JobChallenged", "CommitteeDrawn", "DisputeResolved", "ClaimReleased"):
            return [("jobs", (jid,)), ("challenges", (jid,))]
        if ev.name in ("VoteCommitted", "VoteRevealed"):
            return [("jobs", (jid,)), ("challenges", (jid,)), ("votes", (jid, a["voter"]))]
        if ev.name == "MemberSettled":
            return [("votes", (jid, a["member"])), ("providers", (a["member"],))]
        if ev.name == "BalanceCredited":
            return [("balances", (a["account"],))]
        if ev.name == "Withdrawn":
            return [("balances", (a["account"],))]
        return []
    if ev.contract == "Staking":
        if ev.name == "ModelServingSet":
            return [("provider_models", (a["provider"], a["modelId"]))]
        if "provider" in a:
            return [("providers", (a["provider"],))]
        return []
    if ev.contract == "ModelRegistry" and "modelId" in a:
        return [("models", (a["modelId"],))]
    return []  # the rest (parameters, pauses) are rare: loaded when touched


class Projector:
    """Applies events in chain order to a :class:`RowStore`."""

    def __init__(self, rows: RowStore) -> None:
        self.rows = rows
        #: the job the latest market event of a transaction was about (links slashes to jobs)
        self._tx_job: dict[str, int] = {}
        #: slashes of the current transaction seen before any market event named their job (a
        #: dispute's settlement slashes first and reports the job after)
        self._tx_unlinked: dict[str, list[Key]] = {}

    def apply(self, ev: DecodedEvent) -> None:
        handler = _HANDLERS.get((ev.contract, ev.name))
        if ev.contract == "JobMarket" and "jobId" in ev.args:
            job_id = int(ev.args["jobId"])
            self._tx_job = {ev.tx_hash: job_id}
            for key in self._tx_unlinked.pop(ev.tx_hash, []):
                row = self._get("slashes", key)
                if row is not None and row["job_id"] is None:
                    row["job_id"] = job_id
                    self._put("slashes", key, row, ev)
        if handler is not None:
            handler(self, ev)

    def apply_all(self, events: Iterable[DecodedEvent]) -> None:
        for ev in events:
            self.apply(ev)

    # ------------------------------------------------------------ helpers

    def _get(self, table: str, key: Key) -> dict[str, Any] | None:
        return self.rows.get(table, key)

    def _put(self, table: str, key: Key, row: dict[str, Any], ev: DecodedEvent) -> None:
        self.rows.put(table, key, row, ev.block_number)

    def _job(self, ev: DecodedEvent) -> dict[str, Any] | None:
        jid = int(ev.args["jobId"])
        row = self._get("jobs", (jid,))
        if row is None:
            log.warning("%s for unknown job %d (indexing started after it was posted?) "
                        "block=%d tx=%s", ev.name, jid, ev.block_number, ev.tx_hash)
        return row

    def _fold_job(self, row: dict[str, Any], ev: DecodedEvent) -> Status | None:
        """Applies the protocol's job fold to a ``jobs`` row; returns the state it moved to."""
        changes = job_changes(ev.name, ev.args)
        if changes is None:
            return None
        status: Status = changes.pop("status")
        row.update(changes, status=status.label, updated_block=ev.block_number)
        return status

    def _stamp(self, row: dict[str, Any], state: str, ev: DecodedEvent) -> None:
        row[f"{state}_block"] = ev.block_number
        row[f"{state}_tx"] = ev.tx_hash
        row[f"{state}_at"] = ev.block_timestamp
        row["updated_block"] = ev.block_number

    def _provider(self, address: str, ev: DecodedEvent) -> dict[str, Any]:
        return self._get("providers", (address,)) or new_row("providers", address=address)

    def _credit(self, account: str, amount: int, ev: DecodedEvent) -> None:
        if amount == 0:
            return
        row = self._get("balances", (account,)) or new_row("balances", account=account)
        row["credited"] += amount
        row["balance"] += amount
        row["updated_block"] = ev.block_number
        self._put("balances", (account,), row, ev)

    def _unlock(self, provider: str, amount: int, ev: DecodedEvent, *, done: bool = False) -> None:
        if provider == ZERO_ADDRESS:
            return
        p = self._provider(provider, ev)
        if amount > p["locked"]:
            log.error("collateral release %d exceeds locked %d for %s block=%d tx=%s",
                      amount, p["locked"], provider, ev.block_number, ev.tx_hash)
            amount = p["locked"]
        p["locked"] -= amount
        if done:
            p["jobs_done"] += 1
        p["updated_block"] = ev.block_number
        self._put("providers", (provider,), p, ev)

    def _param(self, key: str, value: Any, ev: DecodedEvent) -> None:
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        self._put("params", (key,), new_row(
            "params", key=key, value=text, updated_block=ev.block_number), ev)


# ---------------------------------------------------------------------------- registry


@_on("ModelRegistry", "ModelRegistered")
def _model_registered(p: Projector, ev: DecodedEvent) -> None:
    a = ev.args
    p._put("models", (a["modelId"],), new_row(
        "models", model_id=a["modelId"], name=a["name"], runtime_hash=a["runtimeHash"],
        price_per_unit=a["pricePerUnit"], active=True, registered_block=ev.block_number,
        updated_block=ev.block_number), ev)


@_on("ModelRegistry", "ModelUpdated")
def _model_updated(p: Projector, ev: DecodedEvent) -> None:
    a = ev.args
    row = p._get("models", (a["modelId"],)) or new_row("models", model_id=a["modelId"])
    row.update(runtime_hash=a["runtimeHash"], price_per_unit=a["pricePerUnit"],
               active=a["active"], updated_block=ev.block_number)
    p._put("models", (a["modelId"],), row, ev)


# ---------------------------------------------------------------------------- staking


@_on("Staking", "ProviderRegistered")
@_on("Staking", "ProviderUpdated")
def _provider_meta(p: Projector, ev: DecodedEvent) -> None:
    a = ev.args
    row = p._provider(a["provider"], ev)
    row.update(endpoint=a["endpoint"], region=a["region"], gpu_class=a["gpuClass"],
               updated_block=ev.block_number)
    if ev.name == "ProviderRegistered":
        row["registered_block"] = ev.block_number
    p._put("providers", (a["provider"],), row, ev)


@_on("Staking", "ModelServingSet")
def _serving(p: Projector, ev: DecodedEvent) -> None:
    a = ev.args
    key = (a["provider"], a["modelId"])
    p._put("provider_models", key, new_row(
        "provider_models", provider=a["provider"], model_id=a["modelId"], serving=a["serving"],
        updated_block=ev.block_number), ev)


@_on("Staking", "Staked")
def _staked(p: Projector, ev: DecodedEvent) -> None:
    row = p._provider(ev.args["provider"], ev)
    row.update(staked=ev.args["total"], updated_block=ev.block_number)
    p._put("providers", (ev.args["provider"],), row, ev)


@_on("Staking", "UnbondRequested")
def _unbond(p: Projector, ev: DecodedEvent) -> None:
    a = ev.args
    row = p._provider(a["provider"], ev)
    row.update(staked=row["staked"] - a["amount"], unbonding=a["unbonding"],
               unbond_ready_at=a["readyAt"], updated_block=ev.block_number)
    p._put("providers", (a["provider"],), row, ev)


@_on("Staking", "StakeWithdrawn")
def _stake_withdrawn(p: Projector, ev: DecodedEvent) -> None:
    row = p._provider(ev.args["provider"], ev)
    row.update(unbonding=0, updated_block=ev.block_number)
    p._put("providers", (ev.args["provider"],), row, ev)


@_on("Staking", "Slashed")
def _slashed(p: Projector, ev: DecodedEvent) -> None:
    a = ev.args
    row = p._provider(a["provider"], ev)
    from_unbonding = a["amount"] - a["fromStaked"]
    row["staked"] -= a["fromStaked"]
    row["unbonding"] -= from_unbonding
    # `locked` follows the market's events (JobRefunded, ClaimReleased, MemberSettled): a slash
    # never takes locked stake, and what it unlocks is released by those events.
    row["jailed_until"] = a["jailedUntil"]
    row["slashed_total"] += a["amount"]
    row["slashes"] += 1
    row["updated_block"] = ev.block_number
    p._put("providers", (a["provider"],), row, ev)
    p.rows.insert("slashes", (ev.tx_hash, ev.log_index), new_row(
        "slashes", tx_hash=ev.tx_hash, log_index=ev.log_index, provider=a["provider"],
        recipient=a["recipient"], amount=a["amount"], from_staked=a["fromStaked"],
        jailed_until=a["jailedUntil"], job_id=p._tx_job.get(ev.tx_hash), block=ev.block_number,
        timestamp=ev.block_timestamp), ev.block_number)
    if ev.tx_hash not in p._tx_job:
        p._tx_unlinked = {ev.tx_hash: [*p._tx_unlinked.get(ev.tx_hash, []), (ev.tx_hash, ev.log_index)]}


@_on("Staking", "ParametersSet")
def _staking_params(p: Projector, ev: DecodedEvent) -> None:
    a = ev.args
    p._param("staking.min_stake", a["minStake"], ev)
    p._param("staking.unbonding_period", a["unbondingPeriod"], ev)
    p._param("staking.jail_period", a["jailPeriod"], ev)


# ---------------------------------------------------------------------------- market


@_on("JobMarket", "JobPosted")
def _posted(p: Projector, ev: DecodedEvent) -> None:
    a = ev.args
    row = new_row("jobs", job_id=a["jobId"], relayer=a["relayer"])
    p._fold_job(row, ev)
    p._stamp(row, Status.POSTED.label, ev)
    p._put("jobs", (a["jobId"],), row, ev)


@_on("JobMarket", "JobClaimed")
def _claimed(p: Projector, ev: DecodedEvent) -> None:
    a = ev.args
    job = p._job(ev)
    if job is not None:
        p._fold_job(job, ev)
        p._stamp(job, Status.CLAIMED.label, ev)
        p._put("jobs", (a["jobId"],), job, ev)
    prov = p._provider(a["provider"], ev)
    prov["locked"] += a["collateral"]
    prov["updated_block"] = ev.block_number
    p._put("providers", (a["provider"],), prov, ev)


@_on("JobMarket", "ReceiptSubmitted")
def _delivered(p: Projector, ev: DecodedEvent) -> None:
    a = ev.args
    job = p._job(ev)
    if job is not None:
        p._fold_job(job, ev)
        p._stamp(job, Status.DELIVERED.label, ev)
        p._put("jobs", (a["jobId"],), job, ev)
    p._put("receipts", (a["jobId"],), new_row(
        "receipts", job_id=a["jobId"], provider=a["provider"], output_hash=a["outputHash"],
        units=a["units"], model_hash=a["modelHash"], runtime_hash=a["runtimeHash"],
        gpu_class=a["gpuClass"], payment=a["payment"], challenge_end=a["challengeEnd"],
        block=ev.block_number, tx_hash=ev.tx_hash, timestamp=ev.block_timestamp), ev)


@_on("JobMarket", "JobChallenged")
def _challenged(p: Projector, ev: DecodedEvent) -> None:
    a = ev.args
    job = p._job(ev)
    if job is not None:
        p._fold_job(job, ev)
        p._stamp(job, Status.CHALLENGED.label, ev)
        p._put("jobs", (a["jobId"],), job, ev)
    p._put("challenges", (a["jobId"],), new_row(
        "challenges", job_id=a["jobId"], challenger=a["challenger"], bond=a["bond"],
        committee=[], commit_end=0, reveal_end=0, draw_block=a["drawBlock"],
        status=ChallengeState.OPEN.value, block=ev.block_number, tx_hash=ev.tx_hash, timestamp=ev.block_timestamp), ev)


@_on("JobMarket", "CommitteeDrawn")
def _drawn(p: Projector, ev: DecodedEvent) -> None:
    a = ev.args
    ch = p._get("challenges", (a["jobId"],))
    if ch is not None:
        ch.update(committee=list(a["seats"]), commit_end=a["commitEnd"], reveal_end=a["revealEnd"],
                  status=(ChallengeState.VOTING if a["seats"] else ChallengeState.NO_COMMITTEE).value)
        p._put("challenges", (a["jobId"],), ch, ev)


@_on("JobMarket", "ClaimReleased")
def _claim_released(p: Projector, ev: DecodedEvent) -> None:
    a = ev.args
    job = p._job(ev)
    if job is not None:
        p._unlock(job["provider"], job["collateral"], ev)
        p._fold_job(job, ev)
        job["penalty"] = a["penalty"]
        p._put("jobs", (a["jobId"],), job, ev)


@_on("JobMarket", "VoteCommitted")
def _vote_committed(p: Projector, ev: DecodedEvent) -> None:
    a = ev.args
    p._put("votes", (a["jobId"], a["voter"]), new_row(
        "votes", job_id=a["jobId"], voter=a["voter"], commitment=a["commitment"], bond=a["bond"],
        committed_block=ev.block_number, committed_tx=ev.tx_hash,
        committed_at=ev.block_timestamp), ev)
    if a["bond"]:
        prov = p._provider(a["voter"], ev)
        prov["locked"] += a["bond"]
        prov["updated_block"] = ev.block_number
        p._put("providers", (a["voter"],), prov, ev)


@_on("JobMarket", "VoteRevealed")
def _vote_revealed(p: Projector, ev: DecodedEvent) -> None:
    a = ev.args
    job = p._job(ev)
    agrees = job is not None and a["outputHash"] == job["output_hash"] and a["units"] == job["units"]
    key = (a["jobId"], a["voter"])
    vote = p._get("votes", key)
    if vote is not None:
        vote.update(output_hash=a["outputHash"], units=a["units"], agrees=agrees, revealed_block=ev.block_number,
                    revealed_tx=ev.tx_hash, revealed_at=ev.block_timestamp)
        p._put("votes", key, vote, ev)
    ch = p._get("challenges", (a["jobId"],))
    if ch is not None:
        seats = sum(1 for m in ch["committee"] if str(m).lower() == str(a["voter"]).lower()) or 1
        ch["agree" if agrees else "disagree"] += seats
        p._put("challenges", (a["jobId"],), ch, ev)


@_on("JobMarket", "MemberSettled")
def _member_settled(p: Projector, ev: DecodedEvent) -> None:
    """A member's bond (locked at its commit) is released when its dispute settles."""
    a = ev.args
    vote = p._get("votes", (a["jobId"], a["member"]))
    if vote is not None and vote.get("bond"):
        p._unlock(a["member"], vote["bond"], ev)


@_on("JobMarket", "DisputeResolved")
def _resolved(p: Projector, ev: DecodedEvent) -> None:
    a = ev.args
    outcome = Outcome(int(a["outcome"]))
    escalated = outcome == Outcome.ESCALATED
    ch = p._get("challenges", (a["jobId"],))
    if ch is not None:
        if escalated:
            ch.update(status=ChallengeState.ESCALATED.value, escalation_end=a["escalationEnd"])
        else:
            ch.update(status=OUTCOME_STATE[outcome].value, provider_won=outcome == Outcome.PROVIDER_WON,
                      by_governance=a["byGovernance"],
                      slashed=a["slashed"], resolved_block=ev.block_number,
                      resolved_tx=ev.tx_hash, resolved_at=ev.block_timestamp)
        p._put("challenges", (a["jobId"],), ch, ev)
    if escalated:
        return
    job = p._job(ev)
    if job is None:
        return
    p._fold_job(job, ev)  # provider won: delivered again; otherwise refunded (JobRefunded follows)
    p._put("jobs", (a["jobId"],), job, ev)


@_on("JobMarket", "JobFinalized")
def _finalized(p: Projector, ev: DecodedEvent) -> None:
    a = ev.args
    job = p._job(ev)
    collateral = 0
    if job is not None:
        collateral = job["collateral"]
        p._fold_job(job, ev)
        job.update(provider_amount=a["providerAmount"], fee=a["fee"], client_refund=a["clientRefund"])
        p._stamp(job, Status.FINALIZED.label, ev)
        p._put("jobs", (a["jobId"],), job, ev)
    p._credit(a["provider"], a["providerAmount"], ev)
    p._credit(a["treasury"], a["fee"], ev)
    p._credit(a["client"], a["clientRefund"], ev)
    p._unlock(a["provider"], collateral, ev, done=True)


@_on("JobMarket", "JobRefunded")
def _refunded(p: Projector, ev: DecodedEvent) -> None:
    a = ev.args
    job = p._job(ev)
    if job is not None:
        p._fold_job(job, ev)
        job.update(refund_amount=a["amount"], penalty=a["penalty"])
        p._stamp(job, Status.REFUNDED.label, ev)
        p._put("jobs", (a["jobId"],), job, ev)
        p._unlock(job["provider"], job["collateral"], ev)
    p._credit(a["client"], a["amount"], ev)


@_on("JobMarket", "BalanceCredited")
def _credited(p: Projector, ev: DecodedEvent) -> None:
    # Bonds returned, the bond's rest to a winning provider, members' payment-token rewards.
    p._credit(ev.args["account"], ev.args["amount"], ev)


@_on("JobMarket", "Withdrawn")
def _withdrawn(p: Projector, ev: DecodedEvent) -> None:
    a = ev.args
    row = p._get("balances", (a["account"],)) or new_row("balances", account=a["account"])
    if a["amount"] > row["balance"]:
        log.error("withdrawal %d exceeds indexed balance %d of %s block=%d tx=%s",
                  a["amount"], row["balance"], a["account"], ev.block_number, ev.tx_hash)
    row["balance"] = max(0, row["balance"] - a["amount"])
    row["withdrawn"] += a["amount"]
    row["updated_block"] = ev.block_number
    p._put("balances", (a["account"],), row, ev)
    p.rows.insert("withdrawals", (ev.tx_hash, ev.log_index), new_row(
        "withdrawals", tx_hash=ev.tx_hash, log_index=ev.log_index, account=a["account"],
        to=a["to"], amount=a["amount"], block=ev.block_number, timestamp=ev.block_timestamp),
        ev.block_number)


_PARAM_KEYS = {
    "treasury": "market.treasury", "feeBps": "market.fee_bps",
    "challengeBond": "market.challenge_bond", "refundPenaltyBps": "market.refund_penalty_bps",
    "sampleRateBps": "market.sample_rate_bps", "committeeSize": "market.committee_size",
    "challengeWindow": "market.challenge_window", "commitPeriod": "market.commit_period",
    "revealPeriod": "market.reveal_period", "claimCollateral": "market.claim_collateral",
    "collateralPerPaymentWei": "market.collateral_per_payment_wei", "claimTimeout": "market.claim_timeout",
    "memberBond": "market.member_bond", "memberPenaltyBps": "market.member_penalty_bps",
    "challengerRewardBps": "market.challenger_reward_bps", "committeeRewardBps": "market.committee_reward_bps",
    "escalationPeriod": "market.escalation_period", "maxChallengerReward": "market.max_challenger_reward",
}


@_on("JobMarket", "ParamsSet")
def _market_params(p: Projector, ev: DecodedEvent) -> None:
    for name, value in ev.args["params"].items():
        p._param(_PARAM_KEYS.get(name, f"market.{name}"), value, ev)


@_on("JobMarket", "Paused")
@_on("JobMarket", "Unpaused")
def _paused(p: Projector, ev: DecodedEvent) -> None:
    p._param("market.paused", ev.name == "Paused", ev)


class MemoryStore:
    """A :class:`RowStore` over plain dicts: folds events with no database (checks, tests)."""

    def __init__(self) -> None:
        self.tables: dict[str, dict[Key, dict[str, Any]]] = {t: {} for t in PRIMARY_KEYS}

    def get(self, table: str, key: Key) -> dict[str, Any] | None:
        row = self.tables[table].get(key)
        return None if row is None else dict(row)

    def put(self, table: str, key: Key, row: dict[str, Any], block: int) -> None:
        self.tables[table][key] = row

    def insert(self, table: str, key: Key, row: dict[str, Any], block: int) -> None:
        self.tables[table][key] = row


def fold(events: Iterable[DecodedEvent]) -> dict[str, dict[Key, dict[str, Any]]]:
    """Every projection table as ``{primary key: row}``, folded from ``events`` in order."""
    store = MemoryStore()
    Projector(store).apply_all(events)
    return store.tables


# Batched settlement handlers register themselves into _HANDLERS on import.
import indexer.projector_settlement  # noqa: E402, F401
