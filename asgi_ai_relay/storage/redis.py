"""Rate limits on Redis: one limit for every process and host that shares the server.

Each decision is one Lua script, so it is atomic across clients: it reads the TATs of all the
request's keys, and writes them all only if every bucket allows the cost. Time is Redis's own
clock (``TIME``), so hosts whose clocks disagree still share one limit. Keys carry a hash tag
(``{prefix}``) so every key of a request lives in one cluster slot, and expire once their
bucket is full again.

Outages are bounded by the client (:mod:`.redis_client`): each call within ``timeout``, and
while the server is down calls fail at once until a probe finds it back. Every failure is a
:class:`StorageError`; the caller decides to fail open or closed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import StorageError
from ..limits import Bucket, Decision, gcra
from .redis_admission import RedisAdmission
from .redis_client import STORE_ERRORS, close_client, prefixed_client

__all__ = ["RedisRateLimits"]

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
    """``redis://host:port/db?prefix=relay&timeout=0.25&retry_interval=1``.

    :param uri: the Redis URL (any scheme of :mod:`.redis_client`); ``prefix`` namespaces the
        keys, ``timeout`` and ``retry_interval`` are the client's (see :mod:`.redis_client`).
    :raises ConfigurationError: for a bad or unknown option.
    """

    def __init__(self, uri: str) -> None:
        self.prefix, self._client = prefixed_client(uri, "storage.limits", "rate limits")
        self._scripts = (self._client.register_script(_ACQUIRE), self._client.register_script(_ADJUST))
        self._key_prefix = "{" + self.prefix + "}:"

    async def _run(self, script: int, keys: list[str], args: list[str]) -> Any:
        try:
            return await self._scripts[script](keys=keys, args=args)
        except STORE_ERRORS as exc:
            raise StorageError(f"Redis rate-limit storage failed: {type(exc).__name__}") from exc

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

    def admission(self, leases: Any = None) -> RedisAdmission:
        """The joint script of this store (:mod:`.redis_admission`)."""
        return RedisAdmission(self, leases)

    async def aclose(self) -> None:
        client, self._client = self._client, None
        await close_client(client)
