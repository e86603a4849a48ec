"""The CLI's client of a Hearth gateway's HTTP API: one-line errors from its answers, Sign-In
with Ethereum with the wallet's key, and the API-key calls.

Every non-2xx answer becomes a :class:`GatewayRefused` naming what was asked, the gateway's
message and its machine-readable reason (``{"error": {"reason", "message"}}``), so a 422 never
surfaces as a ``KeyError`` on the body."""

from __future__ import annotations

import warnings
from datetime import UTC, datetime
from typing import Any

import httpx
from eth_account import Account
from eth_account.messages import encode_defunct


class GatewayRefused(Exception):
    """The gateway answered with an error status (or not at all)."""

    def __init__(self, message: str, status: int | None = None, reason: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


def describe_error(r: httpx.Response) -> tuple[str, str | None]:
    """(message, reason) of an error answer, whatever its shape."""
    try:
        body = r.json()
    except ValueError:
        return (r.text.strip()[:300] or r.reason_phrase), None
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        msg = str(err.get("message") or err.get("reason") or r.reason_phrase)
        return msg, (str(err["reason"]) if err.get("reason") else None)
    if isinstance(body, dict) and "detail" in body:  # FastAPI's default shape
        return str(body["detail"]), None
    return str(body)[:300], None


class GatewayClient:
    def __init__(self, base_url: str, timeout: float = 30) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = httpx.Client(base_url=self.base_url, timeout=timeout)

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    def call(self, method: str, path: str, what: str, **kwargs: Any) -> Any:
        try:
            r = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise GatewayRefused(f"cannot reach the gateway at {self.base_url} ({exc}): is it running "
                                 f"(`make up`, or `hearth gateway run`)?") from None
        if r.is_success:
            return r.json() if r.content else None
        msg, reason = describe_error(r)
        tail = f" ({r.status_code} {reason})" if reason else f" ({r.status_code})"
        raise GatewayRefused(f"the gateway refused {what}: {msg}{tail}", r.status_code, reason)

    def sign_in(self, key: str) -> str:
        """Sign-In with Ethereum as the wallet of ``key``; later calls carry the session token."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # abnf warns about siwe's grammar; harmless
            from siwe import SiweMessage

        n = self.call("GET", "/v1/auth/nonce", "a sign-in nonce")
        address = Account.from_key(key).address
        msg = SiweMessage(
            domain=n["domain"], address=address, statement="Sign in to the Hearth gateway (hearth CLI).",
            uri=n.get("uri") or self.base_url, version="1", chain_id=int(n["chain_id"]), nonce=n["nonce"],
            issued_at=datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        ).prepare_message()
        sig = Account.sign_message(encode_defunct(text=msg), key).signature
        out = self.call("POST", "/v1/auth/verify", "the sign-in",
                        json={"message": msg, "signature": "0x" + bytes(sig).hex()})
        token = str(out["token"])
        self.http.headers["Authorization"] = f"Bearer {token}"
        return token

    def api_keys(self) -> list[dict[str, Any]]:
        return list(self.call("GET", "/v1/api-keys", "the list of API keys"))
