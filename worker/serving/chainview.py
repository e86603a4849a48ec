"""What the provider endpoint needs to know from the chain, in memory, refreshed every block.

Lanes (``PaymentEscrow.getLane``), payers' signers (``getSigner``) and the provider's own
quoted price (``BatchSettlement.priceOf``) are read once when first needed and re-read on every
new block, so a payer's thaw or a signer's revocation stops service within a block, and a
request never waits for an RPC call it did not need.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from web3 import Web3

from contracts.settlement import Lane, Settlement

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SignerState:
    expiry: int
    thaw_end: int

    def refusal(self, now: int) -> str | None:
        """None when the signer may sign for its payer now, else the reason it may not."""
        if self.expiry == 0:
            return "signer_not_authorized"
        if self.thaw_end != 0:
            return "signer_revoked"  # revocation announced: stop at once, collect what is owed
        if now >= self.expiry:
            return "signer_revoked"
        return None


class ChainView:
    def __init__(self, settlement: Settlement, provider: str, model_id: bytes | Sequence[bytes], *,
                 poll_s: float = 0.25, on_thaw: Callable[[str], None] | None = None,
                 on_block: Callable[[int, int], None] | None = None) -> None:
        self.s = settlement
        self.w3 = settlement.h.w3
        self.provider = Web3.to_checksum_address(provider)
        #: every model this endpoint serves (the first is the default ``price()`` is for)
        self.model_ids = [model_id] if isinstance(model_id, bytes) else list(model_id)
        self.model_id = self.model_ids[0]
        self.poll_s = poll_s
        self.on_thaw = on_thaw
        self.on_block = on_block
        self._lock = threading.Lock()
        self._lanes: dict[str, Lane] = {}
        self._signers: dict[tuple[str, str], SignerState] = {}
        self._prices: dict[bytes, int] = {}
        self.block = -1
        self.now = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors = 0

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self._refresh()
        self._thread = threading.Thread(target=self._loop, name="chain-view", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(5)

    def healthy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                if int(self.w3.eth.block_number) != self.block:
                    self._refresh()
            except Exception as exc:  # noqa: BLE001 - the RPC may blink; keep the last view
                self.errors += 1
                log.warning("chain view refresh failed: %s", exc)

    # ------------------------------------------------------------ reads
    def _read_lane(self, payer: str) -> Lane:
        return self.s.lane(payer, self.provider)

    def _read_signer(self, payer: str, signer: str) -> SignerState:
        if signer.lower() == payer.lower():
            return SignerState(2**64 - 1, 0)
        expiry, thaw_end, _ = self.s.escrow.functions.getSigner(payer, signer).call()
        return SignerState(int(expiry), int(thaw_end))

    def _refresh(self) -> None:
        blk = self.w3.eth.get_block("latest")
        number, now = int(blk["number"]), int(blk["timestamp"])
        prices = {m: int(self.s.price_of(self.provider, m)) for m in self.model_ids}
        with self._lock:
            payers, pairs = list(self._lanes), list(self._signers)
        lanes = {p: self._read_lane(p) for p in payers}
        signers = {k: self._read_signer(*k) for k in pairs}
        thawed: list[str] = []
        with self._lock:
            for p, lane in lanes.items():
                old = self._lanes.get(p)
                if lane.thawing > 0 and (old is None or old.thawing == 0):
                    thawed.append(p)
                self._lanes[p] = lane
            self._signers.update(signers)
            self._prices.update(prices)
            self.block, self.now = number, now
        for p in thawed:
            log.info("payer %s started a thaw of its lane: service stops, collecting", p)
            if self.on_thaw:
                self.on_thaw(p)
        if self.on_block:
            self.on_block(number, now)

    def price(self, model_id: bytes | None = None) -> int:
        """This provider's quote for ``model_id`` (default: the first model it serves)."""
        m = self.model_id if model_id is None else model_id
        p = self._prices.get(m)
        if p is None:
            p = self._prices[m] = int(self.s.price_of(self.provider, m))
        return p

    def lane(self, payer: str) -> Lane:
        with self._lock:
            lane = self._lanes.get(payer)
        if lane is None:
            lane = self._read_lane(payer)
            with self._lock:
                self._lanes.setdefault(payer, lane)
        return lane

    def signer(self, payer: str, signer: str) -> SignerState:
        with self._lock:
            st = self._signers.get((payer, signer))
        if st is None:
            st = self._read_signer(payer, signer)
            with self._lock:
                self._signers.setdefault((payer, signer), st)
        return st

    def payers(self) -> list[str]:
        with self._lock:
            return list(self._lanes)
