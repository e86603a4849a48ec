"""``python -m deploy devnet`` (the devnet alone, until Ctrl-C), ``python -m deploy up`` (the
whole stack) and ``python -m deploy demo-serving`` (``make demo``: requests through the running
stack's serving plane). The full CLI is ``hearth``."""

import typer

from common.log import setup_logging
from deploy.cli import devnet_up, up
from deploy.settings import UpSettings

app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Hearth devnet and stack. The full CLI is `hearth`.")
app.command("devnet", help="Start Anvil, deploy, fund and stake; run until Ctrl-C.")(devnet_up)
app.command("up", help="The whole stack: devnet, indexer, a CPU worker, the gateway, two serving-plane providers "
                        "and (when installed) the batch verifier.")(up)


@app.command("demo-serving")
def demo_serving(
    n: int = typer.Option(300, "-n", "--requests", min=1, help="Requests to send."),
    concurrency: int = typer.Option(8, min=1, help="Requests in flight at once."),
    gateway: str = typer.Option("http://127.0.0.1:8000", envvar="HEARTH_GATEWAY_URL", help="Gateway base URL."),
    region: str = typer.Option("eu-west", help="Region that half of the requests' API key prefers."),
) -> None:
    """Requests through the running stack's gateway with the openai client (`make demo`): latency
    percentiles, who served what, batches, vouchers, top-ups and gas per request from the chain."""
    from rich.console import Console

    from deploy.demo_serving import DemoError, main

    try:
        main(n=n, concurrency=concurrency, gateway=gateway, region=region)
    except DemoError as exc:
        Console(stderr=True).print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from None

if __name__ == "__main__":
    setup_logging(UpSettings().log_level)
    app(prog_name="python -m deploy")
