"""``python -m indexer`` / ``hearth indexer``: run the indexer, show its status, rebuild.

Options override the environment (``HEARTH_INDEXER_DATABASE_URL``, ``HEARTH_MANIFEST``,
``HEARTH_INDEXER_*``); see :class:`indexer.settings.IndexerSettings`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import sqlalchemy as sa
import typer
from rich.console import Console
from rich.table import Table

from common.log import setup_logging
from contracts.errors import ContractsError
from indexer.errors import IndexerError

app = typer.Typer(help="The indexer: mirrors Hearth's contract events into SQL.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
console = Console()
err_console = Console(stderr=True, soft_wrap=True)  # an error is one line, however long
F = TypeVar("F", bound=Callable[..., Any])

DbOpt = Annotated[str | None, typer.Option("--database-url", help="SQLAlchemy URL (HEARTH_INDEXER_DATABASE_URL).")]
ManifestOpt = Annotated[Path | None, typer.Option("--manifest", help="Deployment manifest path.")]


def _friendly(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (IndexerError, ContractsError, sa.exc.OperationalError, ValueError) as exc:
            err_console.print(f"[red]error:[/] {exc}")
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def _settings(**overrides: Any) -> Any:
    from indexer.settings import IndexerSettings

    return IndexerSettings(**{k: v for k, v in overrides.items() if v is not None})


@app.command()
@_friendly
def run(
    from_block: Annotated[int | None, typer.Option(
        help="First block to index in an empty database (default: the deployment block).")] = None,
    database_url: DbOpt = None,
    manifest: ManifestOpt = None,
    rpc_url: Annotated[str | None, typer.Option(help="Overrides the manifest's RPC URL.")] = None,
    confirmations: Annotated[int | None, typer.Option(
        help="Blocks to trail the head by (0: live view).")] = None,
    poll_interval: Annotated[float | None, typer.Option(help="Seconds between head polls.")] = None,
    metrics_port: Annotated[int | None, typer.Option(help="Prometheus exporter port.")] = None,
    log_level: Annotated[str | None, typer.Option(help="DEBUG, INFO, WARNING (HEARTH_LOG_LEVEL)")] = None,
) -> None:
    """Index from the checkpoint (or the deployment block) and follow the head until Ctrl-C."""
    from indexer.service import IndexerService

    settings = _settings(from_block=from_block, database_url=database_url, manifest_path=manifest,
                         rpc_url=rpc_url, confirmations=confirmations, poll_interval=poll_interval,
                         metrics_port=metrics_port, log_level=log_level)
    setup_logging(settings.log_level)
    IndexerService(settings).run_forever()


@app.command()
@_friendly
def status(
    database_url: DbOpt = None,
    manifest: ManifestOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The checkpoint, the chain head, the lag and the row counts; exits 1 when the chain does not answer."""
    from sqlmodel import SQLModel

    import common.index_models  # noqa: F401 - registers the tables
    from common.db import make_engine
    from contracts.manifest import Manifest
    from indexer.rpc import Rpc

    settings = _settings(database_url=database_url, manifest_path=manifest)
    engine = make_engine(settings.database_url)
    out: dict[str, Any] = {"database": engine.url.render_as_string()}
    insp = sa.inspect(engine)
    if not insp.has_table("checkpoints"):
        out["indexed_block"] = None
    else:
        with engine.connect() as conn:
            cp = conn.execute(sa.text(
                "SELECT chain_id, deployment, start_block, block_number, block_hash, updated_at "
                "FROM checkpoints WHERE id = 1")).mappings().first()
            out.update({"chain_id": cp["chain_id"], "deployment": cp["deployment"],
                        "start_block": cp["start_block"], "indexed_block": cp["block_number"],
                        "indexed_hash": cp["block_hash"], "updated_at": cp["updated_at"]}
                       if cp else {"indexed_block": None})
            out["rows"] = {t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar()
                           for t in sorted(SQLModel.metadata.tables) if insp.has_table(t)}
    no_chain = "the chain does not answer"
    try:
        m = Manifest.load(settings.manifest_file())
        rpc = Rpc(settings.rpc_url or m.rpc_url, timeout=3, retries=0)
        out["head"] = rpc.block_number()
        if out.get("indexed_block") is not None:
            out["lag"] = out["head"] - out["indexed_block"]
    except ContractsError as exc:  # no manifest: no chain to ask
        out["head"], out["chain_error"] = None, str(exc)
        no_chain = "no chain to ask"
    except IndexerError as exc:
        out["head"], out["chain_error"] = None, str(exc)
    if as_json:
        print(json.dumps(out, indent=2, default=str))
    else:
        table = Table(title="Hearth indexer", show_header=False)
        for k, v in out.items():
            if k != "rows":
                table.add_row(k, str(v))
        for t, n in (out.get("rows") or {}).items():
            table.add_row(f"rows: {t}", str(n))
        console.print(table)
    if out.get("head") is None:
        # The database part is still shown above; the status is not healthy without a chain.
        err_console.print(f"[red]error:[/] {no_chain}, so the lag is unknown: {out.get('chain_error')}")
        raise typer.Exit(1)


@app.command()
@_friendly
def rebuild(database_url: DbOpt = None, manifest: ManifestOpt = None) -> None:
    """Rebuilds every projection table from the raw event log (stop the indexer first)."""
    from indexer.lock import WriterLock
    from indexer.sync import Indexer

    settings = _settings(database_url=database_url, manifest_path=manifest)
    setup_logging(settings.log_level)
    ix = Indexer(settings)
    lock = WriterLock(ix.engine)
    lock.acquire()
    try:
        ix.prepare()
        n = ix.rebuild()
    finally:
        lock.release()
    console.print(f"rebuilt projections from {n} events")


@app.command()
@_friendly
def migrate(database_url: DbOpt = None) -> None:
    """Upgrades the database schema to the latest migration."""
    from common.db import make_engine
    from indexer.db import migrate as do_migrate

    engine = make_engine(_settings(database_url=database_url).database_url)
    do_migrate(engine)
    console.print(f"schema up to date in {engine.url.render_as_string()}")
