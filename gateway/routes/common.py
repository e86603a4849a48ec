"""What every router shares: the documented error responses and argument parsing."""

from __future__ import annotations

from typing import Any

from eth_utils import is_address, to_checksum_address

from gateway.errors import InvalidAddressError
from gateway.schemas import ErrorResponse

#: Every error status the API can answer with, documented on every route (same body shape).
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": desc}
    for code, desc in (
        (400, "bad request (reason says which check failed)"),
        (401, "not signed in, or a bad API key"),
        (402, "insufficient balance, allowance or spending cap"),
        (403, "forbidden"),
        (404, "not found"),
        (409, "conflict (used nonce, result not ready, ...)"),
        (413, "input or body too large"),
        (422, "malformed request"),
        (429, "rate limited"),
        (502, "the chain or a provider failed"),
        (503, "the chain or the index is unavailable"),
        (504, "no delivery in time"),
        (507, "the blob store is full"),
    )
}


def checksum_or_422(value: str) -> str:
    if not is_address(value):
        raise InvalidAddressError(f"not an address: {value!r}")
    return str(to_checksum_address(value))
