"""Compiled contract artifacts: ABI and bytecode by contract name."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from contracts.compiler import TEST_DIR, compile_sources
from contracts.errors import ContractsError

#: A library placeholder in unlinked bytecode: ``__$`` + 34 hex digits + ``$__``.
_PLACEHOLDER = re.compile(r"__\$[0-9a-fA-F]{34}\$__")


@dataclass(frozen=True)
class Artifact:
    name: str
    abi: list[dict[str, Any]]
    bytecode: str
    userdoc: dict[str, Any] = field(default_factory=dict)
    devdoc: dict[str, Any] = field(default_factory=dict)

    @property
    def needs_linking(self) -> bool:
        return _PLACEHOLDER.search(self.bytecode) is not None

    def linked(self, library: str) -> str:
        """The bytecode with every library placeholder replaced by ``library``'s address (the
        contracts link one library, ``DisputeGame``)."""
        return _PLACEHOLDER.sub(library.lower().removeprefix("0x"), self.bytecode)


def _collect(out: dict[str, Any], prefixes: tuple[str, ...]) -> dict[str, Artifact]:
    arts: dict[str, Artifact] = {}
    for file, contracts in out["contracts"].items():
        if not file.startswith(prefixes):
            continue
        for name, c in contracts.items():
            arts[name] = Artifact(name, c["abi"], "0x" + c["evm"]["bytecode"]["object"],
                                  c.get("userdoc", {}), c.get("devdoc", {}))
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
