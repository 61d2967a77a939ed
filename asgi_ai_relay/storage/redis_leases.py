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

Outages are bounded as in :mod:`.redis`: short socket timeouts, then ``retry_interval``
seconds of raising :class:`StorageError` at once, with one log line when Redis goes and one
when it comes back. The caller decides to fail open (its own per-process gate) or closed.

    leases = RedisLeases("redis://127.0.0.1:6379/0?prefix=relay")
    if await leases.acquire("provider:openai", limit=8, holder_id=request_id, ttl_s=120):
        try: ...                                  # a long call refreshes: leases.refresh(...)
        finally: await leases.release("provider:openai", request_id)
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

from ..errors import ConfigurationError, StorageError

__all__ = ["RedisLeases"]

logger = logging.getLogger("asgi_ai_relay")

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

    :param uri: the Redis URL; ``prefix`` namespaces the keys (and is their hash tag),
        ``timeout`` bounds connecting and each command (seconds), ``retry_interval`` is how long
        to stop trying after a failure.
    :raises ConfigurationError: for a bad option.
    """

    def __init__(self, uri: str) -> None:
        parts = urlsplit(uri)
        options = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        try:
            self.prefix = options.pop("prefix", "relay")
            self.timeout = float(options.pop("timeout", "0.25"))
            self.retry_interval = float(options.pop("retry_interval", "1"))
        except ValueError as exc:
            raise ConfigurationError(f"leases: bad option in {parts.query!r}: {exc}") from exc
        if options:
            raise ConfigurationError(f"leases: unknown option {sorted(options)[0]!r} (prefix, timeout, retry_interval)")
        self.url = urlunsplit(parts._replace(query=""))
        self._client: Any = None
        self._scripts: dict[str, Any] = {}
        self._down_until = 0.0

    def key(self, name: str) -> str:
        return "{" + self.prefix + "}:lease:" + name

    def _script(self, source: str) -> Any:
        if self._client is None:
            try:
                import redis.asyncio as aioredis
                from redis.asyncio.retry import Retry
                from redis.backoff import NoBackoff
            except ImportError as exc:  # pragma: no cover - depends on the install
                raise ConfigurationError("leases: redis:// needs the 'redis' extra (pip install asgi-ai-relay[redis])") from exc
            self._client = aioredis.Redis.from_url(
                self.url,
                socket_timeout=self.timeout,
                socket_connect_timeout=self.timeout,
                retry=Retry(NoBackoff(), 1),  # one reconnect for a pooled socket Redis closed
                health_check_interval=0,
            )
        script = self._scripts.get(source)
        if script is None:
            script = self._scripts[source] = self._client.register_script(source)
        return script

    async def _run(self, source: str, name: str, args: list[str]) -> int:
        if self._down_until and time.monotonic() < self._down_until:
            raise StorageError("Redis lease storage is unavailable (retrying shortly).")
        import redis.exceptions

        try:
            result = await self._script(source)(keys=[self.key(name)], args=args)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
            if not self._down_until:
                logger.warning("leases: Redis at %s is unavailable: %s", self._safe_url(), type(exc).__name__)
            self._down_until = time.monotonic() + self.retry_interval
            raise StorageError(f"Redis lease storage is unavailable: {type(exc).__name__}") from exc
        except redis.exceptions.RedisError as exc:
            raise StorageError(f"Redis lease storage failed: {exc}") from exc
        if self._down_until:
            self._down_until = 0.0
            logger.warning("leases: Redis at %s is available again", self._safe_url())
        return int(result)

    def _safe_url(self) -> str:
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.hostname or ''}:{parts.port or 6379}{parts.path}"

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
        client, self._client, self._scripts = self._client, None, {}
        if client is not None:
            await client.aclose()


def _ms(seconds: float) -> int:
    """A lease of at least one millisecond (Redis's clock here counts whole ones)."""
    return max(1, math.ceil(seconds * 1000))
