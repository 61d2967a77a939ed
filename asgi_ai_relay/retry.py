"""When to try again, and how long to wait first.

Every upstream failure is sorted into one :class:`Verdict`: ``RETRY`` (429, 408, 5xx, refused
connections, timeouts, unreadable answers: the same model may answer next time), ``NEXT`` (the
deployment is misconfigured: the provider refused *our* key or does not know the model, so
only another deployment or model can help), ``CONTEXT`` (the prompt is too long for this model:
only a larger-context model helps) and ``FATAL`` (the request itself is wrong: passed on).

Waits are exponential with full jitter, ``uniform(0, min(max_delay, base_delay * 2**n))``,
unless the provider said how long to wait (``Retry-After`` / ``retry-after-ms``, read into
:attr:`UpstreamStatusError.retry_after`), which is honoured exactly. A wait that would end
after the request's deadline is not taken: the router falls over to the next model instead.
"""

from __future__ import annotations

import asyncio
import enum
import random
from collections.abc import Awaitable, Callable

from .config import RetrySettings
from .errors import RelayError, UpstreamError, UpstreamStatusError

__all__ = ["Sleep", "Verdict", "backoff", "classify", "is_context_length", "wait_before_retry"]

#: ``await sleep(seconds)``; injectable so tests record waits instead of taking them.
Sleep = Callable[[float], Awaitable[None]]

_CONTEXT_CODES = frozenset({"context_length_exceeded", "string_above_max_length", "request_too_large"})
_CONTEXT_WORDS = ("context length", "context window", "maximum context", "prompt is too long", "too many tokens")


class Verdict(enum.Enum):
    RETRY = "retry"
    NEXT = "next"
    CONTEXT = "context"
    FATAL = "fatal"

    @property
    def provider_failed(self) -> bool:
        """Whether this outcome counts against the deployment's circuit breaker."""
        return self in (Verdict.RETRY, Verdict.NEXT)


def is_context_length(error: UpstreamStatusError) -> bool:
    """Whether the provider refused the prompt as too long for the model's context window."""
    if error.upstream_status not in (400, 413, 422):
        return False
    if error.code in _CONTEXT_CODES:
        return True
    message = error.message.lower()
    return any(words in message for words in _CONTEXT_WORDS)


def classify(error: RelayError) -> Verdict:
    """What an upstream failure allows: see the module docstring."""
    if not isinstance(error, UpstreamError):
        return Verdict.FATAL
    if isinstance(error, UpstreamStatusError) and not error.retryable:
        if error.upstream_status in (401, 403, 404):
            return Verdict.NEXT
        return Verdict.CONTEXT if is_context_length(error) else Verdict.FATAL
    return Verdict.RETRY if error.retryable else Verdict.NEXT


def backoff(settings: RetrySettings, retry: int, rng: random.Random | None = None) -> float:
    """Full-jitter exponential wait before retry number ``retry`` (1 for the first retry)."""
    ceiling = min(settings.max_delay, settings.base_delay * (2 ** (retry - 1)))
    return (rng or random).uniform(0.0, ceiling)


def wait_before_retry(
    error: RelayError, settings: RetrySettings, retry: int, remaining: float, rng: random.Random | None = None
) -> float | None:
    """Seconds to wait before retrying after ``error``, or ``None`` when the wait (the
    provider's ``Retry-After``, or the backoff) would not end before the deadline."""
    asked = getattr(error, "retry_after", None)
    wait = float(asked) if asked is not None else backoff(settings, retry, rng)
    return wait if wait < remaining else None


async def default_sleep(seconds: float) -> None:
    if seconds > 0:
        await asyncio.sleep(seconds)
