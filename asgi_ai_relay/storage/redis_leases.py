"""Concurrency slots shared by every worker through Redis: leases that expire.

A cap of ``limit`` calls at once (``queue.max_in_flight``, a provider's ``per_provider``) held
across processes is one sorted set per cap: each member is a holder (a request id), scored by
the millisecond its lease runs out. Taking a slot first drops the expired holders, so the slots
of a worker that died (SIGKILL, OOM, a lost host) come back once their lease runs out, with no
clean-up job. Each operation is one Lua script on Redis's own clock (``TIME``), so hosts whose
clocks disagree share one cap.

The key is ``{prefix}:lease:<name>``: the hash tag is the limiter's (``{prefix}``), so a lease
and the request's rate-limit buckets live in one Redis Cluster slot and can share one script.
The set expires with its longest lease, so an abandoned cap leaves nothing behind.

Outages are bounded by the client (:mod:`.redis_client`, shared with the other stores of the
same server): each call within ``timeout``, and while the server is down calls fail at once
until a probe finds it back, with one log line each way. Every failure is a
:class:`StorageError`; the caller decides to fail open (its own per-process gate) or closed.

    leases = RedisLeases("redis://127.0.0.1:6379/0?prefix=relay")
    if await leases.acquire("provider:openai", limit=8, holder_id=request_id, ttl_s=120):
        try: ...                                  # a long call refreshes: leases.refresh(...)
        finally: await leases.release("provider:openai", request_id)
"""

from __future__ import annotations

import math

from ..errors import StorageError
from .redis_client import STORE_ERRORS, close_client, prefixed_client

__all__ = ["RedisLeases"]

# KEYS[1] the cap; ARGV: holder, limit, ttl ms -> 1 taken (or already held, then renewed), 0 full
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local held = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not held and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
local expiry = now + tonumber(ARGV[3])
redis.call('ZADD', KEYS[1], expiry, ARGV[1])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], last[2])
return 1
"""

# KEYS[1] the cap; ARGV: holder, ttl ms -> 1 renewed, 0 the lease had run out (or was released)
_REFRESH = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[2]), ARGV[1])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], last[2])
return 1
"""

_RELEASE = "return redis.call('ZREM', KEYS[1], ARGV[1])"

# KEYS[1] the cap -> holders whose lease has not run out
_HOLDERS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZCARD', KEYS[1])
"""


class RedisLeases:
    """``redis://host:port/db?prefix=relay&timeout=0.25&retry_interval=1``.

    :param uri: the Redis URL (any scheme of :mod:`.redis_client`); ``prefix`` namespaces the
        keys (and is their hash tag), ``timeout`` and ``retry_interval`` are the client's.
    :raises ConfigurationError: for a bad or unknown option.
    """

    def __init__(self, uri: str) -> None:
        self.prefix, self._client = prefixed_client(uri, "leases", "leases")
        self._scripts = {source: self._client.register_script(source) for source in (_ACQUIRE, _REFRESH, _RELEASE, _HOLDERS)}

    def key(self, name: str) -> str:
        return "{" + self.prefix + "}:lease:" + name

    async def _run(self, source: str, name: str, args: list[str]) -> int:
        try:
            return int(await self._scripts[source](keys=[self.key(name)], args=args))
        except STORE_ERRORS as exc:
            raise StorageError(f"Redis lease storage failed: {type(exc).__name__}") from exc

    async def acquire(self, name: str, limit: int, holder_id: str, ttl_s: float) -> bool:
        """Take one of ``limit`` slots of cap ``name`` for ``ttl_s`` seconds; ``False`` when all
        are held. A holder that already has a slot keeps it (renewed), never takes a second.

        :raises StorageError: when Redis cannot be reached.
        """
        return await self._run(_ACQUIRE, name, [holder_id, str(int(limit)), str(_ms(ttl_s))]) == 1

    async def refresh(self, name: str, holder_id: str, ttl_s: float) -> bool:
        """Extend a held lease to ``ttl_s`` from now; ``False`` when it had already run out (the
        slot may be someone else's by now).

        :raises StorageError: when Redis cannot be reached.
        """
        return await self._run(_REFRESH, name, [holder_id, str(_ms(ttl_s))]) == 1

    async def release(self, name: str, holder_id: str) -> bool:
        """Give the slot back; ``False`` when it had run out or was given back already.

        :raises StorageError: when Redis cannot be reached.
        """
        return await self._run(_RELEASE, name, [holder_id]) == 1

    async def holders(self, name: str) -> int:
        """How many slots of ``name`` are held now.

        :raises StorageError: when Redis cannot be reached.
        """
        return await self._run(_HOLDERS, name, [])

    async def aclose(self) -> None:
        client, self._client = self._client, None
        await close_client(client)


def _ms(seconds: float) -> int:
    """A lease of at least one millisecond (Redis's clock here counts whole ones)."""
    return max(1, math.ceil(seconds * 1000))
