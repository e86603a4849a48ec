"""Celery for fanning inference out over GPU processes and hosts.

Embedded default: the SQLAlchemy transport on a SQLite file (``sqla+sqlite:///<data_dir>/
celery/broker.sqlite``) with results in ``db+sqlite:///<data_dir>/celery/results.sqlite``; at
scale ``HEARTH_WORKER_BROKER_URL`` names Redis or RabbitMQ (and ``HEARTH_WORKER_RESULT_BACKEND`` a result
store; a Redis broker keeps its results in the same Redis by default).

GPU work is configured the way long, expensive tasks should be: ``acks_late`` (a task is
acknowledged when it finishes, so a worker that dies mid-batch has its batch redelivered),
``worker_prefetch_multiplier = 1`` (a GPU process holds one batch at a time, so a slow host
does not hoard work), ``task_reject_on_worker_lost``. Tasks are idempotent (see
``worker.tasks``), which is what makes redelivery safe.

Run a worker process (one per GPU)::

    celery -A worker.celery_app worker --pool=solo -c 1 -Q hearth
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from celery import Celery
from celery.signals import setup_logging as celery_setup_logging

from common.log import setup_logging
from worker.settings import WorkerSettings, default_broker_url


@celery_setup_logging.connect  # type: ignore[untyped-decorator]
def _logging(loglevel: str | int | None = None, **_: Any) -> None:
    """A Celery worker process logs like every other entry point (:mod:`common.log`); its own
    lifecycle lines (``ready.``, task received/succeeded) stay at INFO."""
    level = logging.getLevelName(loglevel) if isinstance(loglevel, int) else (loglevel or WorkerSettings().log_level)
    setup_logging(str(level), quiet=("web3", "urllib3", "httpx"))


def _ensure_sqlite_dir(url: str) -> None:
    for prefix in ("sqla+sqlite:///", "db+sqlite:///", "sqlite:///"):
        if url.startswith(prefix):
            Path(url[len(prefix) :]).parent.mkdir(parents=True, exist_ok=True)


def make_app(settings: WorkerSettings | None = None) -> Celery:
    """A Celery app for these settings (the module-level :data:`app` reads the environment)."""
    s = settings or WorkerSettings()
    broker = s.broker() or default_broker_url(s.data_dir)
    backend = s.backend_url()
    _ensure_sqlite_dir(broker)
    _ensure_sqlite_dir(backend)
    app = Celery("hearth", broker=broker, backend=backend, include=["worker.tasks"])
    transport_options: dict[str, object] = {}
    if broker.startswith(("redis://", "rediss://")):
        # A batch may run for minutes: Redis must not hand an unacknowledged one to another
        # worker before then (acks_late keeps it unacknowledged until it finishes).
        transport_options["visibility_timeout"] = 3600
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=s.queue,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_expires=24 * 3600,
        task_track_started=True,
        broker_connection_retry_on_startup=True,
        broker_transport_options=transport_options,
        worker_send_task_events=False,
    )
    return app


app = make_app()
