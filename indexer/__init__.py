"""Hearth's indexer: mirrors every contract event into SQL (SQLite by default, PostgreSQL at
scale), reorg-safe and resumable. See :mod:`common.index_models` for the schema,
:class:`indexer.service.IndexerService` to run it in-process and ``python -m indexer`` for the
CLI."""

from indexer.errors import IndexerError

__all__ = ["IndexerError"]
