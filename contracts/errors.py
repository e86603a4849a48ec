"""Exceptions of the contracts package; every one derives from :class:`ContractsError`."""


class ContractsError(Exception):
    """Root of everything the contracts package raises."""


class ToolchainError(ContractsError):
    """A compiler or node binary is missing or unusable."""


class CompileError(ContractsError):
    """Solidity did not compile; the message lists ``file:line: message`` per error."""


class ManifestError(ContractsError, ValueError):
    """The deployment manifest is missing, malformed or for another chain."""


class ChainError(ContractsError):
    """A transaction reverted or the chain answered unexpectedly."""

    def __init__(self, message: str, error_name: str | None = None, args: tuple[object, ...] = ()) -> None:
        super().__init__(message)
        self.error_name = error_name
        self.error_args = args
