"""Token-bucket rate limits, per client IP and per wallet.

Buckets live in this process (bounded LRU), which is exact for one gateway process; several
processes behind a balancer each enforce the limit on their share, so put the shared limit in
the balancer or move the buckets to Redis at that point.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

from gateway.errors import RateLimitedError


class RateLimiter:
    def __init__(self, per_minute: float, burst: float | None = None, max_keys: int = 100_000) -> None:
        self.rate = per_minute / 60.0
        self.burst = burst if burst is not None else max(1.0, per_minute / 6)
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def check(self, key: str, what: str, cost: float = 1.0) -> None:
        """Takes ``cost`` tokens from ``key``'s bucket or raises :class:`RateLimitedError`."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.pop(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens < cost:
                self._buckets[key] = (tokens, now)
                wait = (cost - tokens) / self.rate
                raise RateLimitedError(f"too many requests for this {what}; retry in {wait:.1f}s",
                                       retry_after=wait, scope=what)
            self._buckets[key] = (tokens - cost, now)
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
