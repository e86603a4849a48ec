"""The indexer as a small service: ``start``/``stop`` around a thread, and a health check.

Usable in-process (the supervisor behind ``make up`` and the tests run it in a thread)::

    from indexer.service import IndexerService
    from indexer.settings import IndexerSettings

    svc = IndexerService(IndexerSettings(database_url="sqlite:///idx.db", metrics_port=9102))
    svc.start()            # migrates, takes the writer lock, follows the head
    svc.health()           # Health(ok=True, running=True, head=..., indexed=..., lag=0, ...)
    svc.wait_for(block)    # blocks until the index reaches a block
    svc.stop()
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass

from sqlalchemy.engine import Engine

from common.db import make_engine
from contracts.manifest import Manifest
from indexer.db import migrate
from indexer.errors import ChainInconsistentError, IndexerError
from indexer.lock import WriterLock
from indexer.metrics import IndexerMetrics
from indexer.settings import IndexerSettings
from indexer.sync import Indexer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Health:
    ok: bool
    running: bool
    head: int
    indexed: int
    lag: int
    reorgs: int
    last_error: str | None
    seconds_since_progress: float | None


class IndexerService:
    """Runs an :class:`~indexer.sync.Indexer` in a background thread."""

    def __init__(self, settings: IndexerSettings | None = None, *, manifest: Manifest | None = None,
                 engine: Engine | None = None, metrics: IndexerMetrics | None = None) -> None:
        self.settings = settings or IndexerSettings()
        self.engine = engine or make_engine(self.settings.database_url)
        self.metrics = metrics or IndexerMetrics()
        self.indexer = Indexer(self.settings, manifest=manifest, engine=self.engine,
                               metrics=self.metrics)
        self._lock = WriterLock(self.engine)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_ok: float | None = None
        self.last_error: str | None = None
        #: notified after every completed step; ``_indexed`` is the block that step reached
        self._progress = threading.Condition()
        self._indexed = -1

    # ------------------------------------------------------------------ lifecycle

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Migrates the schema, takes the writer lock, starts the metrics exporter (if a port
        is set) and the sync thread. Chain errors are retried in the thread, not raised here."""
        if self.running:
            return
        self._lock.acquire()
        try:
            migrate(self.engine)
            if self.settings.metrics_port is not None:
                self.metrics.serve(self.settings.metrics_port, self.settings.metrics_host)
        except BaseException:
            self._lock.release()
            raise
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="hearth-indexer", daemon=True)
        self._thread.start()
        log.info("indexer service started (db %s, rpc %s, confirmations %d)",
                 self.engine.url.render_as_string(), self.indexer.rpc.url,
                 self.settings.confirmations)

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.error("indexer thread did not stop within %.0fs", timeout)
            self._thread = None
        self.metrics.close()
        self._lock.release()
        log.info("indexer service stopped at block %s",
                 self.indexer.cp.block_number if self.indexer.cp else None)

    def close(self) -> None:
        self.stop()
        self.indexer.close()
        self.engine.dispose()

    def __enter__(self) -> IndexerService:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def run_forever(self) -> None:
        """Runs in the foreground until SIGINT/SIGTERM (the CLI's ``run``)."""
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, lambda *_: self._stop.set())
        self.start()
        try:
            while not self._stop.wait(0.5):
                if not self.running:
                    raise IndexerError(f"indexer thread died: {self.last_error}")
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    # ------------------------------------------------------------------ loop

    def _loop(self) -> None:
        poll = self.settings.poll_interval
        backoff = poll
        while not self._stop.is_set():
            try:
                if self.indexer.cp is None:
                    self.indexer.prepare()
                r = self.indexer.step()
                with self._progress:
                    self._last_ok = time.monotonic()
                    self.last_error = None
                    self._indexed = self.indexer.cp.block_number if self.indexer.cp else -1
                    self._progress.notify_all()
                backoff = poll
                if r.caught_up:
                    self._stop.wait(poll)
            except ChainInconsistentError as exc:
                log.info("chain moved while reading (%s); retrying", exc)
                self._stop.wait(min(poll, 0.1))
            except Exception as exc:  # noqa: BLE001 - the loop must survive anything
                self.last_error = f"{type(exc).__name__}: {exc}"
                self.metrics.errors.inc()
                log.exception("indexer step failed at block %s; retrying in %.1fs",
                              self.indexer.cp.block_number if self.indexer.cp else None, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)

    # ------------------------------------------------------------------ checks

    def health(self) -> Health:
        cp = self.indexer.cp
        indexed = cp.block_number if cp else -1
        head = self.indexer.head
        since = None if self._last_ok is None else time.monotonic() - self._last_ok
        stale_after = max(30.0, 20 * self.settings.poll_interval)
        ok = self.running and since is not None and since < stale_after
        return Health(ok, self.running, head, indexed, max(0, head - indexed), self.indexer.reorgs,
                      self.last_error, since)

    def wait_for(self, block: int, timeout: float = 30.0) -> None:
        """Blocks until a completed step has indexed ``block`` (so :meth:`health` reflects it)."""
        with self._progress:
            if not self._progress.wait_for(lambda: self._indexed >= block, timeout):
                raise TimeoutError(f"index at {self._indexed}, wanted {block}")


def migrate_only(settings: IndexerSettings | None = None) -> None:
    settings = settings or IndexerSettings()
    migrate(make_engine(settings.database_url))
