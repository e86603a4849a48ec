"""The gateway's own tables (API key grants and their spend, SIWE nonces, sessions).

They live in the gateway's database (``gateway.db`` under the data directory by default, or
``HEARTH_GATEWAY_DATABASE_URL``), never in the indexer's, and on their own SQLAlchemy metadata
so neither service's migrations touch the other's tables. Schema changes go through Alembic
(``gateway/migrations``, version table ``gateway_alembic_version``); :func:`migrate` runs on start.

Spend is reserved with one conditional ``UPDATE`` (``spent + x <= spending_cap``), atomic on
SQLite and PostgreSQL alike, so concurrent requests on one key can never overshoot its cap.
Amounts are BIGINT here: a cap above 2**63-1 token wei (9.2e12 hUSD) is stored clamped.
"""

from __future__ import annotations

import enum
import hashlib
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import registry
from sqlmodel import Field, Session, SQLModel, col, func, select

from common import db

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
VERSION_TABLE = "gateway_alembic_version"
MAX_BIGINT = 2**63 - 1


class GatewayModel(SQLModel, registry=registry()):
    """Base of the gateway's tables: a metadata of their own."""


class ApiKey(GatewayModel, table=True):
    __tablename__ = "gw_api_keys"
    __table_args__ = (sa.UniqueConstraint("wallet", "nonce", name="uq_gw_api_keys_wallet_nonce"),)

    #: keccak256 of the API key's UTF-8 bytes; the key itself is never stored
    key_hash: str = Field(primary_key=True, max_length=66)
    wallet: str = Field(max_length=42, index=True)
    gateway: str = Field(max_length=42)
    spending_cap: int = Field(sa_type=sa.BigInteger)
    spent: int = Field(default=0, sa_type=sa.BigInteger)
    expiry: int = Field(sa_type=sa.BigInteger)
    #: the grant's nonce, as a decimal string (uint256)
    nonce: str = Field(max_length=78)
    signature: str = Field(max_length=4098)
    created_at: int = Field(sa_type=sa.BigInteger)
    revoked_at: int | None = Field(default=None, sa_type=sa.BigInteger)
    #: the provider region the key prefers (serving-plane routing, when a request names none)
    region: str | None = Field(default=None, max_length=32)


class Charge(GatewayModel, table=True):
    """One embeddings request's pull from the wallet: reserved, then posted, or released."""

    __tablename__ = "gw_charges"

    id: int | None = Field(default=None, primary_key=True)
    key_hash: str = Field(max_length=66, index=True)
    amount: int = Field(sa_type=sa.BigInteger)
    #: reserved, pulled, posted, released (per job); serving, served, released (serving plane)
    status: str = Field(default="reserved", max_length=16)
    job_id: int | None = Field(default=None, sa_type=sa.BigInteger, index=True)
    pull_tx: str | None = Field(default=None, max_length=66)
    post_tx: str | None = Field(default=None, max_length=66)
    created_at: int = Field(sa_type=sa.BigInteger)


class SiweNonce(GatewayModel, table=True):
    __tablename__ = "gw_siwe_nonces"

    nonce: str = Field(primary_key=True, max_length=64)
    expires_at: int = Field(sa_type=sa.BigInteger)


class WalletSession(GatewayModel, table=True):
    __tablename__ = "gw_sessions"

    #: sha256 of the bearer token; the token itself is never stored
    token_hash: str = Field(primary_key=True, max_length=64)
    address: str = Field(max_length=42, index=True)
    created_at: int = Field(sa_type=sa.BigInteger)
    expires_at: int = Field(sa_type=sa.BigInteger)


class BlobUpload(GatewayModel, table=True):
    """Who stored a blob, and until when the gateway keeps it for them (one row per holder)."""

    __tablename__ = "gw_blob_uploads"

    blob_id: str = Field(primary_key=True, max_length=66)
    #: ``wallet:<address>`` for uploads (counted against the quota); ``paid:<address>`` for the
    #: inputs of jobs the gateway relayed or posted for that wallet (paid for, not counted)
    owner: str = Field(primary_key=True, max_length=64)
    size: int = Field(sa_type=sa.BigInteger)
    created_at: int = Field(sa_type=sa.BigInteger)
    expires_at: int = Field(sa_type=sa.BigInteger, index=True)


class RelayStatus(enum.StrEnum):
    """Where a transaction the gateway relayed stands (``gw_relays.status``)."""

    PENDING = "pending"
    """broadcast, not mined yet (the answer was 202)"""
    MINED = "mined"
    REVERTED = "reverted"
    """mined but reverted: the chain changed between the checks and the inclusion"""
    FAILED = "failed"
    """never mined (dropped after every fee bump) or the RPC failed while waiting"""


