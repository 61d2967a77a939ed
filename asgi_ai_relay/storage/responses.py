"""Stored Responses API responses (``previous_response_id``, ``GET /v1/responses/{id}``).

    storage.responses = "memory://"                                            # the default
    storage.responses = "redis://127.0.0.1:6379/0?ttl=2592000&prefix=relay:responses:"
    storage.responses = "sqlite:///relay-responses.db"                         # see .responses_sql
    storage.responses = "postgresql://user@db/relay?ttl=2592000&table=relay_responses"

A record is ``{"conversation": [input items..., output items...], "response": {...}}``, kept
per (caller, response id): a caller reads and deletes only its own. ``memory://`` is per
process, bounded (oldest dropped first); Redis is shared by every worker, each record with a
TTL (``ttl`` seconds, default 30 days; ``prefix`` default ``relay:responses:``; the rest of the
URI goes to redis-py). SQLite and PostgreSQL (:mod:`.responses_sql`) are shared by every worker
on the file or database, with the same TTL. Store errors become :class:`StorageError`.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson

from ..errors import ConfigurationError, StorageError

__all__ = ["MemoryResponseStore", "RedisResponseStore", "ResponseStore", "response_store_from_uri"]

_MONTH = 30 * 24 * 3600.0


class ResponseStore(Protocol):
    async def get(self, caller: str, response_id: str) -> dict[str, Any] | None: ...

    async def put(self, caller: str, response_id: str, record: dict[str, Any]) -> None: ...

    async def delete(self, caller: str, response_id: str) -> bool:
        """Whether there was such a response."""

    async def aclose(self) -> None: ...


class MemoryResponseStore:
    """Per process: at most ``max_entries`` records, each kept ``ttl`` seconds."""

    def __init__(self, max_entries: int = 10_000, ttl: float = _MONTH) -> None:
        self.max_entries = max_entries
        self.ttl = ttl
        self._entries: OrderedDict[tuple[str, str], tuple[float, bytes]] = OrderedDict()

    async def get(self, caller: str, response_id: str) -> dict[str, Any] | None:
        entry = self._entries.get((caller, response_id))
        if entry is None:
            return None
        if entry[0] < time.monotonic():
            del self._entries[(caller, response_id)]
            return None
        record: dict[str, Any] = orjson.loads(entry[1])
        return record

    async def put(self, caller: str, response_id: str, record: dict[str, Any]) -> None:
        key = (caller, response_id)
        self._entries.pop(key, None)
        self._entries[key] = (time.monotonic() + self.ttl, orjson.dumps(record))
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    async def delete(self, caller: str, response_id: str) -> bool:
        entry = self._entries.pop((caller, response_id), None)
        return entry is not None and entry[0] >= time.monotonic()

    async def aclose(self) -> None:
        """Nothing to close; the records stay for as long as the process."""


class RedisResponseStore:
    """Shared by every worker: one key per record, ``{prefix}{caller}:{id}``, with a TTL."""

    def __init__(self, uri: str) -> None:
        from .redis_client import STORE_ERRORS, redis_client  # the redis extra; imported only when named

        parts = urlsplit(uri)
        params = dict(parse_qsl(parts.query))
        try:
            self.ttl = float(params.get("ttl", _MONTH))
        except ValueError:
            self.ttl = 0.0
        if not self.ttl > 0 or self.ttl == float("inf"):
            raise ConfigurationError(f"storage.responses: 'ttl' must be a number of seconds > 0, not {params.get('ttl')!r}")
        self.prefix = params.get("prefix", "relay:responses:")
        rest = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k not in ("ttl", "prefix")])
        self._redis: Any = redis_client(urlunsplit(parts._replace(query=rest)), "storage.responses")
        self._errors: tuple[type[BaseException], ...] = STORE_ERRORS

    def _key(self, caller: str, response_id: str) -> str:
        return f"{self.prefix}{len(caller)}:{caller}:{response_id}"

    async def get(self, caller: str, response_id: str) -> dict[str, Any] | None:
        try:
            value = await self._redis.get(self._key(caller, response_id))
        except self._errors as exc:
            raise StorageError(f"Redis response store read failed: {type(exc).__name__}") from exc
        if value is None:
            return None
        record: dict[str, Any] = orjson.loads(value)
        return record

    async def put(self, caller: str, response_id: str, record: dict[str, Any]) -> None:
        try:
            await self._redis.set(self._key(caller, response_id), orjson.dumps(record), px=max(1, int(self.ttl * 1000)))
        except self._errors as exc:
            raise StorageError(f"Redis response store write failed: {type(exc).__name__}") from exc

    async def delete(self, caller: str, response_id: str) -> bool:
        try:
            return bool(await self._redis.delete(self._key(caller, response_id)))
        except self._errors as exc:
            raise StorageError(f"Redis response store delete failed: {type(exc).__name__}") from exc

    async def aclose(self) -> None:
        from .redis_client import close_client

        await close_client(self._redis)


def response_store_from_uri(uri: str) -> ResponseStore:
    """:raises ConfigurationError: for a scheme without a response store."""
    scheme = uri.partition("://")[0]
    if scheme == "memory":
        return MemoryResponseStore()
    if scheme in ("redis", "rediss", "redis+cluster", "rediss+cluster"):
        return RedisResponseStore(uri)
    if scheme in ("sqlite", "postgresql", "postgres"):
        from .responses_sql import SQLResponseStore

        return SQLResponseStore.sqlite(uri) if scheme == "sqlite" else SQLResponseStore.postgres(uri)
    raise ConfigurationError(
        f"storage.responses: no response store for {scheme!r} URIs (memory://, redis://, sqlite:///, postgresql://)."
    )
