"""The worker node: a composition root over small duties (:mod:`worker.node.duties`).

:class:`Node` builds the duties its role needs from :class:`NodeConfig` and runs them every
``poll_interval_s`` over one :class:`~worker.node.view.TickContext`: the head and safe block,
the head's timestamp (the clock for every deadline and window), the typed market parameters,
and the :class:`~worker.node.view.MarketView` of job records folded from one log scan per tick.

A duty that raises is logged and the next duty still runs; a duty that fails
``max_duty_failures`` ticks in a row stops the node with :class:`~worker.node.errors.DutyFailedError`
(naming the duty and its last error), so a supervisor sees a dead process instead of a node
that logs the same error forever. Reading the chain's head counts as the duty ``market``.

Restart safety: see :mod:`worker.node.state`. The node acts only on what the chain says, so a
repeated step is refused by the contract's status checks at gas estimation and never reaches
the chain.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from common.blobs import BlobStore
from contracts.bindings import Hearth
from contracts.errors import ChainError
from contracts.types import gpu_class_bytes
from worker.node.config import Checkpoint, NodeConfig, TickReport
from worker.node.duties import (
    Committee,
    Delivery,
    Duty,
    Operator,
    Payout,
    Provider,
    Reconciler,
    Resolver,
    Verifier,
)
from worker.node.duties.base import NodeLog, h
from worker.node.errors import DutyFailedError
from worker.node.executor import Executor
from worker.node.sources import ChainReader, JobSource
from worker.node.state import NodeState
from worker.node.view import MarketView, TickContext

log = logging.getLogger(__name__)

MARKET = "market"
"""The name under which a failure to read the chain's head and the market view is counted."""


def state_path(state_dir: Path, hearth: Hearth, address: str) -> Path:
    """One state file per chain, market deployment and operator address."""
    return state_dir / f"{hearth.chain_id}-{hearth.market.address.lower()}" / f"{address.lower()}.sqlite"


