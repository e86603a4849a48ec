"""Reading the chain for the node (logs in chunks, trailing the head) and the sources of
claimable jobs: the market's ``JobPosted`` logs, or the indexer's ``job`` table."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from web3.types import EventData

from contracts.bindings import Hearth, decode_log, event_topics
from contracts.errors import ContractsError
from worker.node.errors import JobSourceError
from worker.node.state import NodeState

log = logging.getLogger(__name__)


def tx_hex(rcpt: Any) -> str:
    """A transaction receipt's hash as ``0x`` hex."""
    return "0x" + bytes(rcpt["transactionHash"]).hex()


def topic_of(value: int | bytes | str) -> str:
    """A value as an indexed-topic filter (32-byte hex)."""
    if isinstance(value, int):
        raw = value.to_bytes(32, "big")
    elif isinstance(value, bytes):
        raw = value.rjust(32, b"\x00")
    else:
        raw = bytes.fromhex(value.removeprefix("0x")).rjust(32, b"\x00")
    return "0x" + raw.hex()


class ChainReader:
    """Log scanning over block ranges in chunks (RPCs cap ``eth_getLogs`` ranges)."""

    def __init__(self, hearth: Hearth, chunk: int = 5000) -> None:
        self.h = hearth
        self.chunk = max(1, chunk)

    def logs(
        self, events: Sequence[str], from_block: int, to_block: int, extra_topics: Sequence[Any] = ()
    ) -> Iterator[EventData]:
        """Decoded market events named ``events`` in ``[from_block, to_block]``, in order."""
        topics: list[Any] = [event_topics(self.h.market, list(events)), *extra_topics]
        start = from_block
        while start <= to_block:
            end = min(to_block, start + self.chunk - 1)
            for lg in self.h.w3.eth.get_logs(
                {"address": self.h.market.address, "fromBlock": start, "toBlock": end, "topics": topics}
            ):
                yield decode_log(self.h.market, lg)
            start = end + 1


@dataclass(frozen=True)
class Candidate:
    """A job that was posted for a model this node serves (it may be taken by now)."""

    job_id: int
    input_hash: bytes
    deadline: int


class JobSource(Protocol):
    name: str

    def poll(self, safe_block: int) -> list[Candidate]:
        """Jobs posted since the last poll (chain source) or still open (indexer source)."""
        ...


class ChainJobSource:
    """``JobPosted`` logs for the served models, from a cursor kept in the node state."""

    name = "chain"

    def __init__(self, hearth: Hearth, state: NodeState, model_ids: Sequence[bytes], chunk: int = 5000) -> None:
        self.h = hearth
        self.state = state
        self.reader = ChainReader(hearth, chunk)
        self.model_topics = [topic_of(m) for m in model_ids]

    def poll(self, safe_block: int) -> list[Candidate]:
        start = self.state.cursor("posted", self.h.manifest.deployment_block)
        if start > safe_block:
            return []
        out = [
            Candidate(int(ev["args"]["jobId"]), bytes(ev["args"]["inputHash"]), int(ev["args"]["deadline"]))
            for ev in self.reader.logs(["JobPosted"], start, safe_block, [None, None, self.model_topics])
        ]
        self.state.set_cursor("posted", safe_block + 1)
        return out


class IndexerJobSource:
    """Open jobs from the indexer's database (its SQLModel table ``jobs``; SQLite or PostgreSQL).

    The table is reflected rather than imported, so the node depends on the indexer's columns
    only, not on its Python package: ``job_id``, ``model_id`` (hex), ``status`` (``posted``...)
    and, when present, ``input_hash`` and ``deadline``. Rows are hints: the node checks every
    candidate against the chain before claiming it, so a lagging or stale database costs a
    wasted look-up, never a wrong claim.
    """

    name = "indexer"
    TABLES = ("jobs", "job")
    ID_COLUMNS = ("job_id", "id")

    def __init__(
        self,
        database_url: str,
        hearth: Hearth,
        model_ids: Sequence[bytes],
        tables: Sequence[str] = TABLES,
        limit: int = 500,
    ) -> None:
        import sqlalchemy as sa

        self.h = hearth
        self.limit = limit
        self.models = ["0x" + m.hex() for m in model_ids]
        for prefix in ("postgres://", "postgresql://"):  # bare URLs mean psycopg 3, as for the indexer
            if database_url.startswith(prefix):
                database_url = "postgresql+psycopg://" + database_url[len(prefix) :]
        try:
            self.engine = sa.create_engine(database_url)
            present = set(sa.inspect(self.engine).get_table_names())
            table = next((t for t in tables if t in present), None)
            if table is None:
                raise JobSourceError(f"the indexer database has no table {' or '.join(tables)}")
            meta = sa.MetaData()
            meta.reflect(self.engine, only=[table])
        except JobSourceError:
            raise
        except Exception as exc:  # noqa: BLE001 - any driver or reflection failure
            raise JobSourceError(f"cannot read the indexer database: {exc}") from exc
        self.table = meta.tables[table]
        cols = self.table.c
        id_col = next((cols[c] for c in self.ID_COLUMNS if c in cols), None)
        if id_col is None or "model_id" not in cols or "status" not in cols:
            raise JobSourceError(
                f"indexer table {table!r} lacks job id / model_id / status columns: {list(cols.keys())}"
            )
        self.id_col = id_col

    def poll(self, safe_block: int) -> list[Candidate]:
        import sqlalchemy as sa

        cols = self.table.c
        model_match = sa.or_(*(sa.func.lower(cols["model_id"]) == m for m in self.models))
        query = (
            sa.select(self.table)
            .where(sa.func.lower(cols["status"]) == "posted", model_match)
            .order_by(self.id_col)
            .limit(self.limit)
        )
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(query).mappings().all()
        except Exception as exc:  # noqa: BLE001
            raise JobSourceError(f"indexer query failed: {exc}") from exc
        out = []
        for r in rows:
            job_id = int(r[self.id_col.name])
            ih, dl = r.get("input_hash"), r.get("deadline")
            if ih is None or dl is None:
                try:
                    job = self.h.job(job_id)
                except ContractsError:  # not on this chain (another deployment's database?)
                    continue
                out.append(Candidate(job_id, job.input_hash, job.deadline))
            else:
                raw = bytes(ih) if isinstance(ih, (bytes, bytearray)) else bytes.fromhex(str(ih).removeprefix("0x"))
                deadline = int(dl.timestamp()) if hasattr(dl, "timestamp") else int(dl)
                out.append(Candidate(job_id, raw, deadline))
        return out
