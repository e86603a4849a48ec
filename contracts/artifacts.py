"""Compiled contract artifacts: ABI and bytecode by contract name."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from contracts.compiler import TEST_DIR, compile_sources
from contracts.errors import ContractsError


@dataclass(frozen=True)
class Artifact:
    name: str
    abi: list[dict[str, Any]]
    bytecode: str


def _collect(out: dict[str, Any], prefixes: tuple[str, ...]) -> dict[str, Artifact]:
    arts: dict[str, Artifact] = {}
    for file, contracts in out["contracts"].items():
        if not file.startswith(prefixes):
            continue
        for name, c in contracts.items():
            arts[name] = Artifact(name, c["abi"], "0x" + c["evm"]["bytecode"]["object"])
    return arts


@cache
def load_artifacts() -> dict[str, Artifact]:
    """Every compiled contract under ``src/``, by name (compiles on first use, then cached)."""
    return _collect(compile_sources(), ("src/",))


@cache
def load_test_artifacts() -> dict[str, Artifact]:
    """Every contract under ``src/`` and the test-only ones under ``test/``, by name, compiled
    together (tests only: malicious and non-standard tokens are never part of a deployment)."""
    return _collect(compile_sources(extra_dirs=(TEST_DIR,)), ("src/", "test/"))


def artifact(name: str) -> Artifact:
    arts = load_artifacts()
    if name not in arts:
        raise ContractsError(f"no compiled contract named {name!r}")
    return arts[name]