class Node:
    """A worker node for one operator key (see the module docstring)."""

    def __init__(
        self,
        hearth: Hearth,
        key: str,
        store: BlobStore,
        executor: Executor,
        config: NodeConfig | None = None,
        *,
        state_dir: Path,
        job_source: JobSource | None = None,
        checkpoint: Checkpoint | None = None,
    ) -> None:
        cfg = config or NodeConfig()
        sender = hearth.sender(key)
        self.op = Operator(
            h=hearth, key=key, sender=sender, store=store, executor=executor, config=cfg,
            state=NodeState(state_path(state_dir, hearth, sender.address)),
            reader=ChainReader(hearth, cfg.log_chunk_blocks),
            log=NodeLog(log, {"node": cfg.name or sender.address[:10]}),
            gpu_class=gpu_class_bytes(cfg.gpu_class),
        )
        self.market = MarketView(hearth, max_span=cfg.log_chunk_blocks)
        self.checkpoint = checkpoint
        self.provider: Provider | None = Provider(self.op, job_source) if cfg.provides else None
        self.verifier: Verifier | None = Verifier(self.op) if cfg.verifies else None
        self.duties: list[Duty] = [
            Reconciler(self.op),
            *([self.provider, Delivery(self.op)] if self.provider else []),
            *([self.verifier] if self.verifier else []),
            Committee(self.op),
            Resolver(self.op),
            Payout(self.op),
        ]
        self.failures: dict[str, int] = {}
        self.last_ok: float | None = None
        self.log = self.op.log

    # -- what tests and callers read
    @property
    def h(self) -> Hearth:
        return self.op.h

    @property
    def address(self) -> str:
        return self.op.address

    @property
    def config(self) -> NodeConfig:
        return self.op.config

    @property
    def state(self) -> NodeState:
        return self.op.state

    @property
    def store(self) -> BlobStore:
        return self.op.store

    @property
    def reader(self) -> ChainReader:
        return self.op.reader

    # ------------------------------------------------------------------ lifecycle

    def preflight(self) -> None:
        """Checks the chain and this operator's standing; logs what it finds."""
        op = self.op
        op.h.check_chain()
        st = op.h.staking.functions
        active = st.isActive(op.address).call()
        serves = st.serves(op.address, op.model_id).call()
        if active and serves and not st.isEligible(op.address, op.model_id).call():
            # Back from a jail (or under a new minimum stake): re-enter the committee set.
            try:
                op.sender.send(st.refresh(op.address))
                self.log.info("rejoined the eligible set of model %s", h(op.model_id)[:10])
            except ChainError as exc:
                self.log.warning("refresh of this node's eligibility failed: %s", exc)
        self.log.info(
            "node %s role=%s model=%s runtime=%s gpu=%s source=%s duties=%s active=%s serving=%s",
            op.address, op.config.role, h(op.model_id)[:10], h(op.runtime_hash)[:10], op.config.gpu_class,
            self.provider.source.name if self.provider else "-", ",".join(d.name for d in self.duties), active, serves,
        )
        if not (active and serves):
            self.log.warning(
                "node %s is not an active staked provider serving model %s: it cannot claim, "
                "challenge or sit on committees", op.address, h(op.model_id),
            )

    def run(self, stop: threading.Event, *, once: bool = False) -> None:
        """Ticks every ``poll_interval_s`` until ``stop`` is set (one strict tick with ``once``).
        Raises :class:`DutyFailedError` when a duty failed ``max_duty_failures`` ticks in a row."""
        self.preflight()
        while not stop.is_set():
            self.tick(final=once, strict=once)
            if once:
                return
            stop.wait(self.config.poll_interval_s)

    def healthy(self) -> bool:
        """Whether a tick succeeded recently, every duty included."""
        if self.last_ok is None:
            return False
        return time.monotonic() - self.last_ok < max(30.0, 10 * self.config.poll_interval_s)

    def close(self) -> None:
        close = getattr(self.provider.source, "close", None) if self.provider else None
        if close is not None:
            close()
        self.op.state.close()

    # ------------------------------------------------------------------ one pass

    def tick(self, *, final: bool = False, strict: bool = True) -> TickReport:
        """One pass of every duty over one tick context. ``final`` also withdraws whatever is
        credited, ignoring the schedule (``--once``). ``strict`` raises a duty's error at once;
        otherwise it is logged, counted and reported in :attr:`TickReport.failed`."""
        try:
            ctx = self._context(final)
        except Exception as exc:
            if strict:
                raise
            self._failed(MARKET, exc)
            return TickReport(failed={MARKET: str(exc)})
        self.failures.pop(MARKET, None)
        for duty in self.duties:
            try:
                duty.run(ctx)
            except Exception as exc:
                if strict:
                    raise
                self._failed(duty.name, exc)
                ctx.report.failed[duty.name] = str(exc)
            else:
                self.failures.pop(duty.name, None)
        if not ctx.report.failed:
            self.last_ok = time.monotonic()
        return ctx.report

    def _context(self, final: bool) -> TickContext:
        w3 = self.op.h.w3
        head_block = w3.eth.get_block("latest")
        head = int(head_block["number"])
        self.market.refresh(head, bytes(head_block["hash"]))
        return TickContext(
            head=head, safe=max(0, head - self.config.confirmations), now=int(head_block["timestamp"]),
            params=self.op.h.market_params(), market=self.market, report=TickReport(head, int(head_block["timestamp"])),
            final=final, checkpoint=self.checkpoint,
        )

    def _failed(self, name: str, exc: Exception) -> None:
        n = self.failures[name] = self.failures.get(name, 0) + 1
        limit = max(1, self.config.max_duty_failures)
        self.log.error("duty %s failed (%d of %d in a row): %s", name, n, limit, exc, exc_info=exc)
        if n >= limit:
            self.log.critical("stopping the node: duty %s failed %d ticks in a row; last error: %s", name, n, exc)
            raise DutyFailedError(name, n, exc) from exc


__all__ = ["Checkpoint", "Node", "NodeConfig", "TickReport", "state_path"]
