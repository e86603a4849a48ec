"""Hearth's gateway: a FastAPI service that relays EIP-712 signed jobs from wallets, stores
content-addressed blobs, serves job state and results from the indexer's tables, network views,
live updates (SSE), wallet sessions (SIWE), an OpenAI-compatible embeddings endpoint and the
dashboard. ``create_app(settings)`` builds it; ``python -m gateway run`` serves it."""

from gateway.errors import GatewayError

__all__ = ["GatewayError"]
