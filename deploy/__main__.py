"""``python -m deploy devnet`` (the devnet alone, until Ctrl-C) and ``python -m deploy up``
(the whole stack). The full CLI is ``hearth``."""

import logging
import os

import typer

from deploy.cli import devnet_up, up

app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Hearth devnet and stack. The full CLI is `hearth`.")
app.command("devnet", help="Start Anvil, deploy, fund and stake; run until Ctrl-C.")(devnet_up)
app.command("up", help="The whole stack: devnet, indexer, a CPU worker, the gateway.")(up)

if __name__ == "__main__":
    logging.basicConfig(level=os.environ.get("HEARTH_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app(prog_name="python -m deploy")
