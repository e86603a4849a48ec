"""A small JSON-RPC client for what the indexer reads: raw dicts, batch requests, retries.

The indexer reads hex strings straight from the node (no web3 result formatting, which is a
large share of the cost at backfill rates), batches header reads into one HTTP request, and
retries transport failures with exponential backoff and jitter. Node errors that mean "ask for
less" (result limits, range limits, response size) become :class:`TooManyResultsError` so the
caller can shrink its range instead of retrying the same request.
"""

from __future__ import annotations

import itertools
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from indexer.errors import RpcError, TooManyResultsError

log = logging.getLogger(__name__)

#: Fragments of the messages nodes use to refuse a log query as too large (geth, erigon,
#: Alchemy, Infura, QuickNode, Anvil, reth...).
_TOO_MANY = (
    "query returned more than", "more than 10000 results", "too many results", "block range",
    "range too large", "limit exceeded", "response size", "exceeds max results", "log response size",
    "query timeout", "range is too large", "too large", "max results",
)


@dataclass(frozen=True, slots=True)
class Header:
    number: int
    hash: str
    parent_hash: str
    timestamp: int


class Rpc:
    """Thread-safe JSON-RPC over HTTP with retries (``retries`` attempts after the first)."""

    def __init__(self, url: str, *, timeout: float = 30.0, retries: int = 5,
                 backoff: float = 0.2, max_backoff: float = 10.0) -> None:
        self.url = url
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._client = httpx.Client(timeout=timeout, headers={"Content-Type": "application/json"})
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.errors = 0  # retried failures
        #: called on every retried failure (the indexer counts them in its metrics)
        self.on_error: Callable[[], None] | None = None

    def close(self) -> None:
        self._client.close()

    # ---------------------------------------------------------------- transport

    def _post(self, payload: Any) -> Any:
        delay = self.backoff
        for attempt in range(self.retries + 1):
            try:
                resp = self._client.post(self.url, json=payload)
                if resp.status_code == 413:
                    raise TooManyResultsError("request or response too large (HTTP 413)", 413)
                if resp.status_code == 429 or resp.status_code >= 500:
                    raise httpx.HTTPStatusError(
                        f"HTTP {resp.status_code}", request=resp.request, response=resp)
                resp.raise_for_status()
                return resp.json()
            except (httpx.TransportError, httpx.HTTPStatusError, ValueError) as exc:
                if isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code < 500 \
                        and exc.response.status_code != 429:
                    raise RpcError(f"RPC {self.url}: {exc}") from None
                self.errors += 1
                if self.on_error is not None:
                    self.on_error()
                if attempt == self.retries:
                    raise RpcError(f"RPC {self.url} failed after {attempt + 1} attempts: {exc}") \
                        from None
                log.warning("rpc error (%s); retrying in %.2fs", exc, delay)
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, self.max_backoff)
        raise AssertionError("unreachable")

    @staticmethod
    def _result(method: str, resp: dict[str, Any]) -> Any:
        if "error" in resp:
            err = resp["error"]
            msg = str(err.get("message", err))
            code = err.get("code")
            low = msg.lower()
            if method == "eth_getLogs" and (code == -32005 or any(f in low for f in _TOO_MANY)):
                raise TooManyResultsError(f"{method}: {msg}", code)
            raise RpcError(f"{method}: {msg}", code)
        return resp.get("result")

    def call(self, method: str, params: list[Any] | None = None) -> Any:
        with self._lock:
            rid = next(self._ids)
        resp = self._post({"jsonrpc": "2.0", "id": rid, "method": method, "params": params or []})
        return self._result(method, resp)

    def batch(self, calls: list[tuple[str, list[Any]]]) -> list[Any]:
        """Several calls in one HTTP request; results in call order."""
        if not calls:
            return []
        with self._lock:
            ids = [next(self._ids) for _ in calls]
        payload = [{"jsonrpc": "2.0", "id": i, "method": m, "params": p}
                   for i, (m, p) in zip(ids, calls, strict=True)]
        resp = self._post(payload)
        if isinstance(resp, dict):  # a node that refuses batches answers with one error
            self._result("batch", resp)
            raise RpcError(f"unexpected batch answer: {resp}")
        by_id = {r.get("id"): r for r in resp}
        return [self._result(m, by_id.get(i, {"error": {"message": "missing in batch answer"}}))
                for i, (m, _) in zip(ids, calls, strict=True)]

    # ---------------------------------------------------------------- methods

    def chain_id(self) -> int:
        return int(self.call("eth_chainId"), 16)

    def block_number(self) -> int:
        return int(self.call("eth_blockNumber"), 16)

    def header(self, number: int) -> Header | None:
        return _header(self.call("eth_getBlockByNumber", [hex(number), False]))

    def headers(self, numbers: list[int], chunk: int = 200) -> dict[int, Header | None]:
        out: dict[int, Header | None] = {}
        for i in range(0, len(numbers), chunk):
            part = numbers[i:i + chunk]
            res = self.batch([("eth_getBlockByNumber", [hex(n), False]) for n in part])
            for n, r in zip(part, res, strict=True):
                out[n] = _header(r)
        return out

    def get_logs(self, addresses: list[str], from_block: int, to_block: int) -> list[dict[str, Any]]:
        res = self.call("eth_getLogs", [{
            "address": addresses, "fromBlock": hex(from_block), "toBlock": hex(to_block),
        }])
        return list(res or [])


def _header(raw: dict[str, Any] | None) -> Header | None:
    if not raw:
        return None
    return Header(int(raw["number"], 16), raw["hash"].lower(), raw["parentHash"].lower(),
                  int(raw["timestamp"], 16))
