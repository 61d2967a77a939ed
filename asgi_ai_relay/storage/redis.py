"""Rate limits on Redis: one limit for every process and host that shares the server.

Each decision is one Lua script, so it is atomic across clients: it reads the TATs of all the
request's keys, and writes them all only if every bucket allows the cost. Time is Redis's own
clock (``TIME``), so hosts whose clocks disagree still share one limit. Keys carry a hash tag
(``{prefix}``) so every key of a request lives in one cluster slot, and expire once their
bucket is full again.

Outages are bounded: short socket timeouts, and after a failure the backend does not try again
for ``retry_interval`` seconds (it raises :class:`StorageError` at once), then tries the next
request, so it recovers as soon as Redis is back. The caller decides to fail open or closed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

from ..errors import ConfigurationError, StorageError
from ..limits import Bucket, Decision, gcra

__all__ = ["RedisRateLimits"]

logger = logging.getLogger("asgi_ai_relay")

_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local old, new, ok = {}, {}, 1
for i = 1, #KEYS do
  local interval, burst, cost = tonumber(ARGV[3*i-2]), tonumber(ARGV[3*i-1]), tonumber(ARGV[3*i])
  local raw = redis.call('GET', KEYS[i])
  local tat = now
  old[i] = ''
  if raw then old[i] = raw; tat = math.max(tonumber(raw), now) end
  new[i] = tat + cost * interval
  if cost > burst or new[i] - burst * interval - now > 1e-6 * interval then ok = 0 end
end
if ok == 1 then
  for i = 1, #KEYS do
    redis.call('SET', KEYS[i], string.format('%.17g', new[i]), 'PX', math.ceil((new[i] - now) * 1000) + 1000)
  end
end
return {ok, string.format('%.17g', now), unpack(old)}
"""

_ADJUST = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
for i = 1, #KEYS do
  local interval, delta = tonumber(ARGV[2*i-1]), tonumber(ARGV[2*i])
  local raw = redis.call('GET', KEYS[i])
  local tat = now
  if raw then tat = math.max(tonumber(raw), now) end
  local new = tat + delta * interval
  if new > now then
    redis.call('SET', KEYS[i], string.format('%.17g', new), 'PX', math.ceil((new - now) * 1000) + 1000)
  else
    redis.call('DEL', KEYS[i])
  end
end
return 1
"""


class RedisRateLimits:
    """``redis://host:port/db?prefix=relay&timeout=0.5&retry_interval=1``.

    :param uri: the Redis URL; ``prefix`` namespaces the keys, ``timeout`` bounds connecting and
        each command (seconds), ``retry_interval`` is how long to stop trying after a failure.
    :raises ConfigurationError: for a bad option.
    """

    def __init__(self, uri: str) -> None:
        parts = urlsplit(uri)
        options = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        try:
            self.prefix = options.pop("prefix", "relay")
            self.timeout = float(options.pop("timeout", "0.5"))
            self.retry_interval = float(options.pop("retry_interval", "1"))
        except ValueError as exc:
            raise ConfigurationError(f"storage.limits: bad option in {parts.query!r}: {exc}") from exc
        if options:
            raise ConfigurationError(f"storage.limits: unknown option {sorted(options)[0]!r} (prefix, timeout, retry_interval)")
        self.url = urlunsplit(parts._replace(query=""))
        self._client: Any = None
        self._scripts: tuple[Any, Any] | None = None
        self._down_until = 0.0
        self._key_prefix = "{" + self.prefix + "}:"

    def _connect(self) -> tuple[Any, Any]:
        if self._scripts is None:
            try:
                import redis.asyncio as aioredis
                from redis.asyncio.retry import Retry
                from redis.backoff import NoBackoff
            except ImportError as exc:  # pragma: no cover - depends on the install
                raise ConfigurationError("storage.limits: redis:// needs the 'redis' extra (pip install asgi-ai-relay[redis])") from exc
            self._client = aioredis.Redis.from_url(
                self.url,
                socket_timeout=self.timeout,
                socket_connect_timeout=self.timeout,
                retry=Retry(NoBackoff(), 1),  # one reconnect for a pooled socket Redis closed
                health_check_interval=0,
            )
            self._scripts = (self._client.register_script(_ACQUIRE), self._client.register_script(_ADJUST))
        return self._scripts

    async def _run(self, script: int, keys: list[str], args: list[str]) -> Any:
        if self._down_until and time.monotonic() < self._down_until:
            raise StorageError("Redis rate-limit storage is unavailable (retrying shortly).")
        import redis.exceptions

        try:
            result = await self._connect()[script](keys=keys, args=args)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
            if not self._down_until:
                logger.warning("rate limits: Redis at %s is unavailable: %s", self._safe_url(), exc)
            self._down_until = time.monotonic() + self.retry_interval
            raise StorageError(f"Redis rate-limit storage is unavailable: {type(exc).__name__}") from exc
        except redis.exceptions.RedisError as exc:
            raise StorageError(f"Redis rate-limit storage failed: {exc}") from exc
        if self._down_until:
            self._down_until = 0.0
            logger.warning("rate limits: Redis at %s is available again", self._safe_url())
        return result

    def _safe_url(self) -> str:
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        return f"{parts.scheme}://{host}:{parts.port or 6379}{parts.path}"

    async def acquire(self, buckets: Sequence[Bucket], costs: Sequence[float]) -> Decision:
        args: list[str] = []
        for bucket, cost in zip(buckets, costs, strict=True):
            args += (repr(bucket.rate.interval), str(bucket.rate.burst), repr(float(cost)))
        reply = await self._run(0, [self._key_prefix + b.key for b in buckets], args)
        now = float(reply[1])
        wait = 0.0
        states = []
        for bucket, cost, raw in zip(buckets, costs, reply[2:], strict=True):
            _, bucket_wait, state = gcra(float(raw) if raw else None, now, bucket.rate, cost)
            wait = max(wait, bucket_wait)
            states.append(state)
        allowed = int(reply[0]) == 1
        return Decision(allowed, 0.0 if allowed else max(wait, 0.001), tuple(states))

    async def adjust(self, buckets: Sequence[Bucket], deltas: Sequence[float]) -> None:
        args: list[str] = []
        for bucket, delta in zip(buckets, deltas, strict=True):
            args += (repr(bucket.rate.interval), repr(float(delta)))
        await self._run(1, [self._key_prefix + b.key for b in buckets], args)

    async def aclose(self) -> None:
        client, self._client, self._scripts = self._client, None, None
        if client is not None:
            await client.aclose()
