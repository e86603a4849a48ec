"""Prometheus metrics of one indexer (own registry, so several can live in one process)."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server


class IndexerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.head = Gauge("hearth_indexer_head_block", "Chain head block number", registry=r)
        self.indexed = Gauge("hearth_indexer_indexed_block", "Last indexed block", registry=r)
        self.lag = Gauge("hearth_indexer_lag_blocks", "Head minus last indexed block", registry=r)
        self.reorgs = Counter("hearth_indexer_reorgs", "Reorgs rolled back", registry=r)
        self.reorg_depth = Histogram(
            "hearth_indexer_reorg_depth_blocks", "Depth of rolled back reorgs",
            buckets=(1, 2, 3, 5, 10, 20, 50, 100, 256), registry=r)
        self.events = Counter("hearth_indexer_events", "Events indexed", registry=r)
        self.events_per_second = Gauge(
            "hearth_indexer_events_per_second", "Events indexed per second (moving average)",
            registry=r)
        self.batch_seconds = Histogram(
            "hearth_indexer_batch_seconds", "Time to fetch and write one batch", registry=r)
        self.rpc_errors = Counter("hearth_indexer_rpc_errors", "Failed RPC calls", registry=r)
        self.errors = Counter("hearth_indexer_errors", "Failed sync steps", registry=r)
        self._rate_t = time.monotonic()
        self._rate_n = 0
        self._server: Any = None

    def add_events(self, n: int) -> None:
        self.events.inc(n)
        self._rate_n += n
        now = time.monotonic()
        dt = now - self._rate_t
        if dt >= 1.0:
            self.events_per_second.set(self._rate_n / dt)
            self._rate_t, self._rate_n = now, 0

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        self._server = start_http_server(port, addr=host, registry=self.registry)

    def close(self) -> None:
        if self._server is not None:
            server, _thread = self._server
            server.shutdown()
            server.server_close()
            self._server = None
