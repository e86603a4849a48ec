"""Exceptions of the gateway; every one derives from :class:`GatewayError`.

Each class carries the HTTP status and the machine-readable ``reason`` the API answers with
(``{"error": {"reason": ..., "message": ...}}``), so a handler never has to guess a status code.
"""

from __future__ import annotations

from typing import Any, ClassVar


class GatewayError(Exception):
    """Root of everything the gateway raises on purpose."""

    status_code: ClassVar[int] = 500
    reason: ClassVar[str] = "internal_error"
    #: OpenAI-style error type, so the ``openai`` client classifies errors sensibly
    error_type: ClassVar[str] = "api_error"
    #: the ``x-should-retry`` header: None lets clients decide by status (4xx other than 408
    #: and 429 are answered ``false`` anyway)
    should_retry: ClassVar[bool | None] = None

    def __init__(self, message: str, *, reason: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason  # type: ignore[misc]
        self.extra = extra


class BadRequestError(GatewayError, ValueError):
    status_code = 400
    reason = "bad_request"
    error_type = "invalid_request_error"


class MalformedRequestError(BadRequestError):
    """The body is not JSON, or does not have the documented shape."""

    status_code = 422
    reason = "malformed_request"


class InvalidAddressError(MalformedRequestError):
    reason = "invalid_address"


class InvalidSignatureError(BadRequestError):
    """A signature does not recover to the account it claims to be from."""

    reason = "invalid_signature"


class WrongDomainError(BadRequestError):
    """Signed for another chain id or another contract than this gateway's deployment."""

    reason = "wrong_chain"


class DeadlineError(BadRequestError):
    reason = "deadline_expired"


class NonceError(BadRequestError):
    status_code = 409
    reason = "nonce_used"


class UnknownModelError(BadRequestError):
    status_code = 422
    reason = "unknown_model"


class InvalidInputError(BadRequestError):
    """The job input is not the job format (UTF-8 JSON ``{"texts": [...]}``)."""

    status_code = 422
    reason = "invalid_input"


class InputHashMismatchError(BadRequestError):
    reason = "input_hash_mismatch"


class InputTooLargeError(BadRequestError):
    status_code = 413
    reason = "input_too_large"


class PaymentError(GatewayError):
    """The client cannot pay: balance, allowance or permit fall short."""

    status_code = 402
    reason = "insufficient_balance"
    error_type = "insufficient_quota"


class SpendingCapError(PaymentError):
    reason = "spending_cap_exceeded"


class AuthError(GatewayError):
    status_code = 401
    reason = "unauthorized"
    error_type = "authentication_error"


class NotFoundError(GatewayError, LookupError):
    status_code = 404
    reason = "not_found"
    error_type = "invalid_request_error"


class ConflictError(GatewayError):
    status_code = 409
    reason = "conflict"
    error_type = "invalid_request_error"


class RetryAfter(GatewayError):
    """An error answered with ``Retry-After: retry_after`` (seconds)."""

    def __init__(self, message: str, *, retry_after: float, **extra: Any) -> None:
        super().__init__(message, **extra)
        self.retry_after = retry_after


class RateLimitedError(RetryAfter):
    status_code = 429
    reason = "rate_limited"
    error_type = "rate_limit_error"


class TooManyInFlightError(RateLimitedError):
    """This client (API key, else IP address) already has its limit of requests in flight on
    the inference routes; shed at once, nothing charged, safe to retry after ``Retry-After``."""

    reason = "too_many_requests_in_flight"
    should_retry = True


class BlobError(GatewayError):
    """Root of blob store failures."""

    status_code = 500
    reason = "blob_error"


class BlobNotFoundError(BlobError, NotFoundError):
    status_code = 404
    reason = "blob_not_found"


class BlobTooLargeError(BlobError, InputTooLargeError):
    status_code = 413
    reason = "blob_too_large"


class BlobQuotaError(RateLimitedError):
    """The uploader already holds its quota of unexpired blobs."""

    reason = "blob_quota_exceeded"
    error_type = "insufficient_quota"


class BlobStoreFullError(BlobError):
    status_code = 507
    reason = "blob_store_full"


class ConfigurationError(GatewayError, ValueError):
    """The gateway's settings contradict the deployment (raised on start)."""

    reason = "bad_configuration"


class BlobCorruptError(BlobError):
    """Stored bytes no longer hash to their id (disk corruption or tampering)."""

    status_code = 502
    reason = "blob_corrupt"


class UpstreamError(GatewayError):
    """The chain or the index did not answer, or a transaction failed for no client fault."""

    status_code = 502
    reason = "relay_failed"


class UnavailableError(GatewayError):
    status_code = 503
    reason = "unavailable"


class OverloadedError(RetryAfter, UnavailableError):
    """The gateway (``overloaded``) or every provider that could answer (``providers_saturated``)
    is at its in-flight bound: shed at once instead of queued, nothing charged, safe to retry
    after ``Retry-After``."""

    reason = "overloaded"
    should_retry = True


class ResultTimeoutError(GatewayError):
    """No provider delivered within the wait; the job stays on-chain (refundable later)."""

    status_code = 504
    reason = "job_timeout"
    should_retry = False  # the job was posted and paid: a retry would post and pay another
