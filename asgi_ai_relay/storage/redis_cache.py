"""The shared response cache: Redis with a TTL per entry, through redis-py's asyncio client.

    storage.cache = "redis://127.0.0.1:6379/0?ttl=7200&prefix=relay:cache:"

``ttl`` (seconds, default 3600), ``prefix`` (default ``relay:cache:``) and ``lock_ttl`` (seconds a
single-flight lock lives unless renewed, default 5) are read here; the rest of the URI goes to
redis-py. Errors become :class:`StorageError`; the cache stage treats them as a miss, so a Redis
outage slows answers down but never fails them.

Besides entries it keeps one lock per key while a process is fetching that key's answer
(:class:`~asgi_ai_relay.storage.base.FlightLocks`): ``SET NX PX`` with the holder's token, and
scripts that check the token to renew it, free it, or store the entry and free it at once. An
entry is ``{prefix}{<key>}`` and its lock ``{prefix}{<key>}:lock``: the hash tag keeps both in
one slot of a Redis Cluster, as a script over both needs.
"""

from __future__ import annotations

import asyncio
import math
from functools import cached_property
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..errors import ConfigurationError, StorageError

__all__ = ["RedisCache"]

_OWN = ("ttl", "prefix", "lock_ttl")

# In one step: the entry if there is one, else the lock when it is free, else "someone leads".
_CLAIM = """
local entry = redis.call('GET', KEYS[1])
if entry then return {0, entry} end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {1} end
return {0}
"""
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_UNCLAIM = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
"""
_PUBLISH = """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if redis.call('GET', KEYS[2]) == ARGV[3] then redis.call('DEL', KEYS[2]) end
return 0
"""


def _delivered() -> None:
    """Re-raise a cancellation the driver lost: Python 3.11's ``wait_for`` (inside redis-py)
    drops one that races a reply, and the request would then go on as if never cancelled."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


class RedisCache:
    def __init__(self, uri: str) -> None:
        from .redis_client import STORE_ERRORS, redis_client  # the redis extra; imported only when named

        parts = urlsplit(uri)
        params = dict(parse_qsl(parts.query))
        self.default_ttl = _seconds(params, "ttl", 3600.0, uri, zero=True)
        self.lock_ttl = _seconds(params, "lock_ttl", 5.0, uri)
        self.prefix = params.get("prefix", "relay:cache:")
        rest = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k not in _OWN])
        self._redis: Any = redis_client(urlunsplit(parts._replace(query=rest)), "cache")
        self._errors: tuple[type[BaseException], ...] = STORE_ERRORS

    def _entry(self, key: str) -> str:
        return f"{self.prefix}{{{key}}}"

    async def get(self, key: str) -> bytes | None:
        try:
            value = await self._redis.get(self._entry(key))
        except self._errors as exc:
            raise StorageError(f"Redis cache read failed: {type(exc).__name__}") from exc
        _delivered()
        return bytes(value) if value is not None else None

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        try:
            await self._redis.set(self._entry(key), value, px=_ms(ttl))
        except self._errors as exc:
            raise StorageError(f"Redis cache write failed: {type(exc).__name__}") from exc
        _delivered()

    # -- single-flight locks (FlightLocks) -------------------------------------------------

    @cached_property
    def _scripts(self) -> dict[str, Any]:
        return {name: self._redis.register_script(text) for name, text in
                (("claim", _CLAIM), ("renew", _RENEW), ("unclaim", _UNCLAIM), ("publish", _PUBLISH))}

    async def _run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        try:
            answer = await self._scripts[name](keys=keys, args=args)
        except self._errors as exc:
            raise StorageError(f"Redis cache {name} failed: {type(exc).__name__}") from exc
        _delivered()
        return answer

    async def claim(self, key: str, token: str, ttl: float) -> tuple[bool, bytes | None]:
        entry = self._entry(key)
        answer = await self._run("claim", [entry, entry + ":lock"], [token, _ms(ttl)])
        if len(answer) > 1:
            return False, bytes(answer[1])
        return bool(answer[0]), None

    async def renew(self, key: str, token: str, ttl: float) -> bool:
        return bool(await self._run("renew", [self._entry(key) + ":lock"], [token, _ms(ttl)]))

    async def unclaim(self, key: str, token: str) -> None:
        await self._run("unclaim", [self._entry(key) + ":lock"], [token])

    async def publish(self, key: str, value: bytes, ttl: float, token: str) -> None:
        entry = self._entry(key)
        await self._run("publish", [entry, entry + ":lock"], [value, _ms(ttl), token])

    async def aclose(self) -> None:
        from .redis_client import close_client

        await close_client(self._redis)


def _seconds(params: dict[str, str], name: str, default: float, uri: str, *, zero: bool = False) -> float:
    """:raises ConfigurationError: for a value that is not a finite number of seconds > 0 (>= 0
    when ``zero``)."""
    try:
        value = float(params.get(name, default))
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and (value > 0 or (zero and value == 0))):
        raise ConfigurationError(f"storage.cache: {name} must be a number of seconds in {uri!r}")
    return value
