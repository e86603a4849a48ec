"""The gateway's FastAPI app: ``create_app(settings)``.

Every error leaves as ``{"error": {"reason", "message", "type", "code", "details"}}`` with the
status its :class:`GatewayError` subclass names; malformed bodies are 422 ``malformed_request``
(``malformed_json`` when the body is not JSON); an unreadable index or chain is 503. A 500 means
a bug, never bad input.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from contracts.errors import ContractsError
from contracts.manifest import Manifest
from gateway.blobs import BlobStore
from gateway.context import Context, build_context
from gateway.errors import GatewayError, InputTooLargeError, RateLimitedError
from gateway.routes import auth, blobs, chat, embeddings, events, jobs, network, serving
from gateway.settings import GatewaySettings

log = logging.getLogger(__name__)
STATIC = Path(__file__).resolve().parent / "static"
#: where the API docs' Swagger UI / ReDoc assets are served from (see ``_install_docs``)
DOCS_ASSETS = "/docs-assets"
#: The docs pages load nothing but this gateway: ReDoc's bundle fetches its logo from
#: cdn.redoc.ly, and any later bundle may reach elsewhere too. Inline script and styles are the
#: pages' own; ReDoc runs its search in a worker made from a blob.
DOCS_CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; "
            "base-uri 'self'; form-action 'self'; frame-ancestors 'self'")
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

DESCRIPTION = """\
Hearth's public entry point: submit EIP-712 signed jobs (relayed on-chain: `POST /v1/jobs`
answers 202 once the transaction is broadcast; poll `GET /v1/relays/{tx_hash}` for the job id
or the revert reason), store content-addressed blobs, follow jobs live, read results with their on-chain verification,
browse providers and models, and call `/v1/embeddings` with the OpenAI client.

Errors: `{"error": {"reason": "<machine-readable>", "message": "...", "type": "...", "code": "<reason>"}}`.
"""


def _printable(text: str) -> str:
    """``text`` as UTF-8 can carry it: a lone surrogate a client sent becomes its ``\\udXXX`` escape."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def error_body(status: int, reason: str, message: str, error_type: str = "invalid_request_error",
               details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"error": {"reason": reason, "message": _printable(message), "type": error_type, "code": reason,
                      "details": _jsonable(details) if details else None}}


def _json_error(status: int, reason: str, message: str, error_type: str = "invalid_request_error",
                details: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, reason, message, error_type, details), status_code=status, headers=headers)


