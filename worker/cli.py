"""``python -m worker`` (mounted by the main CLI as ``hearth worker``).

``run`` starts a node. Its operator key comes from, in order: ``--devnet-role NAME`` (the
devnet accounts file, ``$HEARTH_DATA_DIR/devnet-accounts.json``), ``--key-file PATH`` (a file
holding the hex key, outside the repository), or the environment variable named by
``--key-env`` (``HEARTH_WORKER_KEY`` by default). A key is never taken on the command line.

``demo`` plays the cheater scenario on a private devnet of its own.
"""

from __future__ import annotations

import logging
import os
import signal
import stat
import threading
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from contracts.errors import ContractsError
from worker.blobs import BlobError
from worker.node.errors import NodeConfigError, NodeError
from worker.settings import WorkerSettings

app = typer.Typer(
    name="worker", help="Hearth worker node: provider and verifier.", no_args_is_help=True, add_completion=False
)
console = Console(stderr=True)

#: Test-only fault injection: ``HEARTH_WORKER_CRASH_AT=after_claim`` (or after_compute,
#: after_receipt, after_finalize, after_commit, after_reveal) kills the process at that point
#: as hard as a power cut (``os._exit``), to test restarts.
CRASH_ENV = "HEARTH_WORKER_CRASH_AT"


class RoleName(StrEnum):
    provider = "provider"
    verifier = "verifier"
    both = "both"


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(message)s",
        datefmt="[%X]",
        force=True,
        handlers=[RichHandler(console=console, show_path=False, rich_tracebacks=True, markup=False)],
    )
    for noisy in ("web3", "urllib3", "httpx", "celery", "kombu"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))


def resolve_key(settings: WorkerSettings, key_env: str, key_file: Path | None, devnet_role: str | None) -> str:
    """The operator key from the devnet accounts file, a key file or an environment variable."""
    if devnet_role:
        from deploy import accounts

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
    value = os.environ.get(key_env)
    if not value and key_env == "HEARTH_WORKER_KEY" and settings.worker_key:
        value = settings.worker_key.get_secret_value()
    if not value:
        raise NodeConfigError(f"no operator key: set {key_env}, or pass --key-file or --devnet-role")
    return value.strip()


def _crash_hook() -> Any:
    point = os.environ.get(CRASH_ENV)
    if not point:
        return None

    def hook(name: str, ids: list[int]) -> None:
        if name == point:
            logging.getLogger(__name__).warning("%s=%s: killing the process now (jobs %s)", CRASH_ENV, point, ids)
            logging.shutdown()
            os._exit(137)

    return hook


@app.callback()
def _main() -> None:
    """Hearth worker node: provider and verifier."""


@app.command()
def run(
    role: Annotated[
        RoleName | None,
        typer.Option(
            help="provider: claim and run jobs; verifier: re-execute sampled receipts and challenge "
            "(both sit on committees)"
        ),
    ] = None,
    key_env: Annotated[str, typer.Option(help="environment variable holding the operator key")] = "HEARTH_WORKER_KEY",
    key_file: Annotated[Path | None, typer.Option(help="file holding the operator key (hex)")] = None,
    devnet_role: Annotated[
        str | None, typer.Option(help="use this devnet account's key (provider, verifier, verifier2, cheater...)")
    ] = None,
    cheat: Annotated[bool, typer.Option("--cheat", help="demo/test: perturb every output")] = False,
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
    blob_url: Annotated[str | None, typer.Option(help="gateway base URL for blobs (HEARTH_BLOB_URL)")] = None,
    poll_interval: Annotated[float | None, typer.Option(help="seconds between passes")] = None,
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING")] = "INFO",
) -> None:
    """Run a worker node until interrupted (or one pass with --once)."""
    setup_logging(log_level)
    updates: dict[str, Any] = {
        k: v
        for k, v in {
            "role": role.value if role else None,
            "broker_url": broker,
            "data_dir": data_dir,
            "manifest": manifest,
            "rpc_url": rpc_url,
            "blob_url": blob_url,
            "node_name": devnet_role,
            "poll_interval_s": poll_interval,
        }.items()
        if v is not None
    }
    try:
        base = WorkerSettings()
        settings = WorkerSettings.model_validate(
            {**base.model_dump(), **updates, "cheat": cheat or base.cheat, "sample_all": sample_all or base.sample_all}
        )
        key = resolve_key(settings, key_env, key_file, devnet_role)
        from worker.node.service import build_node

        node = build_node(settings, key, checkpoint=_crash_hook())
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
def demo(log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING")] = "INFO") -> None:
    """Watch a cheating node get caught, challenged, voted down and slashed (private devnet)."""
    setup_logging(log_level)
    from worker.node.demo import run_cheater_demo

    out = run_cheater_demo()
    table = Table(title=f"balances (job A={out.honest_job} honest, job B={out.cheater_job} cheated)")
    for col in ("account", "hUSD wallet", "hUSD credit", "HST wallet", "HST staked"):
        table.add_column(col, justify="right" if col != "account" else "left")
    for role, after in out.balances_after.items():
        b = out.balances_before[role]

        def cell(k: str, scale: int, after: dict[str, int] = after, b: dict[str, int] = b) -> str:
            d = after[k] - b[k]
            return f"{after[k] / scale:,.6f}" + (f" ({'+' if d > 0 else ''}{d / scale:,.6f})" if d else "")

        table.add_row(role, cell("usd", 10**6), cell("credit", 10**6), cell("hst", 10**18), cell("staked", 10**18))
    Console().print(table)
    Console().print(f"cheater jailed until {out.cheater_jailed_until} (chain time)")


if __name__ == "__main__":
    app()
