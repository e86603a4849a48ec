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
    """A source of claimable jobs (the indexer's database) cannot be read."""
