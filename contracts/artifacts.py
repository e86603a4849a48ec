"""Compiled contract artifacts: ABI and bytecode by contract name."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from contracts.compiler import compile_sources
from contracts.errors import ContractsError


@dataclass(frozen=True)
class Artifact:
    name: str
    abi: list[dict[str, Any]]
    bytecode: str


@cache
def load_artifacts() -> dict[str, Artifact]:
    """Every compiled contract under ``src/``, by name (compiles on first use, then cached)."""
    out = compile_sources()
    arts: dict[str, Artifact] = {}
    for file, contracts in out["contracts"].items():
        if not file.startswith("src/"):
            continue
        for name, c in contracts.items():
            arts[name] = Artifact(name, c["abi"], "0x" + c["evm"]["bytecode"]["object"])
    return arts


def artifact(name: str) -> Artifact:
    arts = load_artifacts()
    if name not in arts:
        raise ContractsError(f"no compiled contract named {name!r}")
    return arts[name]
