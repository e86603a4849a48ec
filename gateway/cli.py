"""The gateway's command line: ``hearth gateway run`` (mounted by the main CLI) or
``python -m gateway run``."""

from __future__ import annotations

import logging
import os

import typer

app = typer.Typer(help="The gateway: API, blobs, live updates and dashboard.", no_args_is_help=True,
                  pretty_exceptions_enable=False)


@app.callback()
def _root() -> None:
    """The gateway: API, blobs, live updates and dashboard."""


class _Fields(logging.Formatter):
    """Appends the structured fields (job id, tx hash, wallet, ...) a record carries."""

    KEYS = ("job_id", "tx_hash", "client", "wallet", "block")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = " ".join(f"{k}={getattr(record, k)}" for k in self.KEYS if hasattr(record, k))
        return f"{line} [{extra}]" if extra else line


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(_Fields("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


@app.command("run")
def run(
    host: str | None = typer.Option(None, help="Bind address (default HEARTH_GATEWAY_HOST or 127.0.0.1)."),
    port: int | None = typer.Option(None, help="Port (default HEARTH_GATEWAY_PORT or 8000)."),
    log_level: str = typer.Option(os.environ.get("HEARTH_LOG_LEVEL", "INFO"), help="Log level."),
) -> None:
    """Serve the gateway until Ctrl-C. Reads the deployment manifest and the indexer's database
    from the data directory; the relayer key from HEARTH_RELAYER_KEY (or, on a devnet, the
    devnet accounts file)."""
    import uvicorn

    from contracts.errors import ContractsError
    from gateway.app import create_app
    from gateway.settings import GatewaySettings

    configure_logging(log_level)
    overrides: dict[str, object] = {}
    if host is not None:
        overrides["host"] = host
    if port is not None:
        overrides["port"] = port
    settings = GatewaySettings(**overrides)  # type: ignore[arg-type]
    try:
        api = create_app(settings)
    except ContractsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    uvicorn.run(api, host=settings.host, port=settings.port, log_level=log_level.lower(), access_log=False)


def main() -> None:
    app(prog_name="python -m gateway")
