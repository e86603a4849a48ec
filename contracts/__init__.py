"""The Python side of Hearth's contracts: compiling, artifacts, EIP-712 types, bindings and the
deployment manifest that every service reads."""

from contracts.errors import CompileError, ContractsError, ManifestError, ToolchainError

__all__ = ["CompileError", "ContractsError", "ManifestError", "ToolchainError"]