class Relay(GatewayModel, table=True):
    """A job the gateway relayed (``postJobWithSig``) or posted for an API key (``postJob``),
    from broadcast to its outcome; keyed by the hash the client was answered with."""

    __tablename__ = "gw_relays"

    tx_hash: str = Field(primary_key=True, max_length=66)
    #: ``signed`` (POST /v1/jobs) or ``api_key`` (posted for an API key's request)
    kind: str = Field(max_length=16)
    #: the wallet the job is for (the signer, or the API key's wallet)
    client: str = Field(max_length=42, index=True)
    status: str = Field(default=RelayStatus.PENDING.value, max_length=16, index=True)
    job_id: int | None = Field(default=None, sa_type=sa.BigInteger)
    block_number: int | None = Field(default=None, sa_type=sa.BigInteger)
    #: the hash that was mined (differs from ``tx_hash`` after a fee bump)
    mined_tx: str | None = Field(default=None, max_length=66)
    #: why it reverted or failed: machine-readable reason, custom error name, sentence
    reason: str | None = Field(default=None, max_length=64)
    revert: str | None = Field(default=None, max_length=64)
    message: str | None = Field(default=None, max_length=2000)
    #: the API-key charge this post pays for (returned if the post does not go through)
    charge_id: int | None = Field(default=None, sa_type=sa.BigInteger)
    created_at: int = Field(sa_type=sa.BigInteger)
    updated_at: int = Field(sa_type=sa.BigInteger)


class IdempotentRequest(GatewayModel, table=True):
    """A request sent with ``Idempotency-Key``: its claim while it runs, its answer once done
    (see :mod:`gateway.idempotency`)."""

    __tablename__ = "gw_idempotency"

    key_hash: str = Field(primary_key=True, max_length=64)
    idem_key: str = Field(primary_key=True, max_length=255)
    #: sha256 of the route and the canonical request body
    fingerprint: str = Field(max_length=64)
    #: ``running`` or ``done``
    state: str = Field(max_length=16)
    #: the token of the request that holds the claim
    owner: str = Field(max_length=32)
    lease_until: float
    #: the answer (JSON), once done
    response: str | None = Field(default=None, sa_type=sa.Text)
    created_at: int = Field(sa_type=sa.BigInteger, index=True)


METADATA = GatewayModel.metadata


make_engine = db.make_engine
session = db.session  # one commit-or-rollback session helper for both databases


def migrate(engine: Engine, revision: str = "head") -> None:
    """Upgrades the gateway's tables to ``revision`` (idempotent)."""
    db.migrate(engine, MIGRATIONS_DIR, revision)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def now() -> int:
    return int(time.time())


# ---------------------------------------------------------------------------- API keys


_KEYS = METADATA.tables[ApiKey.__tablename__]
_CHARGES = METADATA.tables[Charge.__tablename__]
#: Core statements with bound parameters (compiled once, cached by SQLAlchemy): every served
#: request runs them, and the ORM's unit of work costs ten times their CPU
_RESERVE = (sa.update(_KEYS)
            .where(_KEYS.c.key_hash == sa.bindparam("k"), _KEYS.c.revoked_at.is_(None),
                   _KEYS.c.expiry > sa.bindparam("at"), _KEYS.c.spent + sa.bindparam("amount") <= _KEYS.c.spending_cap)
            .values(spent=_KEYS.c.spent + sa.bindparam("amount")))
_NEW_CHARGE = sa.insert(_CHARGES).values(key_hash=sa.bindparam("k"), amount=sa.bindparam("amount"),
                                          status=sa.bindparam("status"), created_at=sa.bindparam("at"))
_REFUND = sa.update(_KEYS).where(_KEYS.c.key_hash == sa.bindparam("k")).values(
    spent=_KEYS.c.spent - sa.bindparam("refund"))
#: only a reservation still held: one the reservation sweeper gave back meanwhile is charged anew
_SETTLE_CHARGE = sa.update(_CHARGES).where(_CHARGES.c.id == sa.bindparam("charge_id"),
                                           _CHARGES.c.status == sa.bindparam("held")).values(
    amount=sa.bindparam("charged"), status=sa.bindparam("status"))
_RECHARGE = sa.update(_CHARGES).where(_CHARGES.c.id == sa.bindparam("charge_id"),
                                      _CHARGES.c.status == "released").values(
    amount=sa.bindparam("charged"), status=sa.bindparam("status"))


