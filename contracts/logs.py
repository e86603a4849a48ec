"""Reading logs over ranges that RPC providers accept.

Public RPC providers cap ``eth_getLogs`` by block range or by result count, each with its own
error message, several of which name the range that would work. :func:`retry_ranges` is the
whole policy, a pure function from (the refused range, the error) to the ranges to ask for
next; :func:`scan_logs` applies it while reading a long range in chunks. Keeping the policy
pure lets the tests feed it the real messages of the common providers.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from web3 import Web3
from web3.types import FilterParams, LogReceipt

from contracts.errors import ChainError

log = logging.getLogger(__name__)

BlockRange = tuple[int, int]


@dataclass(frozen=True)
class _Rule:
    """One provider's refusal: a pattern, and the largest span (blocks) to retry with."""

    pattern: re.Pattern[str]
    span: Callable[[re.Match[str], int], int]
    """(match, span of the refused range) -> span to retry with."""


def _number(text: str) -> int:
    return int(text.replace(",", "").replace(".", ""))


def _named(group: int, minus: int = 0) -> Callable[[re.Match[str], int], int]:
    return lambda m, _span: _number(m.group(group)) - minus


def _suggested(m: re.Match[str], _span: int) -> int:
    return int(m.group(2), 16) - int(m.group(1), 16) + 1


def _half(_m: re.Match[str], span: int) -> int:
    return span // 2


def _fixed(n: int) -> Callable[[re.Match[str], int], int]:
    return lambda _m, _span: n


# Messages as the providers send them (see tests/contracts/test_log_ranges.py for examples).
_RULES: tuple[_Rule, ...] = (
    # Alchemy, Infura, zkSync: the message names a range that works.
    _Rule(re.compile(r"block range should work: \[(0x[0-9a-f]+),\s*(0x[0-9a-f]+)\]", re.I), _suggested),
    _Rule(re.compile(r"try with this block range \[(0x[0-9a-f]+),\s*(0x[0-9a-f]+)\]", re.I), _suggested),
    # Limits stated as a number of blocks.
    _Rule(re.compile(r"requested too many blocks from \d+ to \d+, maximum is set to (\d+)", re.I), _named(1)),
    _Rule(re.compile(r"max range: (\d+)", re.I), _named(1)),
    _Rule(re.compile(r"maximum allowed number of requested blocks is (\d+)", re.I), _named(1)),
    _Rule(re.compile(r"limited to a ([\d,.]+)", re.I), _named(1)),
    _Rule(re.compile(r"limited to ([\d,.]+) block", re.I), _named(1)),
    _Rule(re.compile(r"please limit the query to at most ([\d,.]+) blocks", re.I), _named(1)),
    _Rule(re.compile(r"maximum block range: ([\d,.]+)", re.I), _named(1)),
    _Rule(re.compile(r"query exceeds max block range ([\d,.]+)", re.I), _named(1)),
    _Rule(re.compile(r"block range is too wide \(maximum (\d+)\)", re.I), _named(1)),
    _Rule(re.compile(r"up to a ([\d,.]+) block range", re.I), _named(1)),
    _Rule(re.compile(r"exceeds the range allowed for your plan \(\d+ > (\d+)\)", re.I), _named(1)),
    _Rule(re.compile(r"eth_getLogs range is too large, max is 10k blocks", re.I), _fixed(10_000)),
    _Rule(re.compile(r"block range is too wide", re.I), _fixed(3_000)),
    _Rule(re.compile(r"block range too large", re.I), _fixed(2_000)),
    # Limits on the size of the answer: halve and try again.
    _Rule(re.compile(r"query returned more than \d+ results", re.I), _half),
    _Rule(re.compile(r"query exceeds max results", re.I), _half),
    _Rule(re.compile(r"logs matched by query exceeds limit", re.I), _half),
    _Rule(re.compile(r"response size (should not greater|exceeded)", re.I), _half),
    _Rule(re.compile(r"backend response too large", re.I), _half),
    _Rule(re.compile(r"block range is too large", re.I), _half),
    _Rule(re.compile(r"block range limit exceeded", re.I), _half),
)


def chunk(frm: int, to: int, span: int) -> list[BlockRange]:
    """``[frm, to]`` cut into consecutive ranges of at most ``span`` blocks."""
    if span < 1:
        raise ValueError(f"span must be at least one block, got {span}")
    return [(start, min(to, start + span - 1)) for start in range(frm, to + 1, span)]


def retry_ranges(frm: int, to: int, error: str) -> list[BlockRange] | None:
    """The ranges to request after ``eth_getLogs`` over ``[frm, to]`` failed with ``error``, or
    ``None`` when the error is not a range limit (or the range cannot be made smaller): the
    caller then raises it."""
    span = to - frm + 1
    for rule in _RULES:
        m = rule.pattern.search(error)
        if m is None:
            continue
        new_span = min(rule.span(m, span), span - 1) if span > 1 else 0
        if new_span < 1:
            return None
        return chunk(frm, to, new_span)
    return None


def scan_logs(
    w3: Web3, params: dict[str, Any], frm: int, to: int, *, max_span: int = 2_000,
) -> Iterator[LogReceipt]:
    """Yields the logs matching ``params`` (address, topics) in ``[frm, to]`` in block order,
    asking for at most ``max_span`` blocks at a time and narrowing whenever a provider refuses
    a range (see :func:`retry_ranges`)."""
    todo = chunk(frm, to, max_span) if frm <= to else []
    todo.reverse()
    while todo:
        a, b = todo.pop()
        try:
            logs = w3.eth.get_logs(FilterParams(**params, fromBlock=a, toBlock=b))  # type: ignore[typeddict-item]
        except Exception as exc:  # noqa: BLE001 - providers signal range limits in many ways
            smaller = retry_ranges(a, b, _message(exc))
            if smaller is None:
                raise ChainError(f"eth_getLogs {a}-{b} failed: {exc}") from exc
            log.info("eth_getLogs %d-%d refused (%s): retrying as %d ranges", a, b, exc, len(smaller))
            todo.extend(reversed(smaller))
            continue
        yield from logs


def _message(exc: Exception) -> str:
    """The provider's text, wherever web3 put it (the message, or a JSON-RPC error dict)."""
    parts = [str(exc)]
    for arg in exc.args:
        if isinstance(arg, dict):
            parts.extend(str(v) for v in arg.values())
    return " ".join(parts)
