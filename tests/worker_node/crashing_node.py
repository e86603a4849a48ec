"""``python -m tests.worker_node.crashing_node POINT [worker run options]``: ``python -m worker
run`` with a crash point. After the step named ``POINT`` (after_claim, after_compute,
after_receipt, after_finalize, after_commit, after_reveal) the process dies as hard as a power
cut (``os._exit(137)``), to test restarts. A test hook: no setting of the worker does this."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import typer

from common.log import setup_logging
from worker.cli import run_node, settings_from_options


def main(point: str, devnet_role: str = typer.Option(...), once: bool = typer.Option(False, "--once")) -> None:
    def hook(name: str, ids: list[int]) -> None:
        if name == point:
            logging.getLogger(__name__).warning("crash point %s: killing the process now (jobs %s)", point, ids)
            logging.shutdown()
            os._exit(137)

    settings = settings_from_options(node_name=devnet_role)
    setup_logging(settings.log_level)
    run_node(settings, None, devnet_role, once=once, checkpoint=hook)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    typer.run(main)
