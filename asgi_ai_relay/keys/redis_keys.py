"""Managed keys on Redis, with every change pushed to every relay through pub/sub.

Keys (``prefix`` from the URI, default ``relay``): ``<prefix>:keys:rec:<id>`` (the record as
JSON), ``<prefix>:keys:digest:<digest>`` (its id), ``<prefix>:keys:ids`` (a set of ids) and
``<prefix>:keys:limits`` (a hash: subject -> limits as JSON). Every write publishes the digests
it changed (``*`` for an owner's or a team's limits) on ``<prefix>:keys:changes``; each relay
listening there drops those entries from its cache at once (:mod:`.directory`), so a revoked
key stops working on every worker without waiting for the cache's TTL.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import orjson

from ..errors import StorageError
from ..storage.redis_client import STORE_ERRORS, close_client, prefixed_client
from .record import KeyRecord, SubjectLimits

__all__ = ["RedisKeys"]

logger = logging.getLogger("asgi_ai_relay")

#: Seconds the listener waits before it reconnects after losing the server.
_RECONNECT = 1.0


class RedisKeys:
    def __init__(self, uri: str) -> None:
        self.prefix, self._client = prefixed_client(uri, "storage.keys", "key store")
        self._uri = uri
        self.channel = f"{self.prefix}:keys:changes"

    def _k(self, *parts: str) -> str:
        return ":".join((self.prefix, "keys", *parts))

    async def _call(self, name: str, *args: Any) -> Any:
        try:
            return await getattr(self._client, name)(*args)
        except STORE_ERRORS as exc:
            raise StorageError(f"storage.keys: {type(exc).__name__}: {exc}") from exc

    async def by_digest(self, digest: str) -> KeyRecord | None:
        key_id = await self._call("get", self._k("digest", digest))
        return await self.get(key_id.decode()) if key_id else None

    async def get(self, key_id: str) -> KeyRecord | None:
        data = await self._call("get", self._k("rec", key_id))
        return KeyRecord.from_dict(orjson.loads(data)) if data else None

    async def put(self, record: KeyRecord) -> None:
        old = await self.get(record.id)
        pipe = self._client.pipeline(transaction=True)
        pipe.set(self._k("rec", record.id), orjson.dumps(record.as_dict()))
        pipe.set(self._k("digest", record.digest), record.id)
        pipe.sadd(self._k("ids"), record.id)
        changed = [record.digest]
        if old is not None and old.digest != record.digest:
            pipe.delete(self._k("digest", old.digest))
            changed.append(old.digest)
        for digest in changed:
            pipe.publish(self.channel, digest)
        try:
            await pipe.execute()
        except STORE_ERRORS as exc:
            raise StorageError(f"storage.keys: {type(exc).__name__}: {exc}") from exc

    async def records(self, owner: str | None = None, team: str | None = None) -> list[KeyRecord]:
        ids = sorted(i.decode() for i in await self._call("smembers", self._k("ids")))
        if not ids:
            return []
        found = await self._call("mget", [self._k("rec", i) for i in ids])
        records = [KeyRecord.from_dict(orjson.loads(data)) for data in found if data]
        return [r for r in records if (owner is None or r.owner == owner) and (team is None or r.team == team)]

    async def limits(self, subject: str) -> SubjectLimits | None:
        data = await self._call("hget", self._k("limits"), subject)
        return SubjectLimits.from_dict(orjson.loads(data)) if data else None

    async def put_limits(self, limits: SubjectLimits) -> None:
        await self._call("hset", self._k("limits"), limits.subject, orjson.dumps(limits.as_dict()))
        await self.notify("*")

    async def all_limits(self) -> list[SubjectLimits]:
        found = await self._call("hgetall", self._k("limits"))
        return sorted((SubjectLimits.from_dict(orjson.loads(v)) for v in found.values()), key=lambda s: s.subject)

    async def notify(self, digest: str) -> None:
        await self._call("publish", self.channel, digest)

    async def watch(self, on_change: Callable[[str], None], ready: Callable[[], None]) -> None:
        """Listen for changes until cancelled; after a lost connection the listener reconnects,
        then drops everything (changes may have been missed)."""
        import redis.asyncio as aioredis

        from ..storage.redis_client import redis_client

        first = True
        while True:
            # A client of its own without the command bound: a subscription waits for as long as it must.
            client = redis_client(self._uri_without_prefix(), "key changes")
            plain = aioredis.Redis(connection_pool=client.connection_pool)
            pubsub = plain.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                if not first:
                    on_change("*")
                first = False
                ready()
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        on_change(message["data"].decode())
            except STORE_ERRORS as exc:
                logger.warning("key store: lost the change feed on Redis (%s); reconnecting", exc)
            finally:
                await pubsub.aclose()  # type: ignore[no-untyped-call]
                await close_client(client)
            # The cache stays meanwhile (the store is likely down too: the last lookups serve);
            # it is dropped once the feed is back, for the changes missed.
            await asyncio.sleep(_RECONNECT)

    def _uri_without_prefix(self) -> str:
        from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

        parts = urlsplit(self._uri)
        return urlunsplit(parts._replace(query=urlencode([(k, v) for k, v in parse_qsl(parts.query) if k != "prefix"])))

    async def aclose(self) -> None:
        await close_client(self._client)
