"""Backends chosen by URI: ``memory://`` and ``sqlite:///path`` are built in; others are
imported only when named, so the embedded defaults need nothing installed."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

from ..errors import ConfigurationError
from .base import LEDGER_COLUMNS, Ledger, LedgerRow, RateLimitStore
from .memory import MemoryLedger, MemoryRateLimits

__all__ = [
    "LEDGER_COLUMNS",
    "Ledger",
    "LedgerRow",
    "MemoryLedger",
    "MemoryRateLimits",
    "RateLimitStore",
    "ledger_from_uri",
    "limits_from_uri",
]


def _sqlite(uri: str) -> Ledger:
    from .sqlite import SQLiteLedger

    # sqlite:///relative.db and sqlite:////absolute/path.db, as SQLAlchemy spells them.
    return SQLiteLedger(uri[len("sqlite:///") :])


LEDGER_SCHEMES: dict[str, Callable[[str], Ledger]] = {
    "memory": lambda uri: MemoryLedger(),
    "sqlite": _sqlite,
}


def ledger_from_uri(uri: str) -> Ledger:
    """The ledger for ``uri``.

    :raises ConfigurationError: for a scheme no backend serves.
    """
    scheme = urlsplit(uri).scheme
    factory = LEDGER_SCHEMES.get(scheme)
    if factory is None:
        raise ConfigurationError(
            f"storage.ledger: unknown scheme {scheme!r} in {uri!r} (known: {', '.join(sorted(LEDGER_SCHEMES))})"
        )
    return factory(uri)


def _redis_limits(uri: str) -> RateLimitStore:
    from .redis import RedisRateLimits

    return RedisRateLimits(uri)


LIMITS_SCHEMES: dict[str, Callable[[str], RateLimitStore]] = {
    "memory": lambda uri: MemoryRateLimits(),
    "redis": _redis_limits,
    "rediss": _redis_limits,
}


def limits_from_uri(uri: str) -> RateLimitStore:
    """The rate-limit store for ``uri`` (``memory://`` or ``redis://host:6379/0?prefix=relay``).

    :raises ConfigurationError: for a scheme no backend serves, or a bad option.
    """
    scheme = urlsplit(uri).scheme
    factory = LIMITS_SCHEMES.get(scheme)
    if factory is None:
        raise ConfigurationError(
            f"storage.limits: unknown scheme {scheme!r} in {uri!r} (known: {', '.join(sorted(LIMITS_SCHEMES))})"
        )
    return factory(uri)
