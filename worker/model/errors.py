"""Exceptions of the model runtime; `ModelError` is the root."""

from __future__ import annotations


class ModelError(Exception):
    """Root of every error raised by `worker.model`."""


class ModelFilesNotFoundError(ModelError, FileNotFoundError):
    """The model package or one of its files is missing."""


class UnsupportedConfigError(ModelError, ValueError):
    """A backend, dtype or device combination that this runtime does not provide."""


class InvalidInputError(ModelError, ValueError):
    """An input (text list, embedding array) has the wrong type, shape or dtype."""
