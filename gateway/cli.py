"""The gateway's command line: ``hearth gateway run`` (mounted by the main CLI) or
``python -m gateway run``."""

from __future__ import annotations

import typer

from common.log import setup_logging

app = typer.Typer(help="The gateway: API, blobs, live updates and dashboard.", no_args_is_help=True,
                  pretty_exceptions_enable=False)


@app.callback()
def _root() -> None:
    """The gateway: API, blobs, live updates and dashboard."""


@app.command("run")
def run(
    host: str | None = typer.Option(None, help="Bind address (default HEARTH_GATEWAY_HOST or 127.0.0.1)."),
    port: int | None = typer.Option(None, help="Port (default HEARTH_GATEWAY_PORT or 8000)."),
    log_level: str | None = typer.Option(None, help="Log level (HEARTH_LOG_LEVEL)."),
) -> None:
    """Serve the gateway until Ctrl-C. Reads the deployment manifest and the indexer's database
    from the data directory; the relayer key from HEARTH_GATEWAY_RELAYER_KEY (or, on a devnet, the
    devnet accounts file)."""
    import uvicorn

    from contracts.errors import ContractsError
    from gateway.app import create_app
    from gateway.settings import GatewaySettings

    overrides = {k: v for k, v in {"host": host, "port": port, "log_level": log_level}.items() if v is not None}
    try:
        settings = GatewaySettings(**overrides)  # type: ignore[arg-type]
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    setup_logging(settings.log_level)
    try:
        api = create_app(settings)
    except ContractsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    uvicorn.run(api, host=settings.host, port=settings.port, log_level=settings.log_level.lower(), access_log=False)


def main() -> None:
    app(prog_name="python -m gateway")
