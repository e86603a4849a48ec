"""Exceptions of the indexer; every one derives from :class:`IndexerError`."""


class IndexerError(Exception):
    """Root of everything the indexer raises."""


class RpcError(IndexerError):
    """The chain's RPC failed or answered with an error."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class TooManyResultsError(RpcError):
    """The node refused an ``eth_getLogs`` range as too large; a smaller range may work."""


class ChainInconsistentError(IndexerError):
    """The node answered from two different forks within one batch (a reorg raced the read)."""


class ReorgTooDeepError(IndexerError):
    """No common ancestor within the blocks the indexer keeps: re-index from scratch."""


class DeploymentMismatchError(IndexerError):
    """The database holds an index of another chain or deployment."""