def _jsonable(v: Any) -> Any:
    if isinstance(v, str):
        return _printable(v)
    if isinstance(v, int | float | bool) or v is None:
        return v
    if isinstance(v, dict):
        return {_printable(str(k)): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    return _printable(str(v))


class GuardMiddleware:
    """Pure ASGI (streams pass through untouched): refuses bodies over the limit before they
    are read, rate-limits ``/v1`` per client IP, and records request metrics by route."""

    def __init__(self, app: ASGIApp, ctx: Context) -> None:
        self.app = app
        self.ctx = ctx

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        ctx = self.ctx
        path: str = scope.get("path", "")
        method: str = scope.get("method", "GET")
        t0 = time.perf_counter()
        status_holder = {"status": 500}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
            await send(message)

        early = self._refuse(scope, path)
        try:
            if early is not None:
                await early(scope, receive, send_wrapper)
            else:
                await self.app(scope, self._limited_receive(receive), send_wrapper)
        finally:
            route = scope.get("route")
            label = getattr(route, "path", None) or (
                "/static" if path.startswith(("/static", DOCS_ASSETS)) else "unmatched")
            status = status_holder["status"]
            ctx.metrics.requests.labels(method, label, str(status)).inc()
            if label not in ("/v1/events/jobs", "/v1/jobs/{job_id}/events"):
                ctx.metrics.latency.labels(method, label).observe(time.perf_counter() - t0)

    def _refuse(self, scope: Scope, path: str) -> Response | None:
        ctx = self.ctx
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None:
            try:
                n = int(length)
            except ValueError:
                n = 0
            if n > ctx.settings.max_request_bytes:
                ctx.metrics.rejected.labels("body_too_large").inc()
                return _json_error(413, "body_too_large", f"request body of {n} bytes exceeds "
                                   f"{ctx.settings.max_request_bytes}")
        if path.startswith("/v1/"):
            ip = self._client_ip(scope, headers)
            try:
                ctx.ip_limiter.check(ip, "IP address")
            except RateLimitedError as exc:
                ctx.metrics.rejected.labels(exc.reason).inc()
                return _json_error(429, exc.reason, exc.message, exc.error_type,
                                   headers={"Retry-After": str(max(1, round(exc.retry_after)))})
        return None

    def _client_ip(self, scope: Scope, headers: dict[bytes, bytes]) -> str:
        if self.ctx.settings.trust_proxy and b"x-forwarded-for" in headers:
            return headers[b"x-forwarded-for"].decode("latin-1").split(",")[0].strip()
        client = scope.get("client")
        return str(client[0]) if client else "unknown"

    def _limited_receive(self, receive: Receive) -> Receive:
        limit = self.ctx.settings.max_request_bytes
        seen = 0

        async def wrapped() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise InputTooLargeError(f"request body exceeds {limit} bytes", reason="body_too_large")
            return message

        return wrapped


def _install_error_handlers(app: FastAPI, ctx: Context) -> None:
    @app.exception_handler(GatewayError)
    async def gateway_error(request: Request, exc: GatewayError) -> JSONResponse:
        ctx.metrics.rejected.labels(exc.reason).inc()
        headers = {}
        retry_after = getattr(exc, "retry_after", None)  # 429s and shed 503s (gateway.admission)
        if retry_after is not None:
            headers["Retry-After"] = str(max(1, round(retry_after)))
        if exc.should_retry is not None:
            headers["x-should-retry"] = "true" if exc.should_retry else "false"
        elif 400 <= exc.status_code < 500 and exc.status_code not in (408, 429):
            headers["x-should-retry"] = "false"
        if exc.status_code >= 500:
            log.warning("%s %s -> %d %s: %s", request.method, request.url.path, exc.status_code, exc.reason,
                        exc.message)
        return _json_error(exc.status_code, exc.reason, exc.message, exc.error_type,
                           _jsonable(exc.extra) or None, headers=headers or None)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errs = exc.errors()
        status, reason = 422, "malformed_json" if any(e.get("type") == "json_invalid" for e in errs) \
            else "malformed_request"
        unicode = [e for e in errs if e.get("type") in ("invalid_unicode", "string_unicode")]
        if unicode:  # well-formed JSON whose text no UTF-8 can hold: bad content, as OpenAI answers it
            status, reason, errs = 400, "invalid_unicode", unicode
        ctx.metrics.rejected.labels(reason).inc()
        first = errs[0] if errs else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        msg = f"{where}: {first.get('msg', 'invalid')}" if first else "invalid request"
        return _json_error(status, reason, msg, details={"errors": _jsonable([
            {"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")} for e in errs[:20]])})

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if isinstance(exc.__cause__, GatewayError):  # raised while FastAPI read the body
            return await gateway_error(request, exc.__cause__)
        reason = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _json_error(exc.status_code, reason, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(OperationalError)
    async def db_error(request: Request, exc: DBAPIError) -> JSONResponse:
        log.warning("database unavailable: %s", exc)
        return _json_error(503, "index_unavailable", "the index database is not readable yet (is the indexer running?)",
                           "api_error")

    @app.exception_handler(ContractsError)
    async def chain_error(request: Request, exc: ContractsError) -> JSONResponse:
        log.warning("chain error on %s: %s", request.url.path, exc)
        return _json_error(502, "chain_error", str(exc), "api_error")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _json_error(500, "internal_error", "internal error", "api_error")


def _install_docs(app: FastAPI) -> None:
    """``/docs`` (Swagger UI) and ``/redoc`` from assets in an installed package (the PyPI
    package ``fastapi-offline`` ships Swagger UI 5 and ReDoc), never a CDN, so they work on a
    machine without internet access; :data:`DOCS_CSP` keeps the pages from loading anything
    from elsewhere."""
    import fastapi_offline
    from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
    from fastapi.responses import HTMLResponse

    assets = Path(fastapi_offline.__file__).resolve().parent / "static"
    app.mount(DOCS_ASSETS, StaticFiles(directory=assets), name="docs-assets")
    oauth2 = app.swagger_ui_oauth2_redirect_url or "/docs/oauth2-redirect"

    @app.get("/docs", include_in_schema=False)
    def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        page = get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} - API", oauth2_redirect_url=oauth2,
            swagger_js_url=f"{root}{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_ASSETS}/swagger-ui.css", swagger_favicon_url=f"{root}/favicon.ico")
        page.headers["Content-Security-Policy"] = DOCS_CSP
        return page

    @app.get(oauth2, include_in_schema=False)
    def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        page = get_redoc_html(openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} - API reference",
                              redoc_js_url=f"{root}{DOCS_ASSETS}/redoc.standalone.js",
                              redoc_favicon_url=f"{root}/favicon.ico", with_google_fonts=False)
        page.headers["Content-Security-Policy"] = DOCS_CSP
        return page


