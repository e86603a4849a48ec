"""The Hearth worker node: provider and verifier roles over the job market.

:class:`Node` (:mod:`worker.node.node`) is a composition root over small duties, one module each
in :mod:`worker.node.duties`, run every tick over one :class:`~worker.node.view.TickContext`.

Public API:

* :class:`Node` (``tick()``, ``run(stop_event, once=False)``, ``healthy()``) and
  :class:`NodeConfig`, :class:`TickReport` (:mod:`worker.node.config`);
* :func:`build_node` (a node from :class:`~worker.settings.WorkerSettings`),
  :class:`NodeService` (a node on a thread: ``start``/``stop``/``healthy``),
  :func:`run_node` (blocking, until a stop event);
* executors: :class:`InProcessExecutor`, :class:`CeleryExecutor`.

The job formats are :mod:`contracts.jobio` (the protocol layer). Names are imported lazily so
that importing a submodule does not load torch or web3.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Node": "worker.node.node",
    "NodeConfig": "worker.node.config",
    "TickReport": "worker.node.config",
    "build_node": "worker.node.service",
    "NodeService": "worker.node.service",
    "run_node": "worker.node.service",
    "InProcessExecutor": "worker.node.executor",
    "CeleryExecutor": "worker.node.executor",
    "NodeError": "worker.node.errors",
    "DutyFailedError": "worker.node.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
