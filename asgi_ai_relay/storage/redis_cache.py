"""The shared response cache: Redis with a TTL per entry, through redis-py's asyncio client.

    storage.cache = "redis://127.0.0.1:6379/0?ttl=7200&prefix=relay:cache:"

``ttl`` (seconds, default 3600) and ``prefix`` (default ``relay:cache:``) are read here; the rest
of the URI goes to redis-py. Errors become :class:`StorageError`; the cache stage treats them as
a miss, so a Redis outage slows answers down but never fails them.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..errors import ConfigurationError, StorageError

__all__ = ["RedisCache"]

_OWN = ("ttl", "prefix")


class RedisCache:
    def __init__(self, uri: str) -> None:
        from .redis_client import STORE_ERRORS, redis_client  # the redis extra; imported only when named

        parts = urlsplit(uri)
        params = dict(parse_qsl(parts.query))
        try:
            self.default_ttl = float(params.get("ttl", 3600))
        except ValueError as exc:
            raise ConfigurationError(f"storage.cache: ttl must be a number of seconds in {uri!r}") from exc
        self.prefix = params.get("prefix", "relay:cache:")
        rest = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k not in _OWN])
        self._redis: Any = redis_client(urlunsplit(parts._replace(query=rest)), "cache")
        self._errors: tuple[type[BaseException], ...] = STORE_ERRORS

    async def get(self, key: str) -> bytes | None:
        try:
            value = await self._redis.get(self.prefix + key)
        except self._errors as exc:
            raise StorageError(f"Redis cache read failed: {type(exc).__name__}") from exc
        return bytes(value) if value is not None else None

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        try:
            await self._redis.set(self.prefix + key, value, px=max(1, int(ttl * 1000)))
        except self._errors as exc:
            raise StorageError(f"Redis cache write failed: {type(exc).__name__}") from exc

    async def aclose(self) -> None:
        from .redis_client import close_client

        await close_client(self._redis)
