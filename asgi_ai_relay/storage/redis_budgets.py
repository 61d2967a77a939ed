"""Budgets on Redis: one spend per caller and period for every worker and host on the server.

Keys: ``{<prefix>:budget:<caller>}:<period>``, a hash for the day (``2026-12-01``) and one for
the month (``2026-12``). The hash tag (the part in braces) is the same for both keys of a
caller, so both sit in one cluster slot and each script touches one slot. A hash holds ``usd``
(the spend, holds included) and ``epoch`` (which seeding made it); it expires a day after its
period ends.

Money is an integer count of picodollars (10**-12 USD), so Redis adds exactly (``HINCRBY``, int64:
up to 9.2 million USD per caller and period) and the scripts compare exactly (as decimal
strings, never as Lua's doubles). A cost with more than 12 decimal places (no price list of at
most 6 decimals per million tokens gives one) is rounded up to the next picodollar, so the
counter never falls below what the ledger records.

**Hold** (admission, one script): refused when either period's spend has reached its limit or
the estimate on top of it would cross it; otherwise the estimate is added to both, atomically.
**Settle** (the request's end, one script): the hold is replaced by the real cost. A hold made
before its counter was re-seeded (a flush in between) adds the whole cost instead, because the
new seed did not include it.

**Seeding.** When a counter is missing (a first start, a new day, a flush, a restart of Redis
without persistence), the hold script says so; the store reads the caller's spend from the
ledger (``seeder``) and writes it with ``NX`` semantics (a counter another worker seeded in
between wins), then holds again. So a flush or a restart never resets anyone's spend; what it
can miss is the rows other processes had not yet written to the ledger (their last batch).

**The bound.** Every admitted hold fits under the limit at the moment it is taken, and holds
and settled costs are counted together, so the counter never passes the limit through
admissions. Spend can end above it only by what the requests in flight when the budget ran out
cost beyond their estimates: ``spent <= limit + sum(cost - estimate)`` over those requests
(with ``max_tokens`` set, the estimate is at most the cost of a reply that long, and over a
budget that is only the prompt's estimate error). The settle runs just after the request's
answer (in the background, one script call): until it lands, the hold is what is counted, so a
caller's very next request may see its previous estimate rather than its cost, never less.
"""

from __future__ import annotations

import math
import secrets
from decimal import Decimal
from typing import Any

from ..errors import StorageError
from .budget_state import Held, Seeder, Window, from_pico, to_pico
from .redis_client import STORE_ERRORS, close_client, prefixed_client

__all__ = ["RedisBudgets", "from_pico", "to_pico"]

#: Seconds a counter outlives its period (a late settle still finds it).
_GRACE = 86_400

_COMPARE = """
local function gt(a, b)
  local na, nb = string.sub(a, 1, 1) == '-', string.sub(b, 1, 1) == '-'
  if na ~= nb then return nb end
  if na then return gt(string.sub(b, 2), string.sub(a, 2)) end
  if #a ~= #b then return #a > #b end
  return a > b
end
"""

# KEYS day, month; ARGV amount, day limit, day room, month limit, month room ('' = no limit)
# -> {-1} unseeded | {0, day, month} refused | {1, day, month, day epoch, month epoch}
_HOLD = _COMPARE + """
local d = redis.call('HGET', KEYS[1], 'usd')
local m = redis.call('HGET', KEYS[2], 'usd')
if not d or not m then return {-1} end
local function over(spent, limit, room)
  return limit ~= '' and (not gt(limit, spent) or gt(spent, room))
end
if over(d, ARGV[2], ARGV[3]) or over(m, ARGV[4], ARGV[5]) then return {0, d, m} end
redis.call('HINCRBY', KEYS[1], 'usd', ARGV[1])
redis.call('HINCRBY', KEYS[2], 'usd', ARGV[1])
return {1, redis.call('HGET', KEYS[1], 'usd'), redis.call('HGET', KEYS[2], 'usd'),
        redis.call('HGET', KEYS[1], 'epoch'), redis.call('HGET', KEYS[2], 'epoch')}
"""

