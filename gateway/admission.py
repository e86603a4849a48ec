"""Load shedding: past its capacity the gateway refuses at once instead of queueing.

Three bounds, each a setting (``HEARTH_GATEWAY_*``):

* ``max_inflight``: requests in flight on the inference routes (``POST /v1/embeddings``,
  ``/v1/chat/completions``, ``/v1/completions``) for the whole gateway; beyond it
  ``503 overloaded``;
* ``max_client_inflight``: the same per client (the API key of the ``Authorization`` header,
  else the client IP); beyond it ``429 too_many_requests_in_flight``;
* ``max_provider_inflight``: requests this gateway has in flight at one provider
  (:mod:`gateway.routing`); a provider at its bound is skipped, and when every provider that
  serves the model is at its bound the request is answered ``503 providers_saturated``
  (:mod:`gateway.serving`) before anything is reserved against the key's cap.

Every shed answer carries ``Retry-After`` (``shed_retry_after_s``) and ``x-should-retry: true``:
nothing was charged and no provider was asked, so a retry is always safe (unlike a 504 of the
per-job path, which says ``false``). The first two checks run in an ASGI middleware before the
body is read, so a shed request costs a dictionary look-up; memory stays bounded because at most
``max_inflight`` requests are admitted and a client's counter is dropped when it reaches zero.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from gateway.errors import GatewayError, OverloadedError, TooManyInFlightError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: the routes that reach a provider (and so hold a slot while they run)
INFERENCE_PATHS = frozenset({"/v1/embeddings", "/v1/chat/completions", "/v1/completions"})


@dataclass
class Admission:
    """Counts requests in flight, overall and per client; ``enter`` raises when a bound is hit."""

    max_inflight: int
    max_client_inflight: int
    retry_after_s: float = 1.0
    inflight: int = 0
    per_client: dict[str, int] = field(default_factory=dict)
    shed: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def enter(self, client: str) -> None:
        with self._lock:
            mine = self.per_client.get(client, 0)
            if mine >= self.max_client_inflight:
                self.shed += 1
                raise TooManyInFlightError(
                    f"this client already has {mine} requests in flight (the limit is {self.max_client_inflight}); "
                    f"nothing was charged, retry in {self.retry_after_s:g}s", retry_after=self.retry_after_s,
                    limit=self.max_client_inflight)
            if self.inflight >= self.max_inflight:
                self.shed += 1
                raise OverloadedError(
                    f"the gateway has {self.inflight} requests in flight, its limit; nothing was charged, retry in "
                    f"{self.retry_after_s:g}s", retry_after=self.retry_after_s, limit=self.max_inflight)
            self.inflight += 1
            self.per_client[client] = mine + 1

    def leave(self, client: str) -> None:
        with self._lock:
            self.inflight = max(0, self.inflight - 1)
            left = self.per_client.get(client, 1) - 1
            if left <= 0:
                self.per_client.pop(client, None)
            else:
                self.per_client[client] = left


def client_identity(scope: Scope, trust_proxy: bool = False) -> str:
    """The API key (hashed, so no secret is held in memory) of the request, else its client IP."""
    headers: dict[bytes, bytes] = dict(scope.get("headers") or [])
    auth = headers.get(b"authorization", b"")
    if auth[:7].lower() == b"bearer ":
        return "key:" + hashlib.sha256(auth[7:].strip()).hexdigest()
    if trust_proxy and b"x-forwarded-for" in headers:
        return "ip:" + headers[b"x-forwarded-for"].decode("latin-1").split(",")[0].strip()
    client = scope.get("client")
    return "ip:" + (str(client[0]) if client else "unknown")


class AdmissionMiddleware:
    """Pure ASGI: admits or sheds POSTs to the inference routes before their bodies are read."""

    def __init__(self, app: ASGIApp, admission: Admission, trust_proxy: bool = False,
                 on_shed: Callable[[GatewayError], None] | None = None) -> None:
        self.app = app
        self.admission = admission
        self.trust_proxy = trust_proxy
        self.on_shed = on_shed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST" or scope.get("path") not in INFERENCE_PATHS:
            await self.app(scope, receive, send)
            return
        who = client_identity(scope, self.trust_proxy)
        try:
            self.admission.enter(who)
        except (TooManyInFlightError, OverloadedError) as exc:
            if self.on_shed is not None:
                self.on_shed(exc)
            await _shed_response(exc)(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.admission.leave(who)


def _shed_response(exc: TooManyInFlightError | OverloadedError) -> Any:
    from fastapi.responses import JSONResponse

    from gateway.app import error_body

    headers = {"Retry-After": str(max(1, round(exc.retry_after))), "x-should-retry": "true"}
    return JSONResponse(error_body(exc.status_code, exc.reason, exc.message, exc.error_type, exc.extra or None),
                        status_code=exc.status_code, headers=headers)
