"""Circuit breakers shared by every worker through Redis (``storage.breakers = "redis://..."``).

Each breaker is one hash (``{prefix}breaker:{name}``) holding the same fields as
:class:`~asgi_ai_relay.breaker.Circuit`; every transition is one Lua script, so workers never
race on it. ``now`` comes from the relay's clock (wall time by default, the same on every host).
When Redis cannot be reached the breakers fail open: calls go through, because a broken breaker
store must not take the relay down with it. The client (:mod:`.redis_client`) bounds each call
and logs the outage once, when the server goes down and when it is back.

URI: ``redis://host:6379/0?prefix=myapp:relay:`` (``prefix`` defaults to ``asgi-ai-relay:``;
``timeout`` and ``retry_interval`` as in :mod:`.redis_client`). Every script touches one key.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..breaker_state import BUCKETS, BreakerPass, BreakerView, Circuit, CircuitOpen
from ..config import BreakerSettings
from .redis_client import STORE_ERRORS, close_client, redis_client

__all__ = ["RedisBreakers"]

logger = logging.getLogger("asgi_ai_relay")

# KEYS[1] circuit; ARGV: now, cooldown, probes allowed -> {allowed, probe, seconds left}
_ALLOW = """
local opened = redis.call('HGET', KEYS[1], 'opened')
if not opened then return {1, 0, '0'} end
local now = tonumber(ARGV[1])
local left = tonumber(opened) + tonumber(ARGV[2]) - now
if left > 0 then return {0, 0, tostring(left)} end
local probes = tonumber(redis.call('HGET', KEYS[1], 'probes') or '0')
local probe_at = tonumber(redis.call('HGET', KEYS[1], 'probe_at') or '0')
-- a probe whose worker died never reports: its slot expires after one cool-down
if probes >= tonumber(ARGV[3]) and now - probe_at < tonumber(ARGV[2]) then return {0, 0, '0'} end
if probes >= tonumber(ARGV[3]) then probes = 0 end
redis.call('HSET', KEYS[1], 'probes', probes + 1, 'probe_at', ARGV[1])
return {1, 1, '0'}
"""

# KEYS[1] circuit; ARGV: now, ok, probe, bucket width, buckets, threshold, rate, min requests, ttl ms
_RECORD = """
local key, now, ok, probe = KEYS[1], tonumber(ARGV[1]), ARGV[2] == '1', ARGV[3] == '1'
local n = tonumber(ARGV[5])
local current = math.floor(now / tonumber(ARGV[4]))
local idx = current % n
if tonumber(redis.call('HGET', key, 't' .. idx) or '-1') ~= current then
  redis.call('HSET', key, 't' .. idx, current, 'r' .. idx, 0, 'f' .. idx, 0)
end
redis.call('HINCRBY', key, 'r' .. idx, 1)
if not ok then redis.call('HINCRBY', key, 'f' .. idx, 1) end
if probe then
  if ok then redis.call('DEL', key) return 0 end
  redis.call('HSET', key, 'opened', ARGV[1], 'probes', 0)
elseif not ok and not redis.call('HGET', key, 'opened') then
  local requests, failures = 0, 0
  for i = 0, n - 1 do
    local t = tonumber(redis.call('HGET', key, 't' .. i) or '-1')
    if t > current - n then
      requests = requests + tonumber(redis.call('HGET', key, 'r' .. i) or '0')
      failures = failures + tonumber(redis.call('HGET', key, 'f' .. i) or '0')
    end
  end
  local rate = tonumber(ARGV[7])
  if failures >= tonumber(ARGV[6]) or (rate > 0 and requests >= tonumber(ARGV[8]) and failures >= rate * requests) then
    redis.call('HSET', key, 'opened', ARGV[1], 'probes', 0)
  end
end
redis.call('PEXPIRE', key, ARGV[9])
return 1
"""

_RELEASE = """
local probes = tonumber(redis.call('HGET', KEYS[1], 'probes') or '0')
if probes > 0 then redis.call('HINCRBY', KEYS[1], 'probes', -1) end
return 1
"""


def _split_uri(uri: str) -> tuple[str, str]:
    """The driver's URI and the key prefix (a query parameter the driver must not see)."""
    parts = urlsplit(uri)
    query = parse_qsl(parts.query)
    prefix = next((v for k, v in query if k == "prefix"), "asgi-ai-relay:")
    rest = urlencode([(k, v) for k, v in query if k != "prefix"])
    return urlunsplit(parts._replace(query=rest)), prefix


class RedisBreakers:
    def __init__(self, uri: str, settings: BreakerSettings) -> None:
        self.settings = settings
        url, self.prefix = _split_uri(uri)
        self.redis: Any = redis_client(url, "breakers")
        self._allow = self.redis.register_script(_ALLOW)
        self._record = self.redis.register_script(_RECORD)
        self._release = self.redis.register_script(_RELEASE)
        self._ttl_ms = int(max(settings.window, settings.cooldown) * 2000)

    def key(self, name: str) -> str:
        return f"{self.prefix}breaker:{name}"

    @staticmethod
    def _down(action: str, exc: BaseException) -> None:
        logger.debug("breakers: Redis %s failed (%s); calls go through unguarded", action, type(exc).__name__)

    async def allow(self, name: str, now: float) -> BreakerPass:
        s = self.settings
        try:
            allowed, probe, left = await self._allow(keys=[self.key(name)], args=[repr(now), s.cooldown, s.half_open_probes])
        except STORE_ERRORS as exc:
            self._down("allow", exc)
            return BreakerPass(name)
        if not allowed:
            raise CircuitOpen(name, float(left))
        return BreakerPass(name, probe=bool(probe))

    async def record(self, ticket: BreakerPass, ok: bool, now: float) -> None:
        s = self.settings
        args: list[str | int | float] = [repr(now), int(ok), int(ticket.probe), s.window / BUCKETS, BUCKETS,
                s.failure_threshold, s.failure_rate, s.min_requests, self._ttl_ms]
        try:
            await self._record(keys=[self.key(ticket.name)], args=args)
        except STORE_ERRORS as exc:
            self._down("record", exc)

    async def release(self, ticket: BreakerPass) -> None:
        if ticket.probe:
            try:
                await self._release(keys=[self.key(ticket.name)])
            except STORE_ERRORS as exc:
                self._down("release", exc)

    async def view(self, name: str, now: float) -> BreakerView:
        try:
            raw = await self.redis.hgetall(self.key(name))
        except STORE_ERRORS as exc:
            self._down("read", exc)
            raw = {}
        fields = {k.decode(): v.decode() for k, v in raw.items()}
        return Circuit.from_fields(fields).view(name, now, self.settings)

    async def aclose(self) -> None:
        await close_client(self.redis)
