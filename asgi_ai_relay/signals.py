"""Process-wide counts of faults outside any one request: Redis errors, failed token refreshes,
alert deliveries. Whoever sees one calls :func:`count`; the Prometheus metrics and the
OpenTelemetry meter read :func:`snapshot` when they are collected, so counting is a dict update
and costs nothing else.

    signals.count(signals.REDIS_ERRORS, "limits")                   # a Redis call failed
    signals.count(signals.TOKEN_REFRESH_FAILURES, "vertex")         # an OAuth token refresh failed
    signals.count(signals.ALERT_DELIVERIES, "webhook", "failed")    # an alert was (not) delivered
"""

from __future__ import annotations

import threading

__all__ = ["ALERT_DELIVERIES", "REDIS_ERRORS", "SIGNALS", "TOKEN_REFRESH_FAILURES", "count", "snapshot"]

REDIS_ERRORS = "redis_errors"
TOKEN_REFRESH_FAILURES = "token_refresh_failures"
ALERT_DELIVERIES = "alert_deliveries"

#: name: (description, label names)
SIGNALS: dict[str, tuple[str, tuple[str, ...]]] = {
    REDIS_ERRORS: ("Redis calls that failed (unreachable, timed out), by store role.", ("role",)),
    TOKEN_REFRESH_FAILURES: ("Upstream credential refreshes that failed, by provider.", ("provider",)),
    ALERT_DELIVERIES: ("Alert deliveries, by channel and outcome.", ("channel", "outcome")),
}

_lock = threading.Lock()
_counts: dict[str, dict[tuple[str, ...], int]] = {name: {} for name in SIGNALS}


def count(name: str, *labels: str, n: int = 1) -> None:
    """Add ``n`` to the signal ``name`` (one of :data:`SIGNALS`) under ``labels``."""
    with _lock:
        series = _counts.setdefault(name, {})
        series[labels] = series.get(labels, 0) + n


def snapshot(name: str) -> dict[tuple[str, ...], float]:
    """The counts of ``name`` so far, by labels."""
    with _lock:
        return {labels: float(value) for labels, value in _counts.get(name, {}).items()}
