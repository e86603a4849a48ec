"""What ``make up`` adds when it is given the scale-out services' URLs: Celery worker processes
for the provider when a broker is configured, and more gateways sharing one database.

``HEARTH_WORKER_BROKER_URL=redis://...`` (or ``sqlite`` for the embedded transport) makes the
worker node fan its batches out over Celery; ``HEARTH_UP_CELERY_WORKERS`` (2) worker processes
then consume its queue (``HEARTH_WORKER_QUEUE``), each a process with its own model (one per GPU
on a GPU host: pin each with ``CUDA_VISIBLE_DEVICES`` in a unit of its own, see
``deploy/systemd``). ``HEARTH_UP_GATEWAYS`` (1) gateways listen on consecutive ports from
``--gateway-port``; they share ``HEARTH_GATEWAY_DATABASE_URL`` (API keys, spend, served
requests), which must then be PostgreSQL for more than one host. Each service reads its part of
the environment through its own Settings class; the supervisor passes the environment through.
"""

from __future__ import annotations

import sys

from deploy.settings import CliSettings
from deploy.up import Child
from worker.settings import WorkerSettings


def celery_argv(name: str, queue: str) -> list[str]:
    """One Celery worker process (solo pool: one model per process) on the node's queue."""
    return [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "--pool=solo", "-c", "1",
            "-Q", queue, "-n", f"{name}@%h", "--loglevel=INFO", "--without-gossip", "--without-mingle",
            "--without-heartbeat"]


def extra_services(gateway_port: int, cli: CliSettings | None = None,
                   worker: WorkerSettings | None = None) -> list[Child]:
    """The Celery workers (only when a broker is configured) and the gateways beyond the first."""
    cli = cli or CliSettings()
    worker = worker or WorkerSettings()
    children = []
    if worker.broker():
        children += [Child(f"celery{i + 1}", celery_argv(f"celery{i + 1}", worker.queue))
                     for i in range(cli.up_celery_workers)]
    children += [Child(f"gateway{i + 1}", [sys.executable, "-m", "deploy.child", "gateway", "run", "--port",
                                           str(gateway_port + i)])
                 for i in range(1, cli.up_gateways)]
    return children
