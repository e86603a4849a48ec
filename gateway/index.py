"""Read-only queries over the indexer's tables (:mod:`common.index_models`).

Everything the gateway says about jobs, providers, models and balances comes from here: data
flows chain -> indexer -> database -> gateway, and the gateway never reads the chain for what
the indexer already holds. Amount columns are ``U256`` (text on SQLite), so sums are taken in
Python, as the indexer's docs ask.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, func, select

from common.index_models import (
    Balance,
    Block,
    Challenge,
    Checkpoint,
    Job,
    Model,
    Param,
    Provider,
    ProviderModel,
    RawEvent,
)
from common.index_models import Receipt as ReceiptRow
from contracts import jobstate
from gateway import schemas
from gateway.errors import NotFoundError

ZERO_ADDRESS = "0x" + "00" * 20
ZERO32 = "0x" + "00" * 32
STATES = jobstate.LABELS
OPEN_STATES = jobstate.labels(jobstate.OPEN)
TERMINAL_STATES = frozenset(jobstate.labels(jobstate.TERMINAL))
JOB_EVENTS = (
    "JobPosted", "JobClaimed", "ReceiptSubmitted", "JobChallenged", "DisputeResolved",
    "JobFinalized", "JobRefunded",
)


def _amt(v: int | None) -> str | None:
    return None if v is None else str(int(v))


def job_out(j: Job) -> schemas.JobOut:
    history = []
    for s in STATES:
        block = getattr(j, f"{s}_block")
        if block is not None:
            history.append(schemas.StateEntry(
                status=s, block=block, tx_hash=getattr(j, f"{s}_tx") or "", at=getattr(j, f"{s}_at") or 0))
    history.sort(key=lambda e: (e.block, STATES.index(e.status)))
    return schemas.JobOut(
        job_id=j.job_id, status=j.status,
        client=j.client, provider=None if j.provider == ZERO_ADDRESS else j.provider,
        model_id=j.model_id, input_hash=j.input_hash,
        output_hash=None if j.output_hash == ZERO32 else j.output_hash,
        max_payment=str(j.max_payment), price_per_unit=str(j.price_per_unit), payment=str(j.payment),
        collateral=str(j.collateral), units=str(j.units), deadline=j.deadline, challenge_end=j.challenge_end,
        relayer=j.relayer, provider_amount=_amt(j.provider_amount), fee=_amt(j.fee),
        client_refund=_amt(j.client_refund), refund_amount=_amt(j.refund_amount), penalty=_amt(j.penalty),
        history=history, updated_block=j.updated_block,
    )


def receipt_out(r: ReceiptRow) -> schemas.ReceiptOut:
    return schemas.ReceiptOut(
        job_id=r.job_id, provider=r.provider, output_hash=r.output_hash, units=str(r.units),
        model_hash=r.model_hash, runtime_hash=r.runtime_hash, gpu_class=r.gpu_class,
        payment=str(r.payment), challenge_end=r.challenge_end, block=r.block, tx_hash=r.tx_hash,
        timestamp=r.timestamp,
    )


def get_job(s: Session, job_id: int) -> Job:
    j = s.get(Job, job_id)
    if j is None:
        raise NotFoundError(f"no job {job_id} in the index (a job just relayed appears within a block or two)",
                            reason="job_not_found", job_id=job_id)
    return j


def get_receipt(s: Session, job_id: int) -> ReceiptRow | None:
    return s.get(ReceiptRow, job_id)


def get_challenge(s: Session, job_id: int) -> Challenge | None:
    return s.get(Challenge, job_id)


def list_jobs(
    s: Session, *, client: str | None = None, provider: str | None = None, status: str | None = None,
    model_id: str | None = None, limit: int = 50, cursor: int | None = None,
) -> tuple[list[Job], int | None]:
    """Newest first; ``cursor`` is the last job id of the previous page."""
    q = select(Job)
    if client:
        q = q.where(Job.client == client)
    if provider:
        q = q.where(Job.provider == provider)
    if status:
        q = q.where(Job.status == status)
    if model_id:
        q = q.where(Job.model_id == model_id)
    if cursor is not None:
        q = q.where(col(Job.job_id) < cursor)
    rows = list(s.exec(q.order_by(col(Job.job_id).desc()).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1].job_id if more and rows else None)


def chain_time(s: Session) -> tuple[int | None, int | None]:
    """(latest indexed block, its timestamp)."""
    b = s.exec(select(Block).order_by(col(Block.number).desc()).limit(1)).first()
    if b is not None:
        return b.number, b.timestamp
    cp = s.get(Checkpoint, 1)
    return (cp.block_number, None) if cp else (None, None)


def param(s: Session, key: str) -> str | None:
    p = s.get(Param, key)
    return p.value if p else None


@dataclass(frozen=True)
class ProviderView:
    row: Provider
    status: str
    models: list[str]


def provider_status(p: Provider, now: int, min_stake: int) -> str:
    if p.jailed_until > now:
        return "jailed"
    if p.staked >= max(min_stake, 1):
        return "active"
    if p.unbonding > 0:
        return "unbonding"
    return "inactive"


def providers(s: Session, now: int, min_stake: int, address: str | None = None) -> list[ProviderView]:
    q = select(Provider)
    if address:
        q = q.where(Provider.address == address)
    rows = list(s.exec(q.order_by(col(Provider.registered_block), col(Provider.address))))
    served: dict[str, list[str]] = {}
    mq = select(ProviderModel).where(ProviderModel.serving == True)  # noqa: E712 - SQL expression
    if address:
        mq = mq.where(ProviderModel.provider == address)
    for pm in s.exec(mq):
        served.setdefault(pm.provider, []).append(pm.model_id)
    return [ProviderView(p, provider_status(p, now, min_stake), sorted(served.get(p.address, []))) for p in rows]


def provider_out(v: ProviderView) -> schemas.ProviderOut:
    p = v.row
    return schemas.ProviderOut(
        address=p.address, endpoint=p.endpoint, region=p.region, gpu_class=p.gpu_class,
        status=v.status,  # type: ignore[arg-type]
        staked=str(p.staked), locked=str(p.locked), unbonding=str(p.unbonding), jailed_until=p.jailed_until,
        jobs_done=p.jobs_done, slashes=p.slashes, slashed_total=str(p.slashed_total), models=v.models,
    )


def models(s: Session) -> list[tuple[Model, int]]:
    counts: dict[str, int] = {}
    for pm in s.exec(select(ProviderModel).where(ProviderModel.serving == True)):  # noqa: E712
        counts[pm.model_id] = counts.get(pm.model_id, 0) + 1
    return [(m, counts.get(m.model_id, 0)) for m in s.exec(select(Model).order_by(col(Model.registered_block)))]


def find_model(s: Session, name_or_id: str) -> Model | None:
    """A model by its 0x id or its registered name."""
    key = name_or_id.strip()
    if key.lower().startswith("0x") and len(key) == 66:
        return s.get(Model, key.lower())
    return s.exec(select(Model).where(Model.name == key).order_by(col(Model.registered_block))).first()


def stats(s: Session, chain_id: int, min_stake: int) -> schemas.StatsOut:
    block, now = chain_time(s)
    by_status = {st: 0 for st in STATES}
    for st, n in s.exec(select(Job.status, func.count()).group_by(Job.status)):
        by_status[st] = int(n)
    total = sum(by_status.values())
    recent = 0
    latencies: list[int] = []
    if now is not None:
        recent = int(s.exec(select(func.count()).select_from(Job).where(col(Job.posted_at) >= now - 600)).one())
    for posted, delivered in s.exec(
        select(Job.posted_at, Job.delivered_at).where(col(Job.delivered_at).is_not(None))
        .order_by(col(Job.delivered_block).desc()).limit(200)
    ):
        if posted is not None and delivered is not None:
            latencies.append(delivered - posted)
    views = providers(s, now or 0, min_stake)
    active = [v for v in views if v.status == "active"]
    prices = [schemas.PriceOut(model_id=m.model_id, name=m.name, price_per_unit=str(m.price_per_unit))
              for m, _ in models(s) if m.active]
    return schemas.StatsOut(
        chain_id=chain_id, indexed_block=block, chain_time=now, jobs_total=total, jobs_by_status=by_status,
        jobs_per_minute=round(recent / 10, 3), providers_total=len(views), providers_active=len(active),
        active_stake=str(sum(v.row.staked for v in active)),
        median_latency_s=float(statistics.median(latencies)) if latencies else None, prices=prices,
    )


def market_balance(s: Session, address: str) -> Balance | None:
    return s.get(Balance, address)


def escrowed(s: Session, client: str) -> int:
    rows = s.exec(select(Job.max_payment).where(Job.client == client, col(Job.status).in_(OPEN_STATES)))
    return sum(int(v) for v in rows)


@dataclass(frozen=True)
class FeedEvent:
    key: tuple[str, int]
    job_id: int
    event: str
    block: int
    log_index: int
    tx_hash: str
    at: int


def job_events_since(s: Session, chain_id: int, from_block: int, job_id: int | None = None) -> list[FeedEvent]:
    """Market job events in blocks >= ``from_block``, oldest first."""
    q = select(RawEvent).where(
        RawEvent.chain_id == chain_id, col(RawEvent.block_number) >= from_block,
        col(RawEvent.event_name).in_(JOB_EVENTS),
    ).order_by(col(RawEvent.block_number), col(RawEvent.log_index))
    out = []
    for ev in s.exec(q):
        jid = _job_id_of(ev.args)
        if jid is None or (job_id is not None and jid != job_id):
            continue
        out.append(FeedEvent((ev.tx_hash, ev.log_index), jid, ev.event_name, ev.block_number, ev.log_index,
                             ev.tx_hash, ev.block_timestamp))
    return out


def latest_event_block(s: Session, chain_id: int) -> int:
    v = s.exec(select(func.max(RawEvent.block_number)).where(RawEvent.chain_id == chain_id)).one()
    return int(v or 0)


def jobs_by_id(s: Session, ids: set[int]) -> dict[int, Job]:
    if not ids:
        return {}
    return {j.job_id: j for j in s.exec(select(Job).where(col(Job.job_id).in_(sorted(ids))))}


def _job_id_of(args: dict[str, Any]) -> int | None:
    v = args.get("jobId")
    try:
        return None if v is None else int(v)
    except (TypeError, ValueError):
        return None


def ping(s: Session) -> None:
    s.exec(sa.text("SELECT 1"))  # type: ignore[call-overload]
