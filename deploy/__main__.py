"""``python -m deploy devnet`` (the devnet alone, until Ctrl-C) and ``python -m deploy up``
(the whole stack). The full CLI is ``hearth``."""

import typer

from common.log import setup_logging
from deploy.cli import devnet_up, up
from deploy.settings import UpSettings

app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Hearth devnet and stack. The full CLI is `hearth`.")
app.command("devnet", help="Start Anvil, deploy, fund and stake; run until Ctrl-C.")(devnet_up)
app.command("up", help="The whole stack: devnet, indexer, a CPU worker, the gateway.")(up)

if __name__ == "__main__":
    setup_logging(UpSettings().log_level)
    app(prog_name="python -m deploy")
