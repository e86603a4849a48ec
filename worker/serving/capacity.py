"""Capacity follows stake: a provider's unsettled, challengeable value is bounded by its stake.

The bound, in payment-token wei, is ``staked x per_stake_token / 10**stake_decimals``: each whole
staking token (HST) backs ``per_stake_token`` payment-token wei (default 10**6: one hUSD per HST,
so 500 HST of stake carry at most 500 hUSD of served, not yet unchallengeable work). The
exposure counted against it: every served leaf not yet in a committed batch, every committed
batch whose challenge window is still open (``committedAt + challengeWindow`` past the chain's
clock), and every request being served now. A request that would pass the bound is refused
before any work with ``503`` and reason ``capacity`` and a ``Retry-After`` (seconds until the
oldest open window closes, by the chain's clock); the gateway routes around the provider
meanwhile. The contracts have no such hook (a batch commit is never refused for its value), so
the endpoint enforces it: it is the provider's own protection against being unable to cover
refunds and slashes, and the gateway's reason to spread load as stake grows.

The exposure is read from the ledger once per block (:meth:`Capacity.refresh`, called by the
chain view) and kept in memory between blocks, so a request pays a lock and an addition.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from worker.serving.ledger import Ledger

#: Default payment-token wei one whole staking token backs (one hUSD per HST on the devnet).
DEFAULT_PER_STAKE_TOKEN = 10**6


@dataclass(frozen=True)
class CapacityView:
    bound: int
    exposure: int
    retry_after_s: int

    @property
    def left(self) -> int:
        return max(0, self.bound - self.exposure)


class CapacityExceeded(Exception):
    def __init__(self, view: CapacityView, value: int) -> None:
        super().__init__(f"this provider's unsettled value is {view.exposure} of the {view.bound} its stake backs; "
                         f"this request adds {value}")
        self.view, self.value = view, value


class Capacity:
    def __init__(self, ledger: Ledger, per_stake_token: int = DEFAULT_PER_STAKE_TOKEN,
                 stake_decimals: int = 18) -> None:
        if per_stake_token <= 0:
            raise ValueError("per_stake_token must be positive")
        self.ledger = ledger
        self.per_stake_token = per_stake_token
        self.stake_decimals = stake_decimals
        self._lock = threading.Lock()
        self._bound: int | None = None  # unknown until the first refresh: nothing refused
        self._base = 0  # exposure read from the ledger at the last refresh
        self._added = 0  # reserved since (in flight, or recorded after the read)
        self._inflight = 0  # reserved and not ended
        self._retry_after = 1
        self.refused = 0

    def refresh(self, staked: int, now: int, window: int) -> None:
        """Re-reads the exposure at chain time ``now`` with challenge window ``window`` (seconds)."""
        # Read outside the lock (requests reserve meanwhile). A request in flight counts through
        # ``_inflight``; one that ends between the read and the lock is off by its value until the
        # next block's refresh.
        base, release = self.ledger.exposure(now, window)
        with self._lock:
            self._bound = staked * self.per_stake_token // 10**self.stake_decimals
            self._base = base
            self._added = self._inflight
            self._retry_after = max(1, (release - now) if release is not None else window)

    def reserve(self, value: int) -> None:
        """Counts ``value`` against the bound, or raises :class:`CapacityExceeded`."""
        with self._lock:
            if self._bound is not None and self._base + self._added + value > self._bound:
                self.refused += 1
                raise CapacityExceeded(self._view(), value)
            self._added += value
            self._inflight += value

    def done(self, value: int, recorded_value: int | None) -> None:
        """A request that reserved ``value`` ended: its recorded leaf is worth ``recorded_value``
        (counted until the next refresh reads it from the ledger; None: nothing was recorded)."""
        with self._lock:
            self._inflight -= value
            self._added -= value - (recorded_value or 0)

    def _view(self) -> CapacityView:
        return CapacityView(self._bound if self._bound is not None else -1, self._base + self._added,
                            self._retry_after)

    def view(self) -> CapacityView:
        with self._lock:
            return self._view()