class ReservationLostError(RuntimeError):
    """A request's reservation was given back (it outlived the reservation TTL) and its key's cap
    no longer covers the charge: the request cannot be recorded."""


def reserve(engine: Engine, key_hash: str, amount: int, at: int, status: str = "reserved") -> int | None:
    """Atomically adds ``amount`` to the key's spend if it stays within the cap and the key is
    live; returns the new charge's id, or None when the cap, expiry or revocation refuses it.
    ``status`` names the path (``serving`` for the serving plane, see ``gateway.reservations``)."""
    with engine.begin() as c:
        if c.execute(_RESERVE, {"k": key_hash, "at": at, "amount": amount}).rowcount != 1:
            return None
        key = c.execute(_NEW_CHARGE, {"k": key_hash, "amount": amount, "at": at,
                                        "status": status}).inserted_primary_key
        assert key is not None and key[0] is not None
        return int(key[0])


def settle_charge(c: sa.Connection, key_hash: str, charge_id: int, reserved: int, charged: int, status: str,
                  held: str = "serving") -> None:
    """In the caller's transaction: a reservation of ``reserved`` (status ``held``) becomes a
    charge of ``charged`` (at most what was reserved); the difference goes back to the key's cap.

    A reservation the sweeper gave back meanwhile (``gateway.reservations``: the request outlived
    the TTL) is charged anew, within the cap, or :class:`ReservationLostError` is raised: never
    settled as if it were still held, which would leave the key charged ``reserved`` too little."""
    if not 0 <= charged <= reserved:
        raise ValueError(f"charged {charged} is not within the reservation of {reserved}")
    if c.execute(_SETTLE_CHARGE, {"charge_id": charge_id, "charged": charged, "status": status,
                                  "held": held}).rowcount == 1:
        if charged != reserved:
            c.execute(_REFUND, {"k": key_hash, "refund": reserved - charged})
        return
    if c.execute(_RESERVE, {"k": key_hash, "at": now(), "amount": charged}).rowcount != 1 or c.execute(
            _RECHARGE, {"charge_id": charge_id, "charged": charged, "status": status}).rowcount != 1:
        raise ReservationLostError(f"charge {charge_id} was given back and the key's cap no longer covers "
                                   f"{charged}")


_RELEASE = (sa.update(_CHARGES).where(_CHARGES.c.id == sa.bindparam("charge_id"),
                                      _CHARGES.c.status.not_in(("released", "served")))
            .values(status="released").returning(_CHARGES.c.key_hash, _CHARGES.c.amount))


def release(engine: Engine, charge_id: int) -> bool:
    """Gives a reservation back (nothing was pulled, or what was pulled was returned); returns
    whether it did. One conditional update: of two releases at once (a request's own and the
    reservation sweeper's) one refunds; a charge settled as served is never given back."""
    with engine.begin() as c:
        row = c.execute(_RELEASE, {"charge_id": charge_id}).first()
        if row is None:
            return False
        c.execute(_REFUND, {"k": row.key_hash, "refund": row.amount})
        return True


def update_charge(engine: Engine, charge_id: int, **values: Any) -> None:
    with session(engine) as s:
        charge = s.get(Charge, charge_id)
        if charge is not None:
            for k, v in values.items():
                setattr(charge, k, v)
            s.add(charge)


def payers_of(engine: Engine, job_ids: list[int]) -> dict[int, str]:
    """The wallet that paid each of these jobs through an API key (jobs this gateway posted)."""
    if not job_ids:
        return {}
    with Session(engine) as s:
        rows = s.exec(select(Charge.job_id, ApiKey.wallet).join(ApiKey, col(ApiKey.key_hash) == col(Charge.key_hash))
                      .where(col(Charge.job_id).in_(job_ids), Charge.status == "posted"))
        return {int(j): str(w) for j, w in rows if j is not None}


def charges_of(s: Session, key_hash: str) -> list[Charge]:
    return list(s.exec(select(Charge).where(Charge.key_hash == key_hash).order_by(col(Charge.id))))


# ---------------------------------------------------------------------------- SIWE


def add_nonce(engine: Engine, nonce: str, expires_at: int) -> None:
    with session(engine) as s:
        s.execute(sa.delete(SiweNonce).where(col(SiweNonce.expires_at) < now()))
        s.add(SiweNonce(nonce=nonce, expires_at=expires_at))


def take_nonce(engine: Engine, nonce: str) -> bool:
    """Consumes a nonce: true once, if it was issued and has not expired."""
    with session(engine) as s:
        res: Any = s.execute(sa.delete(SiweNonce).where(
            col(SiweNonce.nonce) == nonce, col(SiweNonce.expires_at) >= now()))
        return bool(res.rowcount == 1)


