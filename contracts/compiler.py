"""Compiling the Solidity sources through py-solc-x's ``compile_standard``.

The compiler is chosen in this order: ``SOLC_BINARY``; a native ``solc`` on ``PATH``; a solc
that py-solc-x installed itself; otherwise ``tools/solcjs-standard-json.js``, a small Node
wrapper over the npm package ``solc`` that behaves like ``solc --standard-json``. Output is
cached under ``contracts/build`` by a hash of the compiler version, sources and settings.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import solcx
import solcx.install
from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from solcx.exceptions import SolcError

from contracts.errors import CompileError, ToolchainError

log = logging.getLogger(__name__)

CONTRACTS_DIR = Path(__file__).resolve().parent
SRC_DIR = CONTRACTS_DIR / "src"
#: Test-only contracts (malicious and non-standard tokens, attackers); never deployed by ``deploy``.
TEST_DIR = CONTRACTS_DIR / "test"
NODE_MODULES = CONTRACTS_DIR / "node_modules"
BUILD_DIR = CONTRACTS_DIR / "build"
SOLCJS_WRAPPER = CONTRACTS_DIR / "tools" / "solcjs-standard-json.js"
EVM_VERSION = "cancun"
#: The market's runtime code at 10,000 runs is close to the 24,576-byte limit (EIP-170): the
#: dispute game lives in the linked ``DisputeGame`` library for that reason.
OPTIMIZER_RUNS = 10_000


@dataclass(frozen=True)
class Compiler:
    """A compiler binary and the version it reports."""

    binary: Path
    version: str
    native: bool


def _version_of(binary: Path) -> str:
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=60)
    for line in out.stdout.splitlines():
        if line.startswith("Version:"):
            return line.split()[1]
    raise ToolchainError(f"{binary} --version printed no version: {out.stdout!r} {out.stderr!r}")


class CompilerSettings(BaseSettings):
    """``SOLC_BINARY``: a solc (or a solcjs ``.js`` wrapper) to use before any other."""

    model_config = SettingsConfigDict(extra="ignore")

    solc_binary: Path | None = Field(default=None, validation_alias=AliasChoices("SOLC_BINARY", "solc_binary"))


def find_compiler() -> Compiler:
    """Returns the compiler to use, preferring a native solc."""
    candidates: list[tuple[Path, bool]] = []
    if binary := CompilerSettings().solc_binary:
        candidates.append((binary, binary.suffix != ".js"))
    if which := shutil.which("solc"):
        candidates.append((Path(which), True))
    with contextlib.suppress(Exception):  # py-solc-x raises its own types when nothing is installed
        candidates.extend((Path(solcx.install.get_executable(v)), True) for v in solcx.get_installed_solc_versions())
    for binary, native in candidates:
        if binary.exists():
            return Compiler(binary, _version_of(binary), native)
    if not (NODE_MODULES / "solc").exists():
        raise ToolchainError(
            "no Solidity compiler: install a native solc, set SOLC_BINARY, or run "
            "`npm ci` in contracts/ (make does this) to get solcjs"
        )
    if shutil.which("node") is None:
        raise ToolchainError("solcjs needs Node.js, which is not on PATH")
    return Compiler(SOLCJS_WRAPPER, _version_of(SOLCJS_WRAPPER), False)


def standard_input(src_dir: Path = SRC_DIR, extra_dirs: Sequence[Path] = ()) -> dict[str, Any]:
    """The standard-JSON input for every ``.sol`` file under ``src_dir`` and ``extra_dirs``
    (directories inside ``contracts/``, such as :data:`TEST_DIR`)."""
    files = sorted(src_dir.rglob("*.sol"))
    for extra in extra_dirs:
        files += sorted(extra.resolve().rglob("*.sol"))
    sources = {str(p.relative_to(CONTRACTS_DIR)): {"content": p.read_text()} for p in files}
    return {
        "language": "Solidity",
        "sources": sources,
        "settings": {
            "evmVersion": EVM_VERSION,
            "optimizer": {"enabled": True, "runs": OPTIMIZER_RUNS},
            "remappings": ["@openzeppelin/=node_modules/@openzeppelin/"],
            "outputSelection": {
                "*": {"*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object", "userdoc", "devdoc"]},
            },
        },
    }


def format_errors(errors: list[dict[str, Any]]) -> str:
    """``file:line: message`` for every error (not warning) solc reported."""
    lines = []
    for err in errors:
        if err.get("severity") != "error":
            continue
        loc = err.get("sourceLocation") or {}
        file = loc.get("file", "<input>")
        line = "?"
        start = loc.get("start", -1)
        path = CONTRACTS_DIR / file
        if start >= 0 and path.exists():
            line = str(path.read_bytes()[:start].count(b"\n") + 1)
        lines.append(f"{file}:{line}: {err.get('type', 'Error')}: {err.get('message', '').strip()}")
    return "\n".join(lines)


def compile_sources(force: bool = False, extra_dirs: Sequence[Path] = ()) -> dict[str, Any]:
    """Compiles the sources (or loads the cached output) and returns solc's output JSON.

    ``extra_dirs`` adds more source directories (the tests pass :data:`TEST_DIR`); without it
    the input, and so the cached output, is exactly that of ``src/`` alone."""
    compiler = find_compiler()
    data = standard_input(extra_dirs=extra_dirs)
    key = hashlib.sha256(
        json.dumps({"v": compiler.version, "input": data}, sort_keys=True).encode()
    ).hexdigest()[:16]
    cached = BUILD_DIR / f"solc-{key}.json"
    if cached.exists() and not force:
        return json.loads(cached.read_text())  # type: ignore[no-any-return]
    log.info("compiling %d sources with solc %s (%s)", len(data["sources"]), compiler.version,
             "native" if compiler.native else "solcjs")
    try:
        out: dict[str, Any] = solcx.compile_standard(
            data,
            base_path=str(CONTRACTS_DIR),
            allow_paths=[str(CONTRACTS_DIR), str(NODE_MODULES)],
            solc_binary=compiler.binary,
        )
    except SolcError as exc:
        errors = (exc.error_dict or {}).get("errors") if isinstance(exc.error_dict, dict) else None
        if errors is None and exc.stdout_data:
            try:
                errors = json.loads(exc.stdout_data).get("errors")
            except json.JSONDecodeError:
                errors = None
        raise CompileError(format_errors(errors) if errors else str(exc)) from None
    if msg := format_errors(out.get("errors", [])):
        raise CompileError(msg)
    BUILD_DIR.mkdir(exist_ok=True)
    tmp = cached.with_suffix(".tmp")
    tmp.write_text(json.dumps(out))
    tmp.replace(cached)
    return out
