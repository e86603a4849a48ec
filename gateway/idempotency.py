"""``Idempotency-Key``: a request sent again after its answer was lost is answered, not charged twice.

The window it closes: the gateway records a served request and settles its charge in one
transaction, then sends the answer. A gateway killed (or a connection dropped) in between
leaves the client charged without an answer. A client that sends ``Idempotency-Key: <k>`` (1 to
255 printable ASCII characters, e.g. a UUID) and sends the same request with the same key again
gets the first answer back, byte for byte, with ``Idempotent-Replayed: true``, and is charged
once. Keys are per API key (two API keys never see each other's), kept for
:data:`KEEP_S` seconds.

Each (API key, idempotency key) is one row of ``gw_idempotency``:

* absent: the request runs; the row is claimed (``running``, with an owner token and a lease
  of the reservation TTL) before anything is reserved or forwarded;
* ``running`` under a live lease: another request with this key is in flight: 409
  ``idempotency_key_in_use`` with ``Retry-After`` (the lease left);
* ``running`` past its lease: its gateway died before recording anything (the record and the
  answer stored below are one transaction), so nothing was charged: the request runs again
  under a new owner;
* ``done``: the stored answer is replayed if the request is the same (route and body hash),
  else 422 ``idempotency_key_reused``.

The answer is stored in the transaction that records the served request and settles the charge
(:func:`finish`), and only by the owner that claimed the row: a request whose lease was taken
over (a gateway that stalled past its lease) records nothing, so two gateways can never both
charge one key. A request that fails before recording gives its claim back (:func:`abandon`),
so a retry runs at once.

Streamed requests cannot be replayed (the chunks are gone); a stream with the header is
refused with 400 ``idempotency_unsupported_for_streams``.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import sqlalchemy as sa
from fastapi.responses import JSONResponse
from sqlalchemy.engine import Connection, Engine

from gateway import store
from gateway.errors import BadRequestError, ConflictError, GatewayError, RetryAfter

R = TypeVar("R")

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
#: how long a finished request's answer is kept for replay
KEEP_S = 24 * 3600
_VALID = re.compile(r"^[\x21-\x7e]{1,255}$")

_T = store.METADATA.tables[store.IdempotentRequest.__tablename__]


class IdempotencyInUseError(RetryAfter, ConflictError):
    reason = "idempotency_key_in_use"
    should_retry = True


class IdempotencyKeyReusedError(GatewayError):
    status_code = 422
    reason = "idempotency_key_reused"
    error_type = "invalid_request_error"


class IdempotencyLostError(ConflictError):
    """The claim was taken over while this request ran (it outlived its lease): not recorded."""

    reason = "idempotency_claim_lost"


@dataclass(frozen=True)
class Claim:
    """This request's hold on an idempotency key; ``replay`` is set when it was answered before."""

    key_hash: str
    idem_key: str
    owner: str
    replay: dict[str, Any] | None = None


