"""Building a node from :class:`~worker.settings.WorkerSettings` and running it as a small
service with start / stop / health (what the process supervisor and ``python -m worker`` use).

Where inference runs: with no broker configured (the default) the node runs the model in its
own process, which is all one machine needs and has no moving parts. With
``HEARTH_WORKER_BROKER_URL`` (``sqlite`` for the embedded SQLAlchemy/SQLite transport, or a Redis /
RabbitMQ URL) it sends ``hearth.embed_batch`` tasks to Celery workers
(``celery -A worker.celery_app worker``) on any number of GPU processes and hosts; they must
share the blob store (same data directory, or the gateway's blob API via ``HEARTH_WORKER_BLOB_URL``)
and the node's runtime (backend, dtype, GPU class).
"""

from __future__ import annotations

import logging
import re
import threading
from typing import TYPE_CHECKING

from common.blobs import BlobStore
from contracts.bindings import Hearth
from contracts.chain import connect
from contracts.errors import ContractsError
from contracts.manifest import Manifest
from worker.node.config import Checkpoint, NodeConfig
from worker.node.errors import DutyFailedError, NodeConfigError
from worker.node.executor import CeleryExecutor, Executor, InProcessExecutor
from worker.node.node import Node
from worker.node.sources import GatewayJobSource, JobSource
from worker.settings import WorkerSettings

if TYPE_CHECKING:
    from celery import Celery

log = logging.getLogger(__name__)


def default_gpu_class(device: str | None) -> str:
    """The receipt's GPU class for a device: ``cpu``, or a short CUDA device name (``h100``)."""
    import torch

    if device == "cpu" or (device is None and not torch.cuda.is_available()):
        return "cpu"
    name = torch.cuda.get_device_name(torch.device(device or "cuda")).lower()
    m = re.search(r"\b([a-z]{1,3}\d{2,4}[a-z]?)\b", name.replace("nvidia", ""))
    return (m.group(1) if m else re.sub(r"[^a-z0-9]+", "-", name).strip("-"))[:32]


def load_hearth(settings: WorkerSettings) -> Hearth:
    try:
        manifest = Manifest.load(settings.manifest_file())
    except ContractsError as exc:
        raise NodeConfigError(str(exc)) from exc
    if settings.rpc_url:
        manifest = manifest.model_copy(update={"rpc_url": settings.rpc_url})
    return Hearth(manifest, connect(manifest.rpc_url))


def celery_app_for(settings: WorkerSettings) -> Celery:
    from worker.celery_app import make_app

    return make_app(settings)


def build_executor(settings: WorkerSettings, store: BlobStore) -> Executor:
    if settings.broker():
        return CeleryExecutor(
            celery_app_for(settings),
            queue=settings.queue,
            jobs_per_task=settings.jobs_per_task,
            timeout_s=settings.task_timeout_s,
            backend=settings.backend,
            dtype=settings.dtype,
        )
    return InProcessExecutor(
        store,
        backend=settings.backend,
        dtype=settings.dtype,
        device=settings.device,
        max_tokens=settings.max_tokens,
        max_batch_size=settings.max_batch_size,
        max_input_bytes=settings.max_input_bytes,
    )


def node_config(settings: WorkerSettings) -> NodeConfig:
    return NodeConfig(
        role=settings.role,
        sample_all=settings.sample_all,
        gpu_class=settings.gpu_class or default_gpu_class(settings.device),
        confirmations=settings.confirmations,
        log_chunk_blocks=settings.log_chunk_blocks,
        max_open_jobs=settings.max_open_jobs,
        min_deadline_margin_s=settings.min_deadline_margin_s,
        withdraw_interval_s=settings.withdraw_interval_s,
        min_withdraw=settings.min_withdraw,
        max_input_bytes=settings.max_input_bytes,
        poll_interval_s=settings.poll_interval_s,
        max_duty_failures=settings.max_duty_failures,
        name=settings.node_name,
    )


def build_node(
    settings: WorkerSettings,
    key: str,
    *,
    hearth: Hearth | None = None,
    store: BlobStore | None = None,
    executor: Executor | None = None,
    checkpoint: Checkpoint | None = None,
) -> Node:
    """A node wired from settings (any part can be passed in instead, e.g. a shared executor)."""
    h = hearth or load_hearth(settings)
    store = store or settings.open_blobs(settings.data_dir, key)
    executor = executor or build_executor(settings, store)
    source: JobSource | None = None
    if settings.gateway_url:
        source = GatewayJobSource(settings.gateway_url, [executor.model_hash])
    return Node(
        h,
        key,
        store,
        executor,
        node_config(settings),
        state_dir=settings.data_dir / "worker",
        job_source=source,
        checkpoint=checkpoint,
    )


class NodeService:
    """A node on its own thread: ``start()``, ``stop()``, ``healthy()``.

    >>> svc = NodeService(build_node(WorkerSettings(), key)); svc.start(); ...; svc.stop()
    """

    def __init__(self, node: Node) -> None:
        self.node = node
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None
        """What stopped the node's loop (a duty that kept failing), once it has."""

    def start(self) -> None:
        if self._thread and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, name=f"hearth-node-{self.node.address[:10]}", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        try:
            self.node.run(self._stop)
        except Exception as exc:  # noqa: BLE001 - kept for the owner (healthy() turns false)
            self.error = exc
            log.error("node %s stopped: %s", self.node.address, exc, exc_info=not isinstance(exc, DutyFailedError))

    def stop(self, timeout: float | None = 30.0) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout)
            self._thread = None

    def healthy(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self.node.healthy()


def run_node(
    settings: WorkerSettings,
    key: str,
    stop: threading.Event,
    *,
    once: bool = False,
    checkpoint: Checkpoint | None = None,
) -> None:
    """Builds a node from settings and runs it in this thread until ``stop`` is set."""
    node = build_node(settings, key, checkpoint=checkpoint)
    try:
        node.run(stop, once=once)
    finally:
        node.close()
