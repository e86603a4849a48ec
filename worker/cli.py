"""``python -m worker`` (mounted by the main CLI as ``hearth worker``).

``run`` starts a node. Its operator key comes from, in order: ``--devnet-role NAME`` (the
devnet accounts file, ``$HEARTH_DATA_DIR/devnet-accounts.json``), ``--key-file PATH`` (a file
holding the hex key, outside the repository), or ``HEARTH_WORKER_KEY``. A key is never taken on
the command line.

The cheater demo is ``hearth demo`` (:mod:`deploy.demo`): no option of the worker makes a
cheating node.
"""

from __future__ import annotations

import logging
import signal
import stat
import threading
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from common.blobs import BlobError
from common.log import setup_logging
from contracts.errors import ContractsError
from worker.node.errors import NodeConfigError, NodeError
from worker.node.node import Checkpoint
from worker.settings import WorkerSettings

app = typer.Typer(
    name="worker", help="Hearth worker node: provider and verifier.", no_args_is_help=True, add_completion=False
)
console = Console(stderr=True)


class RoleName(StrEnum):
    provider = "provider"
    verifier = "verifier"
    both = "both"


def resolve_key(settings: WorkerSettings, key_file: Path | None, devnet_role: str | None) -> str:
    """The operator key from the devnet accounts file, a key file or ``HEARTH_WORKER_KEY``."""
    if devnet_role:
        from common import accounts

        accts = accounts.load(settings.data_dir / "devnet-accounts.json")
        if devnet_role not in accts:
            raise NodeConfigError(f"no devnet account {devnet_role!r}; roles: {', '.join(accts)}")
        return accts[devnet_role].key
    if key_file:
        if not key_file.is_file():
            raise NodeConfigError(f"no key file at {key_file}")
        if key_file.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            logging.getLogger(__name__).warning("key file %s is readable by others; chmod 600 it", key_file)
        return key_file.read_text().strip()
    value = settings.worker_key.get_secret_value().strip() if settings.worker_key else ""
    if not value:
        raise NodeConfigError("no operator key: set HEARTH_WORKER_KEY, or pass --key-file or --devnet-role")
    return value


@app.callback()
def _main() -> None:
    """Hearth worker node: provider and verifier."""


def settings_from_options(**options: Any) -> WorkerSettings:
    """The environment's settings with the options that were given on top."""
    base = WorkerSettings()
    given = {k: v for k, v in options.items() if v is not None and v is not False}
    return WorkerSettings.model_validate({**base.model_dump(), **given})


def run_node(settings: WorkerSettings, key_file: Path | None, devnet_role: str | None, *, once: bool,
             checkpoint: Checkpoint | None = None) -> None:
    """Builds a node and runs it until SIGTERM / Ctrl-C (one pass with ``once``). ``checkpoint``
    is the tests' hook after each step."""
    try:
        key = resolve_key(settings, key_file, devnet_role)
        from worker.node.service import build_node

        node = build_node(settings, key, checkpoint=checkpoint)
    except (NodeError, ContractsError, BlobError) as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        node.run(stop, once=once)
    except KeyboardInterrupt:
        stop.set()
    except (NodeError, ContractsError, BlobError) as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from None
    finally:
        node.close()


@app.command()
def run(
    role: Annotated[
        RoleName | None,
        typer.Option(
            help="provider: claim and run jobs; verifier: re-execute sampled receipts and challenge "
            "(both sit on committees)"
        ),
    ] = None,
    key_file: Annotated[Path | None, typer.Option(help="file holding the operator key (hex)")] = None,
    devnet_role: Annotated[
        str | None, typer.Option(help="use this devnet account's key (provider, verifier, verifier2, cheater...)")
    ] = None,
    once: Annotated[bool, typer.Option("--once", help="process what is there now, then exit")] = False,
    sample_all: Annotated[bool, typer.Option("--sample-all", help="verifier: re-execute every receipt")] = False,
    broker: Annotated[
        str | None,
        typer.Option(
            help="Celery broker: 'sqlite' or a redis:// / amqp:// URL (default: run the model in this process)"
        ),
    ] = None,
    data_dir: Annotated[Path | None, typer.Option(help="data directory (HEARTH_DATA_DIR)")] = None,
    manifest: Annotated[Path | None, typer.Option(help="deployment manifest (HEARTH_MANIFEST)")] = None,
    rpc_url: Annotated[str | None, typer.Option(help="RPC URL, overriding the manifest's")] = None,
    blob_url: Annotated[str | None, typer.Option(help="gateway base URL for blobs (HEARTH_WORKER_BLOB_URL)")] = None,
    gateway_url: Annotated[
        str | None, typer.Option(help="read posted jobs from this gateway's public API (HEARTH_WORKER_GATEWAY_URL)")
    ] = None,
    poll_interval: Annotated[float | None, typer.Option(help="seconds between passes")] = None,
    log_level: Annotated[str | None, typer.Option(help="DEBUG, INFO, WARNING (HEARTH_LOG_LEVEL)")] = None,
) -> None:
    """Run a worker node until interrupted (or one pass with --once)."""
    try:
        settings = settings_from_options(
            role=role.value if role else None, broker_url=broker, data_dir=data_dir, manifest_path=manifest,
            rpc_url=rpc_url, blob_url=blob_url, gateway_url=gateway_url, node_name=devnet_role,
            poll_interval_s=poll_interval, sample_all=sample_all, log_level=log_level,
        )
    except ValueError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from None
    setup_logging(settings.log_level)
    run_node(settings, key_file, devnet_role, once=once)


if __name__ == "__main__":
    app()
