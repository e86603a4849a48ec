"""Live updates as server-sent events: every job's state changes, or one job's."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Path, Request
from sqlmodel import Session
from sse_starlette import EventSourceResponse

from gateway import index, store
from gateway.context import Context, CtxDep
from gateway.errors import NotFoundError
from gateway.feed import Subscription
from gateway.routes.common import ERRORS

router = APIRouter(prefix="/v1", tags=["live"], responses=ERRORS)
SSE_DOC: dict[int | str, dict[str, Any]] = {200: {
    "description": "an event stream; each `job` event's data is a JSON update "
                   "{job_id, event, status, block, tx_hash, at, job}",
    "content": {"text/event-stream": {"schema": {"type": "string"}}},
}}


def _message(u: dict[str, Any], kind: str = "job") -> dict[str, str]:
    return {"event": kind, "id": f"{u.get('block', 0)}-{u.get('log_index', 0)}", "data": json.dumps(u)}


def _with_payer(ctx: Context, u: dict[str, Any]) -> dict[str, Any]:
    """Names the paying wallet of a job this gateway posted for an API key (see ``JobOut.paid_by``)."""
    job = u.get("job")
    if job and ctx.chain.relayer_address is not None and job.get("client") == ctx.chain.relayer_address:
        payer = store.payers_of(ctx.db_engine, [int(u["job_id"])]).get(int(u["job_id"]))
        if payer:
            u = {**u, "job": {**job, "paid_by": payer}}
    return u


async def _stream(request: Request, ctx: Context, sub: Subscription,
                  first: list[dict[str, Any]], until_terminal: bool) -> AsyncIterator[dict[str, str]]:
    seen_block, seen_rank = -1, -1
    try:
        for u in first:
            u = await anyio.to_thread.run_sync(_with_payer, ctx, u)
            yield _message(u, "snapshot")
            seen_block, seen_rank = u["block"], index.STATES.index(u["status"])
            if until_terminal and u["status"] in index.TERMINAL_STATES:
                return
        while True:
            with anyio.move_on_after(1.0):
                got = await sub.queue.get()
                if got is None:
                    return
                u = got
                # The feed may still deliver events the snapshot already covers.
                if u["block"] < seen_block or (u["block"] == seen_block and
                                               index.STATES.index(u["status"]) <= seen_rank):
                    continue
                yield _message(await anyio.to_thread.run_sync(_with_payer, ctx, u))
                if until_terminal and u["status"] in index.TERMINAL_STATES:
                    return
            if await request.is_disconnected():
                return
    finally:
        ctx.feed.unsubscribe(sub)


@router.get("/events/jobs", response_class=EventSourceResponse, responses=SSE_DOC,
            summary="Live feed of every job's state changes (SSE)")
async def all_jobs(request: Request, ctx: CtxDep) -> EventSourceResponse:
    sub = ctx.feed.subscribe()
    return EventSourceResponse(_stream(request, ctx, sub, [], False), ping=15)


@router.get("/jobs/{job_id}/events", response_class=EventSourceResponse, responses=SSE_DOC,
            summary="Live state changes of one job (SSE); ends when it is finalized or refunded")
async def one_job(job_id: Annotated[int, Path(ge=1, le=2**63 - 1)], request: Request,
                  ctx: CtxDep) -> EventSourceResponse:
    """Starts with a ``snapshot`` event of the job's current state (when it is indexed yet),
    then one ``job`` event per change."""
    sub = ctx.feed.subscribe(job_id)  # before the snapshot, so no change falls in between

    def snapshot() -> list[dict[str, Any]]:
        with Session(ctx.index_engine) as s:
            try:
                j = index.get_job(s, job_id)
            except NotFoundError:
                return []
            out = index.job_out(j)
            last = out.history[-1] if out.history else None
            return [{"job_id": job_id, "event": "snapshot", "status": out.status,
                     "block": last.block if last else 0, "log_index": 0,
                     "tx_hash": last.tx_hash if last else "", "at": last.at if last else 0,
                     "job": out.model_dump()}]

    try:
        first = await anyio.to_thread.run_sync(snapshot)
    except BaseException:
        ctx.feed.unsubscribe(sub)
        raise
    return EventSourceResponse(_stream(request, ctx, sub, first, True), ping=15)
