"""The eth_getLogs range policy, fed the refusals of the common RPC providers as they word them,
and the chunked scan against a real Anvil that refuses wide ranges through a proxy."""

from __future__ import annotations

from typing import Any

import pytest

from contracts.errors import ChainError
from contracts.logs import chunk, retry_ranges, scan_logs

# (provider, message, refused range, expected largest span of the retry)
REFUSALS = [
    ("alchemy", "Log response size exceeded. You can make eth_getLogs requests with up to a 2K block range and no "
     "limit on the response size, or you can request any block range with a cap of 10K logs in the response. "
     "Based on your parameters, this block range should work: [0x0, 0x3e7]", (0, 9_999), 1_000),
    ("infura", "query returned more than 10000 results. Try with this block range [0x10, 0x1f].", (16, 1_000), 16),
    ("avalanche", "requested too many blocks from 0 to 9999, maximum is set to 2048", (0, 9_999), 2_048),
    ("cloudflare", "Max range: 3500", (0, 9_999), 3_500),
    ("thirdweb", "Maximum allowed number of requested blocks is 1000", (0, 9_999), 1_000),
    ("quicknode", "eth_getLogs is limited to a 10,000 range", (0, 49_999), 10_000),
    ("blockpi", "eth_getLogs is limited to 1024 block range", (0, 9_999), 1_024),
    ("coinbase", "please limit the query to at most 1000 blocks", (0, 9_999), 1_000),
    ("publicnode", "maximum block range: 50000", (0, 99_999), 50_000),
    ("hyperliquid", "query exceeds max block range 1000", (0, 9_999), 1_000),
    ("moonriver", "block range is too wide (maximum 1024)", (0, 9_999), 1_024),
    ("aurora", "you can make eth_getLogs requests with up to a 2,000 block range", (0, 9_999), 2_000),
    ("blast", "eth_getLogs range exceeds the range allowed for your plan (5000 > 500).", (0, 4_999), 500),
    ("merkle", "eth_getLogs range is too large, max is 10k blocks", (0, 49_999), 10_000),
    ("ankr", "block range is too wide", (0, 9_999), 3_000),
    ("base", "block range too large", (0, 9_999), 2_000),
    ("zkevm", "query returned more than 10000 results", (0, 999), 500),
    ("llamarpc", "query exceeds max results 20000, retry with the range 1-2", (0, 999), 500),
    ("arbitrum", "logs matched by query exceeds limit of 10000", (0, 999), 500),
    ("1rpc", "response size should not greater than 10000000 bytes", (0, 999), 500),
    ("optimism", "backend response too large", (0, 999), 500),
    ("optimism-2024", "Block range is too large", (0, 999), 500),
    ("chainstack", "Block range limit exceeded.", (0, 999), 500),
]


@pytest.mark.parametrize(("provider", "message", "refused", "span"), REFUSALS, ids=[r[0] for r in REFUSALS])
def test_a_provider_refusal_is_retried_as_contiguous_ranges_of_the_span_it_allows(
    provider: str, message: str, refused: tuple[int, int], span: int,
) -> None:
    ranges = retry_ranges(*refused, message)
    assert ranges is not None, provider
    assert ranges[0][0] == refused[0] and ranges[-1][1] == refused[1]
    assert all(b + 1 == c for (_, b), (c, _) in zip(ranges, ranges[1:], strict=False))
    assert max(b - a + 1 for a, b in ranges) == span


def test_an_error_that_is_not_a_range_limit_is_not_retried() -> None:
    assert retry_ranges(0, 100, "execution reverted") is None
    assert retry_ranges(0, 100, "429 Too Many Requests") is None


def test_a_single_block_that_is_still_refused_is_not_retried_forever() -> None:
    assert retry_ranges(7, 7, "query returned more than 10000 results") is None


def test_a_suggested_range_never_grows_the_request() -> None:
    ranges = retry_ranges(0, 9, "this block range should work: [0x0, 0x3e7]")
    assert ranges is not None and max(b - a + 1 for a, b in ranges) < 10


def test_chunk_covers_the_range_exactly() -> None:
    assert chunk(5, 14, 4) == [(5, 8), (9, 12), (13, 14)]
    assert chunk(5, 5, 100) == [(5, 5)]
    with pytest.raises(ValueError):
        chunk(0, 1, 0)


class _CappedEth:
    """Wraps a real ``w3.eth``: refuses ranges wider than ``cap`` as Alchemy words it."""

    def __init__(self, eth: Any, cap: int) -> None:
        self._eth, self.cap, self.calls = eth, cap, []  # type: ignore[var-annotated]

    def get_logs(self, params: dict[str, Any]) -> Any:
        frm, to = int(params["fromBlock"]), int(params["toBlock"])
        self.calls.append((frm, to))
        if to - frm + 1 > self.cap:
            raise ValueError({"code": -32602, "message": "Log response size exceeded. this block range should "
                              f"work: [{hex(frm)}, {hex(frm + self.cap - 1)}]"})
        return self._eth.get_logs(params)


class _W3:
    def __init__(self, w3: Any, cap: int) -> None:
        self.eth = _CappedEth(w3.eth, cap)


def test_scan_logs_reads_a_long_range_through_a_capped_provider(market: Any) -> None:
    h = market.h
    head = h.w3.eth.block_number
    params = {"address": [h.staking.address, h.market.address, h.usd.address]}
    want = list(h.w3.eth.get_logs({**params, "fromBlock": 0, "toBlock": head}))
    assert want, "the devnet deployment emitted logs"
    capped = _W3(h.w3, cap=7)
    got = list(scan_logs(capped, params, 0, head, max_span=50))  # type: ignore[arg-type]
    assert [(g["blockNumber"], g["logIndex"]) for g in got] == [(w["blockNumber"], w["logIndex"]) for w in want]
    assert any(b - a + 1 > 7 for a, b in capped.eth.calls), "the first request was refused"
    assert all(b - a + 1 <= 7 for a, b in capped.eth.calls[-3:])


def test_scan_logs_raises_a_chain_error_for_other_failures() -> None:
    class Broken:
        class eth:  # noqa: N801 - mimics w3.eth
            @staticmethod
            def get_logs(_params: Any) -> Any:
                raise ValueError("execution reverted")

    with pytest.raises(ChainError, match="eth_getLogs 0-9 failed"):
        list(scan_logs(Broken(), {}, 0, 9))  # type: ignore[arg-type]
