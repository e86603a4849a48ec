"""Every EIP-712 type Hearth signs, in one place, and signing helpers.

* ``JobRequest`` and ``Receipt``: the market's, in the domain ``("Hearth JobMarket", "1",
  chainId, market address)``, so a signature is valid on one chain and one deployment only;
* ``Permit``: EIP-2612 on the payment token (its own domain, read from ``eip712Domain()``);
* ``ApiKeyGrant``: a wallet binding an API key to itself at a gateway, in the domain
  ``("Hearth Gateway", "1", chainId)`` (no contract: the gateway checks it off chain).
"""

from __future__ import annotations

from typing import Any

from eth_account import Account

from contracts.types import JobRequest, Receipt

DOMAIN_NAME = "Hearth JobMarket"
DOMAIN_VERSION = "1"

JOB_REQUEST_TYPES = {
    "JobRequest": [
        {"name": "client", "type": "address"},
        {"name": "modelId", "type": "bytes32"},
        {"name": "inputHash", "type": "bytes32"},
        {"name": "maxPayment", "type": "uint96"},
        {"name": "deadline", "type": "uint40"},
        {"name": "nonce", "type": "uint256"},
    ]
}
RECEIPT_TYPES = {
    "Receipt": [
        {"name": "jobId", "type": "uint256"},
        {"name": "outputHash", "type": "bytes32"},
        {"name": "units", "type": "uint64"},
        {"name": "modelHash", "type": "bytes32"},
        {"name": "runtimeHash", "type": "bytes32"},
        {"name": "gpuClass", "type": "bytes32"},
    ]
}
PERMIT_TYPES = {
    "Permit": [
        {"name": "owner", "type": "address"},
        {"name": "spender", "type": "address"},
        {"name": "value", "type": "uint256"},
        {"name": "nonce", "type": "uint256"},
        {"name": "deadline", "type": "uint256"},
    ]
}
GATEWAY_DOMAIN_NAME = "Hearth Gateway"
GATEWAY_DOMAIN_VERSION = "1"
API_KEY_GRANT_TYPES = {
    "ApiKeyGrant": [
        {"name": "wallet", "type": "address"},
        {"name": "gateway", "type": "address"},
        {"name": "apiKeyHash", "type": "bytes32"},
        {"name": "spendingCap", "type": "uint256"},
        {"name": "expiry", "type": "uint64"},
        {"name": "nonce", "type": "uint256"},
    ]
}
#: the gateway's domain has no verifying contract
GATEWAY_DOMAIN_TYPE = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
]
EIP712_DOMAIN_TYPE = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
]


def domain(chain_id: int, market: str) -> dict[str, Any]:
    return {"name": DOMAIN_NAME, "version": DOMAIN_VERSION, "chainId": chain_id, "verifyingContract": market}


def job_request_message(req: JobRequest) -> dict[str, Any]:
    return {
        "client": req.client,
        "modelId": req.model_id,
        "inputHash": req.input_hash,
        "maxPayment": req.max_payment,
        "deadline": req.deadline,
        "nonce": req.nonce,
    }


def receipt_message(rec: Receipt) -> dict[str, Any]:
    return {
        "jobId": rec.job_id,
        "outputHash": rec.output_hash,
        "units": rec.units,
        "modelHash": rec.model_hash,
        "runtimeHash": rec.runtime_hash,
        "gpuClass": rec.gpu_class,
    }


def job_request_typed_data(req: JobRequest, chain_id: int, market: str) -> dict[str, Any]:
    """The full ``eth_signTypedData_v4`` payload (hex strings for bytes, as wallets expect)."""
    msg = {k: ("0x" + v.hex() if isinstance(v, bytes) else v) for k, v in job_request_message(req).items()}
    return {
        "types": {"EIP712Domain": EIP712_DOMAIN_TYPE, **JOB_REQUEST_TYPES},
        "primaryType": "JobRequest",
        "domain": domain(chain_id, market),
        "message": msg,
    }


def sign_job_request(key: str | bytes, req: JobRequest, chain_id: int, market: str) -> bytes:
    signed = Account.sign_typed_data(key, domain(chain_id, market), JOB_REQUEST_TYPES, job_request_message(req))
    return bytes(signed.signature)


def sign_receipt(key: str | bytes, rec: Receipt, chain_id: int, market: str) -> bytes:
    signed = Account.sign_typed_data(key, domain(chain_id, market), RECEIPT_TYPES, receipt_message(rec))
    return bytes(signed.signature)


def sign_permit(
    key: str | bytes, token_name: str, token: str, chain_id: int, owner: str, spender: str,
    value: int, nonce: int, deadline: int,
) -> tuple[int, bytes, bytes]:
    """An EIP-2612 permit signature as (v, r, s)."""
    dom = {"name": token_name, "version": "1", "chainId": chain_id, "verifyingContract": token}
    signed = Account.sign_typed_data(key, dom, PERMIT_TYPES, permit_message(owner, spender, value, nonce, deadline))
    return signed.v, signed.r.to_bytes(32, "big"), signed.s.to_bytes(32, "big")


def permit_message(owner: str, spender: str, value: int, nonce: int, deadline: int) -> dict[str, Any]:
    return {"owner": owner, "spender": spender, "value": value, "nonce": nonce, "deadline": deadline}


def permit_typed_data(token_domain: dict[str, Any], owner: str, spender: str, value: int, nonce: int,
                      deadline: int) -> dict[str, Any]:
    """The ``eth_signTypedData_v4`` payload of an EIP-2612 permit (numbers as decimal strings)."""
    msg = {k: (str(v) if isinstance(v, int) else v)
           for k, v in permit_message(owner, spender, value, nonce, deadline).items()}
    return {"types": {"EIP712Domain": EIP712_DOMAIN_TYPE, **PERMIT_TYPES}, "primaryType": "Permit",
            "domain": token_domain, "message": msg}


def gateway_domain(chain_id: int) -> dict[str, Any]:
    return {"name": GATEWAY_DOMAIN_NAME, "version": GATEWAY_DOMAIN_VERSION, "chainId": chain_id}
