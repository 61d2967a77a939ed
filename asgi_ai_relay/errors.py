"""The relay's exceptions, rooted at one base so every stage catches only our own types.

    RelayError                      status_code, error_type, code, message
    ├── ConfigurationError          bad configuration (start-up, never a request)
    ├── StorageError                a backend (SQLite, Redis, PostgreSQL) failed
    ├── ClientClosed                499 the caller left before its answer (nginx's convention)
    ├── ClientError                 the caller's fault: 4xx
    │   ├── InvalidRequest          400 malformed JSON, wrong types, missing fields
    │   ├── AuthenticationError     401 missing or unknown credentials
    │   ├── PermissionDenied        403 known caller, not allowed
    │   ├── NotFound                404 unknown route
    │   ├── ModelNotFound           404 unknown model
    │   ├── PayloadTooLarge         413 body over the configured limit
    │   └── RateLimited             429 a limit or budget says wait (retry_after)
    │       └── BudgetExceeded      429 the caller's daily or monthly budget is spent
    └── UpstreamError               the provider's fault or its absence: 5xx, or its 4xx passed on
        ├── UpstreamConnectError    502 could not connect
        ├── UpstreamTimeout         504 no answer in time
        ├── UpstreamStatusError     the provider answered with an error status
        ├── UpstreamProtocolError   502 the provider's answer could not be read
        │   ├── UpstreamTooLarge    502 the answer passed a size bound (http.max_*_bytes)
        │   └── UpstreamRedirect    502 the provider answered 3xx (a wrong base_url)
        └── ServiceUnavailable      503 circuit open, queue full
"""

from __future__ import annotations

__all__ = [
    "CLIENT_CLOSED",
    "AuthenticationError",
    "ClientClosed",
    "BudgetExceeded",
    "ClientError",
    "ConfigurationError",
    "InvalidRequest",
    "ModelNotFound",
    "NotFound",
    "PayloadTooLarge",
    "PermissionDenied",
    "RateLimited",
    "RelayError",
    "ServiceUnavailable",
    "StorageError",
    "UpstreamConnectError",
    "UpstreamError",
    "UpstreamProtocolError",
    "UpstreamRedirect",
    "UpstreamStatusError",
    "UpstreamTimeout",
    "UpstreamTooLarge",
]


#: The longest error message a caller is sent (longer ones are cut).
MAX_MESSAGE = 2000


class RelayError(Exception):
    """Base of every error the relay raises.

    ``error_type`` is the OpenAI-style ``type`` (``invalid_request_error`` and friends);
    each wire format maps it to its own vocabulary when it renders the error.
    """

    status_code: int = 500
    error_type: str = "api_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        if len(message) > MAX_MESSAGE:  # a message may quote the caller's input: keep answers small
            message = message[:MAX_MESSAGE] + "..."
        super().__init__(message)
        self.message = message
        if status_code is not None:
            self.status_code = status_code
        if code is not None:
            self.code = code
        self.param = param
        self.headers: dict[str, str] = dict(headers or {})


class ConfigurationError(RelayError):
    error_type = "configuration_error"


class StorageError(RelayError):
    error_type = "storage_error"


#: Status recorded for a request whose caller left before its answer (nginx's convention).
CLIENT_CLOSED = 499


class ClientClosed(RelayError):
    """The caller went away (while queued, or while its body was arriving)."""

    def __init__(self, message: str = "The client closed the connection.") -> None:
        super().__init__(message, status_code=CLIENT_CLOSED, code="client_closed")


class _RetryAfter:
    """Errors that tell the caller when to come back: ``retry_after`` seconds and the header."""

    headers: dict[str, str]

    def _set_retry_after(self, retry_after: float | None) -> None:
        self.retry_after = retry_after
        if retry_after is not None:
            self.headers.setdefault("retry-after", str(max(1, int(retry_after + 0.999))))


class ClientError(RelayError):
    status_code = 400
    error_type = "invalid_request_error"


class InvalidRequest(ClientError):
    status_code = 400


class AuthenticationError(ClientError):
    status_code = 401
    error_type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(ClientError):
    status_code = 403
    error_type = "permission_error"
    code = "permission_denied"


class NotFound(ClientError):
    status_code = 404
    error_type = "not_found_error"
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class PayloadTooLarge(ClientError):
    status_code = 413
    code = "request_too_large"


class RateLimited(_RetryAfter, ClientError):
    status_code = 429
    error_type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self._set_retry_after(retry_after)


class BudgetExceeded(RateLimited):
    """429 rather than 402, as OpenAI answers an exhausted quota (``insufficient_quota``): SDKs
    and clients already handle it, and ``Retry-After`` says when the budget period resets."""

    error_type = "insufficient_quota"
    code = "budget_exceeded"


class UpstreamError(RelayError):
    status_code = 502
    error_type = "upstream_error"
    #: Whether a retry or a fallback may help.
    retryable: bool = True


class UpstreamConnectError(UpstreamError):
    status_code = 502
    code = "upstream_unreachable"


class UpstreamTimeout(UpstreamError):
    status_code = 504
    code = "upstream_timeout"


class UpstreamProtocolError(UpstreamError):
    status_code = 502
    code = "upstream_bad_response"


class UpstreamTooLarge(UpstreamProtocolError):
    """More than the relay reads of one answer: its body, its decompressed body or one line."""

    code = "upstream_too_large"


class UpstreamRedirect(UpstreamProtocolError):
    """A 3xx is never followed: a provider's API does not redirect, a wrong ``base_url`` does.
    Retrying the same deployment cannot help, so it moves on (and counts against the breaker)."""

    code = "upstream_redirect"
    retryable = False


class ServiceUnavailable(_RetryAfter, UpstreamError):
    status_code = 503
    error_type = "service_unavailable"
    code = "service_unavailable"

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self._set_retry_after(retry_after)


_UPSTREAM_TYPES = {
    400: "invalid_request_error",
    401: "upstream_authentication_error",
    403: "upstream_permission_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


class UpstreamStatusError(UpstreamError):
    """The provider answered with an error status; its message is passed on, scrubbed.

    A provider's 401/403 means *our* key is wrong, not the caller's: the caller sees 502
    so it does not mistake it for its own credentials being refused.
    """

    def __init__(
        self,
        message: str,
        *,
        upstream_status: int,
        upstream_code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        status = 502 if upstream_status in (401, 403) else upstream_status
        super().__init__(message, status_code=status, code=upstream_code)
        self.upstream_status = upstream_status
        self.error_type = _UPSTREAM_TYPES.get(upstream_status, "upstream_error")
        self.retry_after = retry_after
        self.retryable = upstream_status in (408, 409, 425, 429) or upstream_status >= 500
