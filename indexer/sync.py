"""The sync engine: one ``step`` reads the next range of blocks and writes it in one transaction.

Reading a range ``[frm, to]``:

1. headers of ``frm``, ``to`` and every block within ``max_reorg_depth`` of the head (one batch
   request); ``frm``'s parent hash must be the checkpoint's hash, or the chain reorganized under
   the index and :meth:`Indexer.step` rolls back first;
2. ``eth_getLogs`` over the protocol contracts, in an adaptive range (doubles while answers are
   small, halves on "too many results" and above the target size);
3. the header of ``to`` again: if its hash changed, the logs may mix two forks and the step is
   retried. Because a block hash commits to every ancestor, an unchanged ``to`` means every log
   came from the chain that ends there.

Writing is one transaction: raw events, projections (with undo images for recent blocks), the
recent block hashes and the checkpoint. A crash at any point leaves the previous batch's state.

Reorgs: the stored recent blocks are compared with the node's from the top down to the first
match, the common ancestor; the undo log restores every projection row to its image at the end
of that block, and raw events and block rows above it are deleted, all in one transaction.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlmodel import SQLModel

from common.db import make_engine
from common.index_models import Block, Checkpoint, RawEvent, UndoEntry
from contracts.manifest import Manifest
from indexer.db import migrate
from indexer.decode import DecodedEvent, EventDecoder, with_timestamps
from indexer.errors import (
    ChainInconsistentError,
    DeploymentMismatchError,
    IndexerError,
    ReorgTooDeepError,
    RpcError,
    TooManyResultsError,
)
from indexer.metrics import IndexerMetrics
from indexer.projector import Projector, touches
from indexer.rpc import Header, Rpc
from indexer.settings import IndexerSettings
from indexer.store import BatchStore, bulk_insert, clear_projections, revert_to, upsert

log = logging.getLogger(__name__)

ZERO_HASH = "0x" + "00" * 32


def _t(model: type[SQLModel]) -> sa.Table:
    return model.__table__  # type: ignore[attr-defined,no-any-return]


RAW = _t(RawEvent)
BLOCKS = _t(Block)
CHECKPOINTS = _t(Checkpoint)
UNDO = _t(UndoEntry)


@dataclass(frozen=True)
class CheckpointState:
    block_number: int
    block_hash: str
    start_block: int


@dataclass(frozen=True)
class StepResult:
    head: int
    indexed: int
    blocks: int = 0
    events: int = 0
    reorg_depth: int = 0
    #: nothing left to read up to the head (minus confirmations)
    caught_up: bool = False


class Indexer:
    """The synchronous engine; :class:`indexer.service.IndexerService` runs it in a thread."""

    def __init__(self, settings: IndexerSettings, *, manifest: Manifest | None = None,
                 engine: Engine | None = None, metrics: IndexerMetrics | None = None) -> None:
        self.settings = settings
        self.manifest = manifest or Manifest.load(settings.manifest_file())
        self.engine = engine or make_engine(settings.database_url)
        self.rpc = Rpc(settings.rpc_url or self.manifest.rpc_url, timeout=settings.rpc_timeout,
                       retries=settings.rpc_retries)
        self.decoder = EventDecoder(self.manifest, settings.contracts)
        self.addresses = self.decoder.address_list()
        self.chain_id = self.manifest.chain_id
        self.deployment = self.manifest.address("JobMarket")
        self.metrics = metrics or IndexerMetrics()
        self.rpc.on_error = self.metrics.rpc_errors.inc
        self.range = min(max(settings.initial_range, settings.min_range), settings.max_range)
        self.head = 0
        self.reorgs = 0
        self.cp: CheckpointState | None = None
        #: test hook: called with a stage name inside the batch transaction
        #: ("after_raw_events", "after_projections", "before_commit", "reorg_before_commit")
        self.fault: Callable[[str], None] | None = None

    # ------------------------------------------------------------------ setup

    def prepare(self) -> CheckpointState:
        """Migrates the schema, checks the chain and loads (or creates) the checkpoint."""
        migrate(self.engine)
        actual = self.rpc.chain_id()
        if actual != self.chain_id:
            raise DeploymentMismatchError(
                f"the RPC reports chain id {actual}, the manifest {self.chain_id}")
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(CHECKPOINTS).where(CHECKPOINTS.c.id == 1)).mappings().first()
            if row is not None and (row["chain_id"] != self.chain_id
                                    or row["deployment"] != self.deployment):
                msg = (f"database indexes chain {row['chain_id']} market {row['deployment']}, "
                       f"the manifest chain {self.chain_id} market {self.deployment}")
                if not self.settings.reset_on_mismatch:
                    raise DeploymentMismatchError(msg)
                log.warning("%s: wiping the index and starting over", msg)
                self._wipe(conn)
                row = None
            if row is None:
                self.cp = self._init_checkpoint(conn)
            else:
                self.cp = CheckpointState(row["block_number"], row["block_hash"], row["start_block"])
                if self.settings.from_block is not None and self.settings.from_block != row["start_block"]:
                    log.warning("ignoring from_block=%d: the index already starts at block %d "
                                "(wipe the database to start elsewhere)",
                                self.settings.from_block, row["start_block"])
        self.metrics.indexed.set(self.cp.block_number)
        log.info("indexer ready: chain %d market %s, indexed up to block %d",
                 self.chain_id, self.deployment, self.cp.block_number)
        return self.cp

    def _init_checkpoint(self, conn: Connection) -> CheckpointState:
        start = self.settings.from_block
        if start is None:
            start = self.manifest.deployment_block
        parent: Header | None = None
        if start > 0:
            parent = self.rpc.header(start - 1)
            if parent is None:
                raise IndexerError(f"start block {start} is beyond the chain head")
        cp = CheckpointState(start - 1, parent.hash if parent else ZERO_HASH, start)
        conn.execute(sa.insert(CHECKPOINTS), [{
            "id": 1, "chain_id": self.chain_id, "deployment": self.deployment, "start_block": start,
            "block_number": cp.block_number, "block_hash": cp.block_hash, "updated_at": time.time(),
        }])
        if parent is not None:
            upsert(conn, BLOCKS, [_block_row(parent)])
        log.info("new index from block %d (chain %d, market %s)", start, self.chain_id,
                 self.deployment)
        return cp

    def _wipe(self, conn: Connection) -> None:
        clear_projections(conn)
        for t in (RAW, BLOCKS, CHECKPOINTS):
            conn.execute(t.delete())

    def reset(self) -> CheckpointState:
        """Drops the whole index and starts over from the start block."""
        with self.engine.begin() as conn:
            start = self.cp.start_block if self.cp else None
            self._wipe(conn)
            if start is not None and self.settings.from_block is None and \
                    start != self.manifest.deployment_block:
                self.settings = self.settings.model_copy(update={"from_block": start})
            self.cp = self._init_checkpoint(conn)
        return self.cp

    # ------------------------------------------------------------------ sync

    def step(self) -> StepResult:
        """Reads and writes the next range (or rolls back a reorg). Idempotent and restartable:
        everything it does is derived from the checkpoint in the database."""
        if self.cp is None:
            self.prepare()
        assert self.cp is not None
        cp = self.cp
        head = self.rpc.block_number()
        self.head = head
        self.metrics.head.set(head)
        target = head - self.settings.confirmations
        if target <= cp.block_number:
            if cp.block_number >= 0:
                tip = self.rpc.header(cp.block_number)
                if tip is None or tip.hash != cp.block_hash:
                    return self._rollback(head)
            self._set_lag()
            self.metrics.add_events(0)
            return StepResult(head, cp.block_number, caught_up=True)

        frm = cp.block_number + 1
        to = min(target, frm + self.range - 1)
        keep_from = head - self.settings.max_reorg_depth
        needed = sorted({frm, to} | set(range(max(frm, keep_from), to + 1)))
        headers = self.rpc.headers(needed)
        if any(h is None for h in headers.values()):
            raise ChainInconsistentError(f"blocks {frm}-{to} vanished while reading them")
        hs: dict[int, Header] = {n: h for n, h in headers.items() if h is not None}
        if hs[frm].parent_hash != cp.block_hash:
            return self._rollback(head)
        for n in needed:
            if n - 1 in hs and hs[n].parent_hash != hs[n - 1].hash:
                raise ChainInconsistentError(f"block {n} does not extend block {n - 1}")

        t0 = time.monotonic()
        try:
            logs = self.rpc.get_logs(self.addresses, frm, to)
        except TooManyResultsError as exc:
            if to == frm:
                raise
            self.range = max(self.settings.min_range, (to - frm + 1) // 2)
            log.info("eth_getLogs %d-%d refused (%s): range now %d blocks", frm, to, exc, self.range)
            return StepResult(head, cp.block_number)
        except RpcError:
            # still failing after the client's retries: a large range may be the cause (node
            # timeouts); ask for less next time, and let the caller back off
            self.range = max(self.settings.min_range, (to - frm + 1) // 2)
            raise
        after = self.rpc.header(to)
        if after is None or after.hash != hs[to].hash:
            raise ChainInconsistentError(f"block {to} changed while reading logs")
        for lg in logs:
            bn = int(lg["blockNumber"], 16)
            h = hs.get(bn)
            if (h is not None and lg["blockHash"].lower() != h.hash) or lg.get("removed"):
                raise ChainInconsistentError(f"log from another fork in block {bn}")
        self._adapt(len(logs), to - frm + 1)

        events = sorted((self.decoder.decode(lg) for lg in logs),
                        key=lambda e: (e.block_number, e.log_index))
        missing = sorted({e.block_number for e in events if not e.block_timestamp})
        if missing:  # nodes without blockTimestamp in logs
            got = self.rpc.headers(missing)
            events = with_timestamps(events, {n: h.timestamp for n, h in got.items() if h})
        self._write(frm, to, events, [hs[n] for n in needed if n >= keep_from], hs[to], keep_from)
        elapsed = time.monotonic() - t0
        self.metrics.batch_seconds.observe(elapsed)
        self.metrics.add_events(len(events))
        self._set_lag()
        return StepResult(head, to, blocks=to - frm + 1, events=len(events), caught_up=to >= target)

    def _adapt(self, n_logs: int, span: int) -> None:
        s = self.settings
        if n_logs > s.target_logs:
            self.range = max(s.min_range, span // 2)
        elif n_logs < s.target_logs // 2 and span >= self.range:
            self.range = min(s.max_range, self.range * 2)

    def _set_lag(self) -> None:
        assert self.cp is not None
        self.metrics.indexed.set(self.cp.block_number)
        self.metrics.lag.set(max(0, self.head - self.cp.block_number))

    def _fault(self, stage: str) -> None:
        if self.fault is not None:
            self.fault(stage)

    def _write(self, frm: int, to: int, events: list[DecodedEvent], recent: list[Header],
               to_header: Header, keep_from: int) -> None:
        assert self.cp is not None
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(CHECKPOINTS.c.block_number, CHECKPOINTS.c.block_hash)
                               .where(CHECKPOINTS.c.id == 1)).first()
            if row is None or (row[0], row[1]) != (self.cp.block_number, self.cp.block_hash):
                raise IndexerError("the checkpoint moved under this indexer: is another one "
                                   "writing the same database?")
            bulk_insert(conn, RAW, [self._raw_row(e) for e in events])
            self._fault("after_raw_events")
            store = BatchStore(conn, undo_from=keep_from)
            store.prefetch(k for e in events for k in touches(e))
            Projector(store).apply_all(events)
            store.flush()
            self._fault("after_projections")
            if recent:
                upsert(conn, BLOCKS, [_block_row(h) for h in recent])
            conn.execute(BLOCKS.delete().where(BLOCKS.c.number < keep_from))
            conn.execute(UNDO.delete().where(UNDO.c.block_number < keep_from))
            conn.execute(CHECKPOINTS.update().where(CHECKPOINTS.c.id == 1).values(
                block_number=to, block_hash=to_header.hash, updated_at=time.time()))
            self._fault("before_commit")
        self.cp = CheckpointState(to, to_header.hash, self.cp.start_block)
        self._log_batch(frm, to, events)

    def _raw_row(self, e: DecodedEvent) -> dict[str, Any]:
        return {
            "chain_id": self.chain_id, "block_number": e.block_number, "block_hash": e.block_hash,
            "block_timestamp": e.block_timestamp, "tx_hash": e.tx_hash, "tx_index": e.tx_index,
            "log_index": e.log_index, "address": e.address, "contract": e.contract,
            "event_name": e.name, "args": e.args,
        }

    def _log_batch(self, frm: int, to: int, events: list[DecodedEvent]) -> None:
        if len(events) <= 20:
            for e in events:
                ref = " ".join(f"{k}={e.args[k]}" for k in ("jobId", "provider", "modelId", "account")
                               if k in e.args)
                log.info("%s %s block=%d tx=%s log=%d", e.name, ref, e.block_number, e.tx_hash,
                         e.log_index)
        if events or to - frm > 0:
            log.info("indexed blocks %d-%d: %d events (head %d)", frm, to, len(events), self.head)

    # ------------------------------------------------------------------ reorgs

    def _rollback(self, head: int) -> StepResult:
        assert self.cp is not None
        with self.engine.connect() as conn:
            stored = conn.execute(sa.select(BLOCKS.c.number, BLOCKS.c.hash)
                                  .order_by(BLOCKS.c.number.desc())).all()
        chain = self.rpc.headers([n for n, _ in stored]) if stored else {}
        ancestor: tuple[int, str] | None = None
        for n, h in stored:
            c = chain.get(n)
            if c is not None and c.hash == h:
                ancestor = (n, h)
                break
        if ancestor is None:
            msg = (f"reorg deeper than the {len(stored)} blocks kept below block "
                   f"{self.cp.block_number} (max_reorg_depth={self.settings.max_reorg_depth})")
            if not self.settings.reset_on_mismatch:
                raise ReorgTooDeepError(msg)
            log.error("%s: re-indexing from scratch", msg)
            self.reorgs += 1
            self.metrics.reorgs.inc()
            cp = self.reset()
            return StepResult(head, cp.block_number, reorg_depth=-1)
        number, block_hash = ancestor
        depth = self.cp.block_number - number
        with self.engine.begin() as conn:
            undone = revert_to(conn, number)
            removed = conn.execute(RAW.delete().where(RAW.c.chain_id == self.chain_id,
                                                      RAW.c.block_number > number)).rowcount
            conn.execute(BLOCKS.delete().where(BLOCKS.c.number > number))
            conn.execute(CHECKPOINTS.update().where(CHECKPOINTS.c.id == 1).values(
                block_number=number, block_hash=block_hash, updated_at=time.time()))
            self._fault("reorg_before_commit")
        self.cp = CheckpointState(number, block_hash, self.cp.start_block)
        self.reorgs += 1
        self.metrics.reorgs.inc()
        self.metrics.reorg_depth.observe(depth)
        self._set_lag()
        log.warning("reorg: rolled back %d blocks to common ancestor %d (%s): %d events removed, "
                    "%d row images restored (head %d)", depth, number, block_hash, removed, undone,
                    head)
        return StepResult(head, number, reorg_depth=depth)

    # ------------------------------------------------------------------ helpers

    def sync(self, to_block: int | None = None, timeout: float = 120.0) -> int:
        """Steps until the index reaches ``to_block`` (default: the head minus confirmations at
        the time of the call) and returns the indexed block."""
        end = time.monotonic() + timeout
        if self.cp is None:
            self.prepare()
        assert self.cp is not None
        if to_block is None:
            to_block = self.rpc.block_number() - self.settings.confirmations
        while True:
            try:
                r = self.step()
            except ChainInconsistentError:
                time.sleep(0.05)
                continue
            if self.cp.block_number >= to_block and r.reorg_depth == 0:
                return self.cp.block_number
            if r.caught_up and r.reorg_depth == 0 and self.cp.block_number < to_block:
                raise IndexerError(f"block {to_block} is beyond the chain head {self.head}")
            if time.monotonic() > end:
                raise TimeoutError(f"index at {self.cp.block_number}, wanted {to_block}")

    def rebuild(self, chunk: int = 10_000) -> int:
        """Rebuilds every projection from the raw event log (repair tool); returns the count."""
        if self.cp is None:
            self.prepare()
        keep_from = self.rpc.block_number() - self.settings.max_reorg_depth
        n = 0
        with self.engine.begin() as conn:
            clear_projections(conn)
            store = BatchStore(conn, undo_from=keep_from)
            proj = Projector(store)
            last = (-1, -1)
            while True:
                rows = conn.execute(
                    sa.select(RAW).where(RAW.c.chain_id == self.chain_id,
                                         sa.tuple_(RAW.c.block_number, RAW.c.log_index) > last)
                    .order_by(RAW.c.block_number, RAW.c.log_index).limit(chunk)).mappings().all()
                if not rows:
                    break
                evs = [DecodedEvent(r["block_number"], r["block_hash"], r["block_timestamp"], r["tx_hash"],
                                 r["tx_index"], r["log_index"], r["address"], r["contract"],
                                 r["event_name"], r["args"]) for r in rows]
                store.prefetch(k for e in evs for k in touches(e))
                proj.apply_all(evs)
                store.flush()
                n += len(evs)
                last = (rows[-1]["block_number"], rows[-1]["log_index"])
        log.info("rebuilt projections from %d raw events", n)
        return n

    def close(self) -> None:
        self.rpc.close()


def _block_row(h: Header) -> dict[str, Any]:
    return {"number": h.number, "hash": h.hash, "parent_hash": h.parent_hash,
            "timestamp": h.timestamp}