def create_app(settings: GatewaySettings | None = None, *, manifest: Manifest | None = None,
               blob_store: BlobStore | None = None) -> FastAPI:
    """The app; ``manifest`` and ``blob_store`` override what the settings point at."""
    settings = settings or GatewaySettings()
    ctx = build_context(settings, manifest=manifest, blobs=blob_store)

    from gateway.reservations import ReservationSweeper

    ttl = settings.reservation_ttl()
    reservations = ReservationSweeper(ctx.db_engine, ttl, interval_s=min(30.0, ttl / 2))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await ctx.feed.start()
        await ctx.sweeper.start()
        await reservations.start()
        if ctx.serving is not None:
            ctx.serving.start()
        log.info("gateway up: chain %d market %s relayer %s", ctx.chain_id, ctx.chain.market,
                 ctx.chain.relayer_address or "(none: read-only)")
        try:
            yield
        finally:
            await reservations.stop()
            await ctx.sweeper.stop()
            await ctx.feed.stop()
            if ctx.serving is not None:
                await ctx.serving.close()
            await run_in_threadpool(ctx.relays.close)

    app = FastAPI(title="Hearth gateway", version="1", description=DESCRIPTION, lifespan=lifespan,
                  docs_url=None, redoc_url=None)
    app.state.ctx = ctx
    _install_error_handlers(app, ctx)
    # FastAPI matches a request against the routers in the order they were included, route by
    # route: the inference routes (every request of the serving plane) come first.
    for r in (embeddings.router, chat.router, serving.router, jobs.router, jobs.relays_router, blobs.router,
              network.router, events.router, auth.router):
        app.include_router(r)

    @app.get("/healthz", tags=["ops"], summary="Liveness and what the gateway is connected to")
    def healthz() -> dict[str, Any]:
        from sqlmodel import Session

        from gateway import index

        index_ok = True
        try:
            with Session(ctx.index_engine) as s:
                block, block_time = index.chain_time(s)
        except Exception:  # noqa: BLE001 - report, don't fail
            index_ok, block, block_time = False, None, None
        from gateway.settings import DEVNET_CHAIN_IDS

        # A devnet's RPC URL helps a browser wallet connect; a real chain's may carry a provider key.
        devnet_rpc = ctx.manifest.rpc_url if ctx.chain_id in DEVNET_CHAIN_IDS else None
        return {"ok": True, "chain_id": ctx.chain_id, "market": ctx.chain.market, "devnet_rpc_url": devnet_rpc,
                "relayer": ctx.chain.relayer_address, "index_ok": index_ok, "indexed_block": block,
                "indexed_block_time": block_time, "time": time.time(),
                "feed_running": ctx.feed.healthy(), "blob_sweeper_running": ctx.sweeper.healthy(),
                "lane_keeper_running": bool(ctx.serving is not None and ctx.serving.keeper is not None
                                            and ctx.serving.keeper.healthy())}

    @app.get("/metrics", tags=["ops"], include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(ctx.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", include_in_schema=False)
    def dashboard() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> FileResponse:
        return FileResponse(STATIC / "favicon.ico", media_type="image/x-icon",
                            headers={"Cache-Control": "public, max-age=86400"})

    _install_docs(app)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    from gateway.admission import AdmissionMiddleware

    # Inside the guard (size and rate checks first), outside everything else: sheds before a body is read.
    app.add_middleware(AdmissionMiddleware, admission=ctx.admission, trust_proxy=settings.trust_proxy,
                       on_shed=lambda exc: ctx.metrics.rejected.labels(exc.reason).inc())
    app.add_middleware(GuardMiddleware, ctx=ctx)
    return app
