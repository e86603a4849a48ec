"""Prometheus metrics, on a registry per app (so tests can build many apps in one process)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter("hearth_gateway_requests_total", "HTTP requests by route and status",
                                ["method", "route", "status"], registry=r)
        self.latency = Histogram("hearth_gateway_request_seconds", "HTTP request latency by route",
                                 ["method", "route"], registry=r,
                                 buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 120))
        self.rejected = Counter("hearth_gateway_rejected_total", "requests refused, by reason", ["reason"], registry=r)
        self.jobs_relayed = Counter("hearth_gateway_jobs_relayed_total", "jobs relayed on-chain, by path",
                                    ["path"], registry=r)
        self.relay_seconds = Histogram("hearth_gateway_relay_seconds", "time to relay and mine a job", registry=r,
                                       buckets=(.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30))
        self.blob_bytes = Counter("hearth_gateway_blob_bytes_total", "bytes stored and served", ["direction"],
                                  registry=r)
        self.sse_clients = Gauge("hearth_gateway_sse_clients", "open live-update streams", registry=r)
        self.feed_events = Counter("hearth_gateway_feed_events_total", "job state changes published", registry=r)
        self.embeddings_tokens = Counter("hearth_gateway_embedding_tokens_total", "tokens embedded via API keys",
                                         registry=r)
        self.api_key_spend = Counter("hearth_gateway_api_key_spend_total", "token wei charged to API key grants",
                                     registry=r)
