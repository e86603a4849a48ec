"""The serving plane's wire format, shared by the gateway and the provider endpoint.

A request to a provider is OpenAI's ``POST /v1/embeddings`` body plus one header,
:data:`PAYMENT_HEADER`, holding the payer's (or its signer's) signed ``PaymentReceipt`` as
compact JSON::

    {"payer": "0x..", "provider": "0x..", "requestId": "0x<32 bytes>", "value": "<uint128>",
     "timestamp": <unix s>, "signature": "0x<65 bytes>"}

and, optionally, :data:`AGGREGATOR_HEADER`: the base URL where the payer's signer aggregates
receipts into vouchers (``POST {url}/v1/serving/vouchers``).

The answer is OpenAI's embeddings object whose items are base64 (little-endian float32, the
job output format of :mod:`worker.node.jobio` split per input) plus a ``hearth`` object holding
the provider's signed ``WorkReceipt`` (:func:`work_receipt_json`). Refusals are
``{"error": {"reason", "message", ...}}`` with 402 for anything about payment (reasons in
:data:`PAYMENT_REASONS`).
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from contracts.errors import ContractsError
from contracts.settlement import PaymentReceipt, Voucher, WorkReceipt

PAYMENT_HEADER = "hearth-payment"
AGGREGATOR_HEADER = "hearth-aggregator"
REQUEST_ID_HEADER = "hearth-request-id"

#: machine-readable reasons of a provider's 402 answers
PAYMENT_REASONS = (
    "payment_missing", "payment_malformed", "wrong_provider", "bad_payment_signature", "signer_not_authorized",
    "signer_revoked", "wrong_value", "lane_exhausted", "lane_thawing", "unknown_model",
)


class WireError(ContractsError, ValueError):
    """A serving-plane message that does not have the documented shape."""


def _b32(v: Any, name: str) -> bytes:
    if not isinstance(v, str) or not v.startswith("0x") or len(v) != 66:
        raise WireError(f"{name} must be 0x and 32 bytes of hex")
    try:
        return bytes.fromhex(v[2:])
    except ValueError:
        raise WireError(f"{name} is not hex") from None


@lru_cache(maxsize=4096)
def _checksummed(v: str) -> str | None:
    """``v`` checksummed, or None if it is not an address (cached: the same few payers and
    providers head every request, and each checksum costs a keccak)."""
    from web3 import Web3

    return str(Web3.to_checksum_address(v)) if Web3.is_address(v) else None


def _addr(v: Any, name: str) -> str:
    a = _checksummed(v) if isinstance(v, str) else None
    if a is None:
        raise WireError(f"{name} is not an address")
    return a


def _uint(v: Any, name: str, bits: int) -> int:
    try:
        n = int(v)
    except (TypeError, ValueError):
        raise WireError(f"{name} is not an integer") from None
    if isinstance(v, bool) or not 0 <= n < 2**bits:
        raise WireError(f"{name} is out of range for uint{bits}")
    return n


def _sig(v: Any, name: str = "signature") -> bytes:
    if not isinstance(v, str) or not v.startswith("0x") or len(v) != 132:
        raise WireError(f"{name} must be 0x and 65 bytes of hex")
    try:
        return bytes.fromhex(v[2:])
    except ValueError:
        raise WireError(f"{name} is not hex") from None


def encode_payment(r: PaymentReceipt, signature: bytes) -> str:
    return json.dumps({"payer": r.payer, "provider": r.provider, "requestId": "0x" + r.request_id.hex(),
                       "value": str(r.value), "timestamp": r.timestamp, "signature": "0x" + signature.hex()},
                      separators=(",", ":"))


def decode_payment(header: str) -> tuple[PaymentReceipt, bytes]:
    try:
        d = json.loads(header)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise WireError("the payment header is not JSON") from None
    if not isinstance(d, dict):
        raise WireError("the payment header is not a JSON object")
    r = PaymentReceipt(_addr(d.get("payer"), "payer"), _addr(d.get("provider"), "provider"),
                       _b32(d.get("requestId"), "requestId"), _uint(d.get("value"), "value", 128),
                       _uint(d.get("timestamp"), "timestamp", 64))
    return r, _sig(d.get("signature"))


def work_receipt_json(r: WorkReceipt) -> dict[str, Any]:
    return {"requestId": "0x" + r.request_id.hex(), "payer": r.payer, "modelId": "0x" + r.model_id.hex(),
            "inputHash": "0x" + r.input_hash.hex(), "outputHash": "0x" + r.output_hash.hex(), "units": r.units,
            "value": str(r.value), "runtimeHash": "0x" + r.runtime_hash.hex(),
            "numericsClass": "0x" + r.numerics_class.hex()}


def work_receipt_from_json(d: Any) -> WorkReceipt:
    if not isinstance(d, dict):
        raise WireError("a work receipt is a JSON object")
    return WorkReceipt(_b32(d.get("requestId"), "requestId"), _addr(d.get("payer"), "payer"),
                       _b32(d.get("modelId"), "modelId"), _b32(d.get("inputHash"), "inputHash"),
                       _b32(d.get("outputHash"), "outputHash"), _uint(d.get("units"), "units", 64),
                       _uint(d.get("value"), "value", 96), _b32(d.get("runtimeHash"), "runtimeHash"),
                       _b32(d.get("numericsClass"), "numericsClass"))


def voucher_json(v: Voucher, signature: bytes) -> dict[str, Any]:
    return {"payer": v.payer, "provider": v.provider, "cumulativeValue": str(v.cumulative_value),
            "timestamp": v.timestamp, "signature": "0x" + signature.hex()}


def voucher_from_json(d: Any) -> tuple[Voucher, bytes]:
    if not isinstance(d, dict):
        raise WireError("a voucher is a JSON object")
    v = Voucher(_addr(d.get("payer"), "payer"), _addr(d.get("provider"), "provider"),
                _uint(d.get("cumulativeValue"), "cumulativeValue", 128), _uint(d.get("timestamp"), "timestamp", 64))
    return v, _sig(d.get("signature"))


def recover_voucher(v: Voucher, signature: bytes, chain_id: int, escrow: str) -> str:
    from eth_account import Account
    from eth_account.messages import encode_typed_data
    from hexbytes import HexBytes

    from contracts.settlement import VOUCHER_TYPES, escrow_domain

    msg = encode_typed_data(escrow_domain(chain_id, escrow), VOUCHER_TYPES, v.message())
    return str(Account.recover_message(msg, signature=HexBytes(signature)))


def usable_endpoint(endpoint: str) -> bool:
    """Whether a registered endpoint is a URL a gateway can forward to (``http(s)://host:port``,
    port not 0; the devnet registers ``http://127.0.0.1:0`` for providers that serve no endpoint)."""
    from urllib.parse import urlparse

    try:
        u = urlparse(endpoint)
        return u.scheme in ("http", "https") and bool(u.hostname) and u.port != 0
    except ValueError:
        return False
