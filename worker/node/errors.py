"""Exceptions of the node; every one derives from :class:`NodeError`."""

from __future__ import annotations


class NodeError(Exception):
    """Root of everything the worker node raises."""


class NodeConfigError(NodeError, ValueError):
    """The node cannot start as configured (no key, no manifest, wrong chain...)."""


class RuntimeMismatchError(NodeError):
    """A compute worker runs another runtime than the node asked for."""


class ComputeError(NodeError):
    """Inference failed for a job."""


class JobSourceError(NodeError):
    """A source of claimable jobs (a gateway's job list) cannot be read."""


class DutyFailedError(NodeError):
    """A duty failed too many ticks in a row: the node stops instead of logging forever."""

    def __init__(self, duty: str, failures: int, last: BaseException) -> None:
        super().__init__(f"duty {duty!r} failed {failures} ticks in a row; last error: {type(last).__name__}: {last}")
        self.duty = duty
        self.failures = failures
        self.last = last
