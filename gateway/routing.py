"""Picking a provider for a serving-plane request.

Candidates come from the index: registered providers that are active (staked at least the
minimum, not jailed), serve the model, quoted a price for it (``BatchSettlement.quotePrice``,
capped at the model's ceiling) and registered a usable endpoint (``http(s)://host:port``). The
list is cached for ``refresh_s``.

The gateway measures each provider itself: a latency moving average (EMA over answered
requests), requests in flight, and failures (a provider that failed is skipped for a cool-down
that doubles with consecutive failures, up to 30 s).

Order, documented in the README ("Serving plane: routing"):

1. healthy providers below ``max_inflight`` and not at their stake's capacity first (the rest
   only as a last resort); a provider that refused a request with ``503 capacity`` counts as at
   capacity for its ``Retry-After`` (at most ``MAX_CAPACITY_WAIT_S``), and is neither a failure
   nor cooled down;
2. the client's region first (``x-hearth-region`` header), when any candidate is there;
3. within the latency budget: providers whose EMA is at most the best EMA plus
   ``latency_budget_ms`` (an unmeasured provider counts as within it);
4. lowest quoted price, then least in flight, then lowest EMA, then address.

A request is tried on the first provider of that order and, if it fails or times out, on the
next, with the same request id.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from contracts.serving import usable_endpoint

EMA_ALPHA = 0.2
MAX_COOLDOWN_S = 30.0
MAX_CAPACITY_WAIT_S = 60.0


@dataclass(frozen=True)
class Candidate:
    address: str
    endpoint: str
    region: str
    price: int


@dataclass
class ProviderStats:
    ema_ms: float | None = None
    inflight: int = 0
    failures: int = 0
    down_until: float = 0.0
    served: int = 0
    failed: int = 0
    full_until: float = 0.0
    at_capacity: int = 0

    def healthy(self, now: float) -> bool:
        return now >= self.down_until

    def full(self, now: float) -> bool:
        return now < self.full_until


@dataclass
class Router:
    index_engine: Engine
    refresh_s: float = 1.0
    latency_budget_ms: float = 50.0
    max_inflight: int = 128
    _cache: dict[str, tuple[float, list[Candidate]]] = field(default_factory=dict)
    stats: dict[str, ProviderStats] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # ------------------------------------------------------------ candidates
    def candidates(self, model_id: str) -> list[Candidate]:
        now = time.monotonic()
        hit = self._cache.get(model_id)
        if hit is not None and now - hit[0] < self.refresh_s:
            return hit[1]
        found = self._load(model_id)
        self._cache[model_id] = (now, found)
        return found

    def invalidate(self) -> None:
        self._cache.clear()

    def _load(self, model_id: str) -> list[Candidate]:
        from common.index_models import Block, Param, PriceCeiling, Provider, ProviderModel, ProviderPrice

        with Session(self.index_engine) as s:
            mp = s.get(Param, "staking.min_stake")
            min_stake = max(int(mp.value) if mp else 1, 1)
            head = s.exec(select(Block).order_by(Block.number.desc()).limit(1)).first()  # type: ignore[attr-defined]
            chain_now = int(head.timestamp) if head is not None else int(time.time())
            ceiling_row = s.get(PriceCeiling, model_id)
            ceiling = int(ceiling_row.ceiling) if ceiling_row is not None else None
            serving = {pm.provider for pm in s.exec(select(ProviderModel).where(
                ProviderModel.model_id == model_id, ProviderModel.serving == True))}  # noqa: E712 - SQL
            prices = {pp.provider: int(pp.price) for pp in s.exec(select(ProviderPrice).where(
                ProviderPrice.model_id == model_id))}
            out = []
            for p in s.exec(select(Provider)):
                if p.address not in serving or p.address not in prices or not usable_endpoint(p.endpoint):
                    continue
                if p.jailed_until > chain_now or int(p.staked) < min_stake:
                    continue
                price = prices[p.address] if ceiling is None else min(prices[p.address], ceiling)
                if price <= 0:
                    continue
                out.append(Candidate(p.address, p.endpoint.rstrip("/"), p.region, price))
        return out

    # ------------------------------------------------------------ choice
    def order(self, model_id: str, region: str | None, exclude: set[str] | None = None) -> list[Candidate]:
        """Every candidate, best first (see the module docstring)."""
        now = time.monotonic()
        cands = [c for c in self.candidates(model_id) if not exclude or c.address not in exclude]
        with self._lock:
            st = {c.address: self.stats.setdefault(c.address, ProviderStats()) for c in cands}
            snap = {a: (s.healthy(now) and not s.full(now) and s.inflight < self.max_inflight, s.ema_ms, s.inflight)
                    for a, s in st.items()}
        good = [c for c in cands if snap[c.address][0]]
        rest = [c for c in cands if not snap[c.address][0]]
        return self._rank(good, region, snap) + sorted(
            rest, key=lambda c: (max(st[c.address].down_until, st[c.address].full_until), c.price))

    def _rank(self, cands: list[Candidate], region: str | None,
              snap: dict[str, tuple[bool, float | None, int]]) -> list[Candidate]:
        if not cands:
            return []
        if region:
            local = [c for c in cands if c.region.lower() == region.lower()]
            if local:
                others = [c for c in cands if c not in local]
                return self._rank(local, None, snap) + self._rank(others, None, snap)
        emas = [e for (_, e, _) in (snap[c.address] for c in cands) if e is not None]
        best = min(emas) if emas else 0.0

        def within(c: Candidate) -> bool:
            e = snap[c.address][1]
            return e is None or e <= best + self.latency_budget_ms

        def key(c: Candidate) -> tuple[int, int, int, float, str]:
            _, e, inflight = snap[c.address]
            return (0 if within(c) else 1, c.price, inflight, e if e is not None else 0.0, c.address)

        return sorted(cands, key=key)

    # ------------------------------------------------------------ measurements
    def try_begin(self, address: str) -> bool:
        """Counts a request in flight at ``address`` unless it is at ``max_inflight`` (then False)."""
        with self._lock:
            s = self.stats.setdefault(address, ProviderStats())
            if s.inflight >= self.max_inflight:
                return False
            s.inflight += 1
            return True

    def all_busy(self, addresses: list[str]) -> bool:
        """Whether every one of ``addresses`` is at ``max_inflight``."""
        with self._lock:
            return all(self.stats.setdefault(a, ProviderStats()).inflight >= self.max_inflight for a in addresses)

    def begin(self, address: str) -> None:
        with self._lock:
            self.stats.setdefault(address, ProviderStats()).inflight += 1

    def saturated(self, address: str, retry_after_s: float) -> None:
        """``address`` refused a request for capacity: route around it for ``retry_after_s``."""
        with self._lock:
            s = self.stats.setdefault(address, ProviderStats())
            s.full_until = time.monotonic() + min(MAX_CAPACITY_WAIT_S, max(0.0, retry_after_s))
            s.at_capacity += 1

    def end(self, address: str, *, ok: bool, latency_ms: float | None = None, answered: bool = True) -> None:
        """A request to ``address`` ended: ``ok`` when the provider is healthy (it answered, or
        refused for a reason of the payer's or of its capacity: ``answered`` False, not counted
        as served)."""
        with self._lock:
            s = self.stats.setdefault(address, ProviderStats())
            s.inflight = max(0, s.inflight - 1)
            if ok:
                s.failures = 0
                s.down_until = 0.0
                s.served += 1 if answered else 0
                if latency_ms is not None:
                    s.ema_ms = latency_ms if s.ema_ms is None else (1 - EMA_ALPHA) * s.ema_ms + EMA_ALPHA * latency_ms
            else:
                s.failures += 1
                s.failed += 1
                # Doubling from 0.5 s up to the cap; the exponent is bounded too, or a provider down
                # for a thousand requests in a row overflows the float (an OverflowError per request).
                s.down_until = time.monotonic() + min(MAX_COOLDOWN_S, 0.5 * 2.0 ** min(s.failures - 1, 30))