def fingerprint(route: str, body: Any) -> str:
    """What makes two requests "the same": the route and the canonical JSON of the body."""
    return hashlib.sha256(json.dumps([route, body], sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def claim(engine: Engine, key_hash: str, idem_key: str | None, print_: str, lease_s: float,
          *, stream: bool = False) -> Claim | None:
    """Claims ``idem_key`` for this request (None: no key sent, nothing to claim). Raises the
    409 / 422 / 400 of the module docstring; returns a claim with ``replay`` for a done one."""
    if idem_key is None:
        return None
    if not _VALID.match(idem_key):
        raise BadRequestError(f"{HEADER} must be 1 to 255 printable ASCII characters without spaces",
                              reason="invalid_idempotency_key")
    if stream:
        raise BadRequestError(f"a streamed answer cannot be replayed: send {HEADER} without \"stream\": true",
                              reason="idempotency_unsupported_for_streams")
    owner = secrets.token_hex(16)
    now = time.time()
    try:
        return _claim(engine, key_hash, idem_key, print_, lease_s, owner, now)
    except sa.exc.IntegrityError:  # claimed by a request that arrived at the same moment
        raise IdempotencyInUseError(f"a request with {HEADER} {idem_key!r} is in flight",
                                    retry_after=lease_s) from None


def _claim(engine: Engine, key_hash: str, idem_key: str, print_: str, lease_s: float, owner: str,
           now: float) -> Claim:
    where = sa.and_(_T.c.key_hash == key_hash, _T.c.idem_key == idem_key)
    with engine.begin() as c:
        row = c.execute(sa.select(_T.c.fingerprint, _T.c.state, _T.c.lease_until, _T.c.response).where(where)).first()
        if row is None:
            # A concurrent insert of the same key fails this transaction's commit (primary key).
            c.execute(sa.insert(_T).values(key_hash=key_hash, idem_key=idem_key, fingerprint=print_, state="running",
                                           owner=owner, lease_until=now + lease_s, response=None,
                                           created_at=int(now)))
            return Claim(key_hash, idem_key, owner)
        if row.fingerprint != print_:
            raise IdempotencyKeyReusedError(f"{HEADER} {idem_key!r} was used for a different request")
        if row.state == "done":
            return Claim(key_hash, idem_key, "", replay=json.loads(row.response))
        if row.lease_until > now:
            raise IdempotencyInUseError(f"a request with {HEADER} {idem_key!r} is in flight",
                                        retry_after=row.lease_until - now)
        # Its gateway died before recording (nothing charged): take it over, if nobody did first.
        took = c.execute(sa.update(_T).where(where, _T.c.state == "running", _T.c.lease_until == row.lease_until)
                         .values(owner=owner, lease_until=now + lease_s)).rowcount
        if took != 1:
            raise IdempotencyInUseError(f"a request with {HEADER} {idem_key!r} is in flight", retry_after=lease_s)
        return Claim(key_hash, idem_key, owner)


async def answered_once(engine: Engine, key_hash: str, idem_key: str | None, route: str,
                        request: Callable[[], Any], lease_s: float,
                        answer: Callable[[Claim | None], Awaitable[R]], *, stream: bool = False) -> R | JSONResponse:
    """``answer(claim)`` for a request sent with ``idem_key``, or the answer stored for it,
    replayed; the claim is given back if ``answer`` fails. ``request()``: the request as JSON types
    (with anything else that changes the answer, such as the region), built only when a key was
    sent: a request without one costs nothing here."""
    if idem_key is None:
        return await answer(None)
    cl = claim(engine, key_hash, idem_key, fingerprint(route, request()), lease_s, stream=stream)
    if cl is not None and cl.replay is not None:
        return JSONResponse(cl.replay, headers={REPLAYED_HEADER: "true"})
    try:
        return await answer(cl)
    except BaseException:
        abandon(engine, cl)
        raise


def finish(c: Connection, cl: Claim | None, response: dict[str, Any]) -> None:
    """Stores the answer, inside the transaction that records the request and its charge;
    raises :class:`IdempotencyLostError` (rolling that transaction back) if the claim was taken
    over meanwhile."""
    if cl is None:
        return
    done = c.execute(sa.update(_T).where(_T.c.key_hash == cl.key_hash, _T.c.idem_key == cl.idem_key,
                                         _T.c.owner == cl.owner, _T.c.state == "running")
                     .values(state="done", response=json.dumps(response, separators=(",", ":")))).rowcount
    if done != 1:
        raise IdempotencyLostError(f"the request with {HEADER} {cl.idem_key!r} outlived its claim and was run "
                                   "again elsewhere: this run is not recorded and nothing is charged for it")


def abandon(engine: Engine, cl: Claim | None) -> None:
    """Gives a claim back after the request failed before being recorded (a retry runs at once)."""
    if cl is None or cl.replay is not None:
        return
    with engine.begin() as c:
        c.execute(sa.delete(_T).where(_T.c.key_hash == cl.key_hash, _T.c.idem_key == cl.idem_key,
                                      _T.c.owner == cl.owner, _T.c.state == "running"))


def prune(engine: Engine, now: float | None = None) -> int:
    """Deletes answers kept longer than :data:`KEEP_S` and stale claims; returns how many."""
    now = time.time() if now is None else now
    with engine.begin() as c:
        return int(c.execute(sa.delete(_T).where(_T.c.created_at < int(now - KEEP_S))).rowcount)