def add_session(engine: Engine, token: str, address: str, ttl: int) -> int:
    t = now()
    with session(engine) as s:
        s.execute(sa.delete(WalletSession).where(col(WalletSession.expires_at) < t))
        s.add(WalletSession(token_hash=token_hash(token), address=address, created_at=t, expires_at=t + ttl))
    return t + ttl


def session_address(engine: Engine, token: str) -> tuple[str, int] | None:
    with session(engine) as s:
        row = s.get(WalletSession, token_hash(token))
        if row is None or row.expires_at < now():
            return None
        return row.address, row.expires_at


def end_session(engine: Engine, token: str) -> None:
    with session(engine) as s:
        s.execute(sa.delete(WalletSession).where(col(WalletSession.token_hash) == token_hash(token)))


# ---------------------------------------------------------------------------- blobs


def hold_blob(s: Session, blob_id: str, owner: str, size: int, at: int, ttl: int) -> None:
    """Records (or renews) ``owner``'s hold on a blob, in the caller's transaction."""
    row = s.get(BlobUpload, (blob_id, owner))
    if row is None:
        s.add(BlobUpload(blob_id=blob_id, owner=owner, size=size, created_at=at, expires_at=at + ttl))
    else:
        row.expires_at = max(row.expires_at, at + ttl)
        s.add(row)
    s.flush()


def held_bytes(s: Session, owner: str, at: int) -> int:
    """Bytes of the blobs ``owner`` holds that have not expired."""
    v = s.exec(select(func.coalesce(func.sum(BlobUpload.size), 0)).where(
        BlobUpload.owner == owner, col(BlobUpload.expires_at) >= at)).one()
    return int(v)


def stored_bytes(s: Session, at: int) -> int:
    """Bytes of distinct live blobs the gateway holds for anyone."""
    sub = select(BlobUpload.blob_id, func.max(BlobUpload.size).label("size")).where(
        col(BlobUpload.expires_at) >= at).group_by(col(BlobUpload.blob_id)).subquery()
    return int(s.exec(select(func.coalesce(func.sum(sub.c.size), 0))).one())


def next_expiry(s: Session, owner: str, at: int) -> int | None:
    v = s.exec(select(func.min(BlobUpload.expires_at)).where(
        BlobUpload.owner == owner, col(BlobUpload.expires_at) >= at)).one()
    return None if v is None else int(v)


def expired_blobs(s: Session, at: int, limit: int) -> list[str]:
    """Blob ids every hold on which has expired."""
    q = (select(BlobUpload.blob_id).group_by(col(BlobUpload.blob_id))
         .having(func.max(BlobUpload.expires_at) < at).limit(limit))
    return [str(b) for b in s.exec(q)]


def renew_blobs(s: Session, blob_ids: list[str], until: int) -> None:
    if blob_ids:
        s.execute(sa.update(BlobUpload).where(col(BlobUpload.blob_id).in_(blob_ids)).values(expires_at=until))


def drop_expired_holds(s: Session, blob_id: str, at: int) -> bool:
    """Deletes a blob's expired holds; true when none is left (the bytes may go)."""
    s.execute(sa.delete(BlobUpload).where(col(BlobUpload.blob_id) == blob_id, col(BlobUpload.expires_at) < at))
    left = s.exec(select(func.count()).select_from(BlobUpload).where(BlobUpload.blob_id == blob_id)).one()
    return int(left) == 0


# ---------------------------------------------------------------------------- relayed jobs


def add_relay(engine: Engine, tx_hash: str, kind: str, client: str, at: int, charge_id: int | None = None) -> None:
    with session(engine) as s:
        s.add(Relay(tx_hash=tx_hash, kind=kind, client=client, charge_id=charge_id, created_at=at, updated_at=at))


def finish_relay(engine: Engine, tx_hash: str, status: RelayStatus, at: int, **values: Any) -> Relay | None:
    """Records a relay's outcome once: a relay no longer pending is left as it is (returns None)."""
    with session(engine) as s:
        row = s.get(Relay, tx_hash)
        if row is None or row.status != RelayStatus.PENDING:
            return None
        row.status = status.value
        row.updated_at = at
        for k, v in values.items():
            setattr(row, k, v)
        s.add(row)
        s.flush()
        s.expunge(row)
        return row


def get_relay(engine: Engine, tx_hash: str) -> Relay | None:
    with Session(engine) as s:
        return s.get(Relay, tx_hash.lower())
