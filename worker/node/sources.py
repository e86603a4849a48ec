"""Reading the chain for the node (logs in chunks, trailing the head) and the sources of
claimable jobs: the market's ``JobPosted`` logs, or a gateway's public job list. (Never another
service's database: the worker depends on the chain and on public APIs only.)"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
from web3.types import EventData

from contracts.bindings import Hearth, decode_log, event_topics
from contracts.logs import scan_logs
from worker.node.errors import JobSourceError
from worker.node.state import NodeState

log = logging.getLogger(__name__)


def tx_hex(rcpt: Any) -> str:
    """A transaction receipt's hash as ``0x`` hex."""
    return "0x" + bytes(rcpt["transactionHash"]).hex()


def topic_of(value: int | bytes | str) -> str:
    """A value as an indexed-topic filter (32-byte hex)."""
    if isinstance(value, int):
        raw = value.to_bytes(32, "big")
    elif isinstance(value, bytes):
        raw = value.rjust(32, b"\x00")
    else:
        raw = bytes.fromhex(value.removeprefix("0x")).rjust(32, b"\x00")
    return "0x" + raw.hex()


class ChainReader:
    """Log scanning over block ranges in chunks, narrowed whenever the RPC refuses a range
    (:func:`contracts.logs.scan_logs`)."""

    def __init__(self, hearth: Hearth, chunk: int = 5000) -> None:
        self.h = hearth
        self.chunk = max(1, chunk)

    def logs(
        self, events: Sequence[str], from_block: int, to_block: int, extra_topics: Sequence[Any] = ()
    ) -> Iterator[EventData]:
        """Decoded market events named ``events`` in ``[from_block, to_block]``, in order."""
        topics: list[Any] = [event_topics(self.h.market, list(events)), *extra_topics]
        params = {"address": self.h.market.address, "topics": topics}
        for lg in scan_logs(self.h.w3, params, from_block, to_block, max_span=self.chunk):
            yield decode_log(self.h.market, lg)


@dataclass(frozen=True)
class Candidate:
    """A job that was posted for a model this node serves (it may be taken by now)."""

    job_id: int
    input_hash: bytes
    deadline: int


class JobSource(Protocol):
    name: str

    def poll(self, safe_block: int) -> list[Candidate]:
        """Jobs posted since the last poll (chain source) or still posted (gateway source)."""
        ...


class ChainJobSource:
    """``JobPosted`` logs for the served models, from a cursor kept in the node state."""

    name = "chain"

    def __init__(self, hearth: Hearth, state: NodeState, model_ids: Sequence[bytes], chunk: int = 5000) -> None:
        self.h = hearth
        self.state = state
        self.reader = ChainReader(hearth, chunk)
        self.model_topics = [topic_of(m) for m in model_ids]

    def poll(self, safe_block: int) -> list[Candidate]:
        start = self.state.cursor("posted", self.h.manifest.deployment_block)
        if start > safe_block:
            return []
        out = [
            Candidate(int(ev["args"]["jobId"]), bytes(ev["args"]["inputHash"]), int(ev["args"]["deadline"]))
            for ev in self.reader.logs(["JobPosted"], start, safe_block, [None, None, self.model_topics])
        ]
        self.state.set_cursor("posted", safe_block + 1)
        return out


class GatewayJobSource:
    """Posted jobs from a gateway's public API (``GET /v1/jobs?status=posted&model_id=...``,
    newest first, followed page by page up to ``max_pages``).

    The gateway answers from its index, so the list trails the chain by a block or two. Entries
    are hints: the node checks every candidate against the chain before claiming it, so a stale
    or wrong list costs a look-up, never a wrong claim. Any failure to read it raises
    :class:`~worker.node.errors.JobSourceError` (the node then reads the chain's logs)."""

    name = "gateway"

    def __init__(
        self, base_url: str, model_ids: Sequence[bytes], *, client: httpx.Client | None = None,
        page_size: int = 200, max_pages: int = 10, timeout: float = 10.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.models = ["0x" + m.hex() for m in model_ids]
        self.page_size = page_size
        self.max_pages = max_pages
        self._client = client or httpx.Client(timeout=timeout)

    def poll(self, safe_block: int) -> list[Candidate]:
        out: dict[int, Candidate] = {}
        for model in self.models:
            cursor: int | None = None
            for _ in range(self.max_pages):
                page = self._page(model, cursor)
                for item in page.get("items", []):
                    c = _candidate(item)
                    out[c.job_id] = c
                cursor = page.get("next_cursor")
                if cursor is None:
                    break
        return [out[k] for k in sorted(out)]

    def _page(self, model: str, cursor: int | None) -> dict[str, Any]:
        params: dict[str, Any] = {"status": "posted", "model_id": model, "limit": self.page_size}
        if cursor is not None:
            params["cursor"] = cursor
        url = f"{self.base_url}/v1/jobs"
        try:
            r = self._client.get(url, params=params)
        except httpx.HTTPError as exc:
            raise JobSourceError(f"cannot read posted jobs from {url}: {exc}") from exc
        if r.status_code != 200:
            raise JobSourceError(f"{url} answered {r.status_code}: {r.text[:200]}")
        try:
            body = r.json()
        except ValueError as exc:
            raise JobSourceError(f"{url} answered with something other than JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise JobSourceError(f"{url} answered {type(body).__name__}, not a page of jobs")
        return body

    def close(self) -> None:
        self._client.close()


def _candidate(item: Any) -> Candidate:
    try:
        return Candidate(int(item["job_id"]), bytes.fromhex(str(item["input_hash"]).removeprefix("0x")),
                         int(item["deadline"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise JobSourceError(f"a listed job lacks job_id / input_hash / deadline: {exc}") from exc
