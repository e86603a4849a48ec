"""``python -m deploy.child SERVICE ARGS...``: how the ``make up`` supervisor starts a service.

It runs the service's own CLI (``python -m indexer run`` and so on) after one shared logging
set-up for the stack's log: loggers that only add noise at INFO are raised to WARNING (Alembic's
plugin registry prints seven ``setup plugin`` lines per migration run)."""

from __future__ import annotations

import importlib
import logging
import sys

#: Loggers whose INFO lines say nothing a person reading ``make up``'s log needs.
QUIET = ("alembic.runtime.plugins",)
SERVICES = ("indexer", "worker", "gateway")


def quiet_noisy_loggers() -> None:
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)


def main(argv: list[str]) -> None:
    if not argv or argv[0] not in SERVICES:
        sys.exit(f"usage: python -m deploy.child {{{'|'.join(SERVICES)}}} ARGS...")
    quiet_noisy_loggers()
    cli = importlib.import_module(f"{argv[0]}.cli")
    cli.app(args=argv[1:], prog_name=f"python -m {argv[0]}")


if __name__ == "__main__":
    main(sys.argv[1:])
