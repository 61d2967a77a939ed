"""When to try again, and how long to wait first.

Every upstream failure is sorted into one :class:`Verdict`: ``RETRY`` (429, 408, 5xx, refused
connections, timeouts, unreadable answers: the same model may answer next time), ``NEXT`` (the
deployment is misconfigured: the provider refused *our* key or does not know the model, so
only another deployment or model can help), ``CONTEXT`` (the prompt is too long for this model:
only a larger-context model helps) and ``FATAL`` (the request itself is wrong: passed on).

Waits are exponential with full jitter, ``uniform(0, min(max_delay, base_delay * 2**n))``,
unless the provider said how long to wait (``Retry-After`` / ``retry-after-ms``, read into
:attr:`UpstreamStatusError.retry_after` by :func:`parse_retry_after`), which is honoured
exactly. What a provider says is held to ``0..MAX_RETRY_AFTER`` seconds: ``inf``, ``1e999``,
``nan``, negative numbers and garbage never become a wait (or a caller's ``Retry-After``) that
cannot be computed. A wait that would end after the request's deadline is not taken: the
router falls over to the next model instead.
"""

from __future__ import annotations

import asyncio
import datetime
import email.utils
import enum
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping

from .config import RetrySettings
from .errors import RelayError, UpstreamError, UpstreamStatusError

__all__ = [
    "MAX_RETRY_AFTER", "Sleep", "Verdict", "backoff", "classify", "clamp_wait", "is_context_length", "parse_retry_after",
    "wait_before_retry",
]

#: The longest wait a provider's ``Retry-After`` is taken for (a day: a daily quota's reset).
MAX_RETRY_AFTER = 86400.0

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


def clamp_wait(seconds: object) -> float | None:
    """``seconds`` as a wait in ``0..MAX_RETRY_AFTER``; ``None`` when it is not a number (or NaN)."""
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or math.isnan(seconds):
        return None
    return min(MAX_RETRY_AFTER, max(0.0, float(seconds)))


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait, from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date),
    clamped by :func:`clamp_wait`; ``None`` when neither says anything usable."""
    value = headers.get("retry-after-ms")
    millis = _number(value) if value else None
    if millis is not None and not math.isnan(millis):
        return clamp_wait(millis / 1000)
    value = headers.get("retry-after")
    if not value:
        return None
    number = _number(value)
    if number is not None:
        return clamp_wait(number)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # an HTTP date is always GMT
        when = when.replace(tzinfo=datetime.timezone.utc)
    return clamp_wait(when.timestamp() - (time.time() if now is None else now))


def _number(text: str) -> float | None:
    try:
        return float(text.strip())
    except ValueError:
        return None


def wait_before_retry(
    error: RelayError, settings: RetrySettings, retry: int, remaining: float, rng: random.Random | None = None
) -> float | None:
    """Seconds to wait before retrying after ``error``, or ``None`` when the wait (the
    provider's ``Retry-After``, or the backoff) would not end before the deadline."""
    asked = clamp_wait(getattr(error, "retry_after", None))
    wait = asked if asked is not None else backoff(settings, retry, rng)
    return wait if wait < remaining else None


async def default_sleep(seconds: float) -> None:
    if seconds > 0:
        await asyncio.sleep(seconds)
