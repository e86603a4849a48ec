"""Keeping payers' escrow lanes to the providers this gateway routes to topped up.

A provider serves a payer only while the payer's lane to it covers what it has served and not
collected plus the next request (``402 lane_exhausted`` otherwise). A payer that authorized this
gateway's receipt signer *with allocation rights* (``PaymentEscrow.authorizeSigner(signer,
expiry, canAllocate=true, proof)``) lets the gateway move its unallocated deposit into lanes;
:class:`LaneKeeper` does so, so the payer funds one deposit and never watches lanes itself.

Every ``interval_s`` (and at once when a provider refuses a request with ``lane_exhausted``)
the keeper reads, for each payer with a live API key here and a valid allocating signer
authorization, its lane to every routable provider and its deposit, and decides with
:func:`plan_topups`: a lane whose *free* balance (balance minus what this gateway recorded as
served on it and the provider has not collected yet) is below ``threshold`` is topped up to
``target``. All of a payer's top-ups go in **one** ``allocate(payer, providers[], amounts[])``
transaction. A lane with a thaw announced is never topped up (its payer is leaving it), and
nothing is allocated beyond the payer's deposit: the lanes lowest on funds get it first.

Decide first, write second: the plan is a pure function of what was read, tested on its own;
the loop only reads, plans and sends.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from web3 import Web3

from gateway import store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LaneState:
    """One lane as the keeper sees it: the chain's numbers plus what this gateway served on it."""

    provider: str
    balance: int
    collected: int
    thawing: int
    #: the value of every request this gateway recorded as served on the lane
    served: int

    @property
    def owed(self) -> int:
        """Served and not collected yet: the part of the balance the provider already earned."""
        return max(0, self.served - self.collected)

    @property
    def free(self) -> int:
        return max(0, self.balance - self.owed)


def plan_topups(lanes: Sequence[LaneState], deposit: int, threshold: int, target: int) -> dict[str, int]:
    """provider -> amount to allocate: each lane without a thaw whose free balance is below
    ``threshold`` gets what brings it to ``target``, lowest free balance first, while the
    deposit lasts (the last one may get only what is left)."""
    if target <= 0 or deposit <= 0:
        return {}
    plan: dict[str, int] = {}
    left = deposit
    for lane in sorted(lanes, key=lambda x: (x.free, x.provider)):
        if lane.thawing > 0 or lane.free >= threshold or lane.free >= target:
            continue
        amount = min(target - lane.free, left)
        if amount <= 0:
            break
        plan[lane.provider] = amount
        left -= amount
    return plan


@dataclass(frozen=True)
class TopUp:
    """One ``allocate`` the keeper sent."""

    payer: str
    amounts: dict[str, int]
    tx_hash: str
    block: int
    gas_used: int


class LaneKeeper:
    """The loop around :func:`plan_topups`, with start / stop / health like the gateway's other
    small services. ``providers()`` names the providers the gateway routes to now."""

    def __init__(self, hearth: Any, signer_key: str, db_engine: Engine, providers: Callable[[], list[str]], *,
                 threshold: int, target: int, interval_s: float = 2.0) -> None:
        self.h = hearth
        self.escrow = hearth.escrow
        self.sender = hearth.sender(signer_key)
        self.signer = self.sender.address
        self.db = db_engine
        self.providers = providers
        self.threshold = threshold
        self.target = target
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.topups: list[TopUp] = []
        self.error: BaseException | None = None

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="lane-keeper", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(10)

    def healthy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wake(self) -> None:
        """Check now (a provider just refused a request for an exhausted lane)."""
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception as exc:  # noqa: BLE001 - the RPC may blink; retried next tick, reported on health
                self.error = exc
                log.warning("lane keeper: %s", exc)
            self._wake.wait(self.interval_s)
            self._wake.clear()

    # ------------------------------------------------------------ one pass
    def tick(self) -> list[TopUp]:
        """Reads, plans and sends the top-ups due now; returns what it sent."""
        with self._lock:
            providers = sorted(set(self.providers()))
            if not providers:
                return []
            now = int(self.h.w3.eth.get_block("latest")["timestamp"])
            sent = []
            for payer in self._payers():
                if not self._may_allocate(payer, now):
                    continue
                lanes = self._lanes(payer, providers)
                plan = plan_topups(lanes, int(self.escrow.functions.depositOf(payer).call()), self.threshold,
                                   self.target)
                if plan:
                    sent.append(self._send(payer, plan))
            return sent

    def _payers(self) -> list[str]:
        """Wallets with a live API key at this gateway."""
        with Session(self.db) as s:
            rows = s.exec(select(store.ApiKey.wallet).where(
                col(store.ApiKey.revoked_at).is_(None), col(store.ApiKey.expiry) > store.now()).distinct())
            return sorted(set(rows))

    def _may_allocate(self, payer: str, now: int) -> bool:
        expiry, thaw_end, can_allocate = self.escrow.functions.getSigner(payer, self.signer).call()
        return bool(can_allocate) and int(expiry) > now and int(thaw_end) == 0

    def _lanes(self, payer: str, providers: list[str]) -> list[LaneState]:
        from gateway.serving import ServingRequest

        with Session(self.db) as s:
            served = {p: int(v) for p, v in s.execute(
                sa.select(col(ServingRequest.provider), sa.func.sum(ServingRequest.value))
                .where(col(ServingRequest.payer) == payer).group_by(col(ServingRequest.provider))).all()}
        out = []
        for p in providers:
            bal, collected, thawing, _ = self.escrow.functions.getLane(payer, p).call()
            out.append(LaneState(p, int(bal), int(collected), int(thawing), served.get(p, 0)))
        return out

    def _send(self, payer: str, plan: dict[str, int]) -> TopUp:
        providers = [Web3.to_checksum_address(p) for p in plan]
        t0 = time.perf_counter()
        rcpt = self.sender.send(self.escrow.functions.allocate(payer, providers, list(plan.values())))
        tx = "0x" + bytes(rcpt["transactionHash"]).hex()
        top = TopUp(payer, dict(plan), tx, int(rcpt["blockNumber"]), int(rcpt["gasUsed"]))
        self.topups.append(top)
        log.info("topped up %d lane(s) of %s with %d in one allocate (tx %s, block %d, %.0f ms)", len(plan), payer,
                 sum(plan.values()), tx, top.block, (time.perf_counter() - t0) * 1000,
                 extra={"payer": payer, "tx_hash": tx, "block": top.block})
        return top
