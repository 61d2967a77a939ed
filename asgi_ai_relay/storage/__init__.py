"""Backends chosen by URI: ``memory://`` and ``sqlite:///path`` are built in; others are
imported only when named, so the embedded defaults need nothing installed."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeVar
from urllib.parse import parse_qsl, urlsplit

from ..errors import ConfigurationError
from .base import LEDGER_COLUMNS, Cache, Ledger, LedgerQuery, LedgerRow, QueryableLedger, RateLimitStore
from .memory import MemoryCache, MemoryLedger, MemoryRateLimits

T = TypeVar("T")

__all__ = [
    "LEDGER_COLUMNS",
    "Cache",
    "Ledger",
    "LedgerQuery",
    "LedgerRow",
    "MemoryCache",
    "MemoryLedger",
    "MemoryRateLimits",
    "QueryableLedger",
    "RateLimitStore",
    "cache_from_uri",
    "ledger_from_uri",
    "limits_from_uri",
    "pick_backend",
]


def pick_backend(key: str, schemes: Mapping[str, Callable[[str], T]], uri: str) -> T:
    """The backend ``schemes`` names for ``uri``'s scheme.

    :param key: the config key, for the error message (``storage.ledger``).
    :raises ConfigurationError: for a scheme no backend serves.
    """
    scheme = urlsplit(uri).scheme
    factory = schemes.get(scheme)
    if factory is None:
        raise ConfigurationError(f"{key}: unknown scheme {scheme!r} in {uri!r} (known: {', '.join(sorted(schemes))})")
    return factory(uri)


def _sqlite(uri: str) -> Ledger:
    from .sqlite import SQLiteLedger

    # sqlite:///relative.db and sqlite:////absolute/path.db, as SQLAlchemy spells them.
    return SQLiteLedger(uri[len("sqlite:///") :])


def _postgres(uri: str) -> Ledger:
    from .postgres import PostgresLedger

    return PostgresLedger(uri)


LEDGER_SCHEMES: dict[str, Callable[[str], Ledger]] = {
    "memory": lambda uri: MemoryLedger(),
    "sqlite": _sqlite,
    "postgresql": _postgres,
    "postgres": _postgres,
}


def ledger_from_uri(uri: str) -> Ledger:
    """The ledger for ``uri``.

    :raises ConfigurationError: for a scheme no backend serves.
    """
    return pick_backend("storage.ledger", LEDGER_SCHEMES, uri)


def _memory_cache(uri: str) -> Cache:
    params = dict(parse_qsl(urlsplit(uri).query))
    unknown = sorted(set(params) - {"maxsize", "max_bytes", "ttl"})
    if unknown:
        raise ConfigurationError(f"storage.cache: unknown parameter {unknown[0]!r} in {uri!r} (maxsize, max_bytes, ttl)")
    try:
        return MemoryCache(
            maxsize=int(params.get("maxsize", 10_000)),
            max_bytes=int(params.get("max_bytes", 256 * 1024 * 1024)),
            ttl=float(params.get("ttl", 3600)),
        )
    except ValueError as exc:
        raise ConfigurationError(f"storage.cache: parameters must be numbers in {uri!r}") from exc


def _redis_cache(uri: str) -> Cache:
    from .redis_cache import RedisCache

    return RedisCache(uri)


CACHE_SCHEMES: dict[str, Callable[[str], Cache]] = {
    "memory": _memory_cache,
    "redis": _redis_cache,
    "rediss": _redis_cache,
    "redis+cluster": _redis_cache,
    "rediss+cluster": _redis_cache,
}


def cache_from_uri(uri: str) -> Cache:
    """The response cache for ``uri`` (``memory://?maxsize=&max_bytes=&ttl=``, ``redis://...``).

    :raises ConfigurationError: for an unknown scheme or bad parameters.
    """
    return pick_backend("storage.cache", CACHE_SCHEMES, uri)


def _redis_limits(uri: str) -> RateLimitStore:
    from .redis import RedisRateLimits

    return RedisRateLimits(uri)


LIMITS_SCHEMES: dict[str, Callable[[str], RateLimitStore]] = {
    "memory": lambda uri: MemoryRateLimits(),
    "redis": _redis_limits,
    "rediss": _redis_limits,
    "redis+cluster": _redis_limits,
    "rediss+cluster": _redis_limits,
}


def limits_from_uri(uri: str) -> RateLimitStore:
    """The rate-limit store for ``uri`` (``memory://`` or ``redis://host:6379/0?prefix=relay``).

    :raises ConfigurationError: for a scheme no backend serves, or a bad option.
    """
    return pick_backend("storage.limits", LIMITS_SCHEMES, uri)