# KEYS day, month; ARGV cost - held, cost, day epoch, month epoch -> {day, month}
_SETTLE = """
local out = {}
for i = 1, 2 do
  local epoch = redis.call('HGET', KEYS[i], 'epoch')
  if epoch then
    redis.call('HINCRBY', KEYS[i], 'usd', epoch == ARGV[2 + i] and ARGV[1] or ARGV[2])
  end
  out[i] = redis.call('HGET', KEYS[i], 'usd') or '0'
end
return out
"""

# KEYS day, month; ARGV day usd, month usd, epoch, day ttl ms, month ttl ms
_SEED = """
for i = 1, 2 do
  if redis.call('EXISTS', KEYS[i]) == 0 then
    redis.call('HSET', KEYS[i], 'usd', ARGV[i], 'epoch', ARGV[3])
    redis.call('PEXPIRE', KEYS[i], ARGV[3 + i])
  end
end
return 1
"""



class RedisBudgets:
    """``redis://host:6379/0?prefix=relay`` (``timeout``, ``retry_interval``: see :mod:`.redis_client`).

    :raises ConfigurationError: for an unknown option.
    """

    def __init__(self, uri: str, seeder: Seeder) -> None:
        self.prefix, self.redis = prefixed_client(uri, "storage.budgets", "budgets")
        self._hold = self.redis.register_script(_HOLD)
        self._settle = self.redis.register_script(_SETTLE)
        self._seed = self.redis.register_script(_SEED)
        self._seeder = seeder

    def keys(self, window: Window) -> list[str]:
        tag = "{" + f"{self.prefix}:budget:{window.caller}" + "}"
        return [f"{tag}:{window.day}", f"{tag}:{window.month}"]

    async def _call(self, script: Any, keys: list[str], args: list[str]) -> Any:
        try:
            return await script(keys=keys, args=args)
        except STORE_ERRORS as exc:
            raise StorageError(f"Redis budget storage failed: {type(exc).__name__}") from exc

    async def hold(self, window: Window, amount: Decimal) -> Held:
        pico = to_pico(amount)
        args = [str(pico)]
        for limit in (window.daily, window.monthly):
            args += ["", ""] if limit is None else [str(to_pico(limit)), str(to_pico(limit) - pico)]
        keys = self.keys(window)
        reply = await self._call(self._hold, keys, args)
        if int(reply[0]) == -1:
            await self.seed(window, keys)
            reply = await self._call(self._hold, keys, args)
        allowed = int(reply[0]) == 1
        token = (_text(reply[3]), _text(reply[4])) if allowed else None
        return Held(allowed, from_pico(reply[1]), from_pico(reply[2]), token)

    async def seed(self, window: Window, keys: list[str]) -> None:
        """Write the ledger's spend of the caller into the counters that are missing."""
        day, month = await self._seeder(window.caller, window.month_start, window.day_start)
        ttls = (math.ceil((window.day_left + _GRACE) * 1000), math.ceil((window.month_left + _GRACE) * 1000))
        args = [str(to_pico(day)), str(to_pico(month)), secrets.token_hex(8), str(ttls[0]), str(ttls[1])]
        await self._call(self._seed, keys, args)

    async def settle(self, window: Window, held: Held, amount: Decimal, cost: Decimal) -> tuple[Decimal, Decimal]:
        day_epoch, month_epoch = held.token
        cost_pico = to_pico(cost)
        args = [str(cost_pico - to_pico(amount)), str(cost_pico), day_epoch, month_epoch]
        reply = await self._call(self._settle, self.keys(window), args)
        return from_pico(reply[0]), from_pico(reply[1])

    async def claim(self, key: str, ttl: float) -> bool:
        """``True`` for the first claim of ``key`` (a budget alert's) within ``ttl`` seconds, on
        every worker of the server: ``SET NX PX``.

        :raises StorageError: when Redis cannot be reached.
        """
        try:
            return bool(await self.redis.set(f"{self.prefix}:alert:{key}", "1", nx=True, px=math.ceil(ttl * 1000)))
        except STORE_ERRORS as exc:
            raise StorageError(f"Redis budget storage failed: {type(exc).__name__}") from exc

    async def aclose(self) -> None:
        client, self.redis = self.redis, None
        await close_client(client)


def _text(raw: bytes | str | None) -> str:
    if raw is None:
        return ""
    return raw.decode() if isinstance(raw, bytes) else raw
