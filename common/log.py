"""The one logging setup of every entry point: one line per record, with the structured fields
a person greps for (job id, block, transaction hash, ...) printed from the record's ``extra``.

Loggers are named by module (``logging.getLogger(__name__)``); an entry point calls
:func:`setup_logging` once. Code logs structured values as ``extra``, never in the message as
well::

    log.info("claimed", extra={"job_id": 7, "block": 112, "tx": "0xab..."})
    # 2026-11-30 12:00:01,234 INFO worker.node.duties.provider: claimed job_id=7 block=112 tx=0xab...
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
#: ``extra`` keys printed after the message, in this order
FIELDS = ("node", "job_id", "block", "tx", "tx_hash", "client", "wallet", "batch_size", "padded_tokens")
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: libraries that log every request at INFO
NOISY = ("web3", "urllib3", "httpx", "celery", "kombu", "asyncio", "alembic.runtime.plugins")


class StructuredFormatter(logging.Formatter):
    """Appends ``key=value`` for each of :data:`FIELDS` the record carries."""

    def __init__(self, fmt: str = FORMAT, fields: tuple[str, ...] = FIELDS) -> None:
        super().__init__(fmt)
        self.fields = fields

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = " ".join(f"{k}={getattr(record, k)}" for k in self.fields if getattr(record, k, None) is not None)
        return f"{line} {extra}" if extra else line


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time of the record (a test runner or a
    supervisor may swap it), never to a stream that has since been closed."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


def setup_logging(level: str = "INFO", stream: TextIO | None = None, quiet: tuple[str, ...] = NOISY) -> None:
    """Configures the root logger once for this process: one handler, the structured formatter;
    the ``quiet`` libraries log warnings only."""
    handler = logging.StreamHandler(stream) if stream is not None else _StderrHandler()
    handler.setFormatter(StructuredFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in quiet:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
