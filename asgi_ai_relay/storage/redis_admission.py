"""One round trip per admission on Redis: rate limits, budget holds and leases in one script.

When the rate limits are on a Redis server (not a Cluster) and the budgets and the shared
concurrency slots are on the same server, what one request takes there goes in one script
call instead of one per store:

- **Admission** (:meth:`RedisAdmission.admit`): a list of operations, each a GCRA bucket
  (``g``), a budget hold on a caller's day and month counters (``h``) or a lease of a cap
  (``l``). The script checks them all first and writes only when every one passes, so a
  refused request takes nothing: not a bucket's charge, not a hold, not a lease. Its answer
  says which refused (a bucket: wait ``retry_after``; a budget: refuse; a cap: poll again; a
  missing budget counter: seed it from the ledger and ask again). A :class:`Reservation`
  may ride along: further buckets and leases taken only when the rest is and all of them fit,
  whose refusal refuses nothing else (a request's admission and its first attempt's
  reservation in one call, :mod:`asgi_ai_relay.stages.joint_reserve`).
- **The end** (:mod:`.redis_giveback`): what requests give back is queued, and everything
  queued within one turn of the event loop goes in one script call.

The keys are the stores' own (``{prefix}:...`` of the limits and the leases, the budgets'
``{prefix:budget:<caller>}:<period>``), so a request admitted this way and one admitted store
by store see the same counters. On a Redis Cluster every script keeps to one hash slot: the
limits' buckets and the leases share the tag ``{prefix}`` when both stores have the same
``prefix``, and join there too; a caller's budget counters live in a slot of their own, so on a
Cluster the budgets keep their own hold and settle.

The calls go through the limits' client, with its timeout and its server's circuit
(:mod:`.redis_client`); a failure is a :class:`StorageError` for the caller's ``fail_mode``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from ..errors import StorageError
from ..limits import Bucket, Decision, gcra
from . import redis_budgets
from .budget_state import Held, Window
from .redis_client import STORE_ERRORS, GuardedRedis
from .redis_giveback import GiveBacks

if TYPE_CHECKING:
    from .redis_leases import RedisLeases

__all__ = ["Admitted", "RedisAdmission", "Reservation", "same_server"]

# ARGV[1]: one letter per operation, and '|' before the optional ones; ARGV[2]: each operation's
# arguments in order, separated by spaces ('-' for none); each operation's keys in KEYS:
#   g  key | interval, burst, cost         (a GCRA bucket)
#   h  day, month | amount, day limit, day room, month limit, month room
#   l  key | holder, limit, ttl ms         (a lease)
# The operations before '|' are taken all or none; those after it all or none as well, and only
# when the first ones are.
# -> one string (one reply to read, not a table of them): "ok now extra" then one word per
#    operation, g: old TAT or '-' | h: '1,day,month,day epoch,month epoch' held, '1' would fit,
#    '0,day,month' refused, '-1' unseeded | l: '1' free, '0' full. ``ok``: 1 when the first
#    ones passed; ``extra``: 1 when the optional ones were taken too.
_ADMIT = redis_budgets._COMPARE + """
local ops = ARGV[1]
local v = {}
for w in string.gmatch(ARGV[2], '%S+') do v[#v + 1] = w end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function over(spent, limit, room)
  return limit ~= '-' and (not gt(limit, spent) or gt(spent, room))
end
local ok, extra, part, n, k, a, out, new = 1, 1, 1, 0, 1, 1, {}, {}
for i = 1, #ops do
  local op = string.sub(ops, i, i)
  if op == '|' then part = 2
  else
    local pass = true
    n = n + 1
    if op == 'g' then
      local interval, burst, cost = tonumber(v[a]), tonumber(v[a+1]), tonumber(v[a+2])
      local raw = redis.call('GET', KEYS[k])
      local tat = now
      out[n] = '-'
      if raw then out[n] = raw; tat = math.max(tonumber(raw), now) end
      new[n] = tat + cost * interval
      if cost > burst or new[n] - burst * interval - now > 1e-6 * interval then pass = false end
      k, a = k + 1, a + 3
    elseif op == 'h' then
      local d, m = redis.call('HGET', KEYS[k], 'usd'), redis.call('HGET', KEYS[k+1], 'usd')
      if not d or not m then pass = false; out[n] = '-1'
      elseif over(d, v[a+1], v[a+2]) or over(m, v[a+3], v[a+4]) then pass = false; out[n] = '0,' .. d .. ',' .. m
      else out[n] = '1' end
      k, a = k + 2, a + 5
    else
      redis.call('ZREMRANGEBYSCORE', KEYS[k], '-inf', now_ms)
      out[n] = '1'
      if redis.call('ZCARD', KEYS[k]) >= tonumber(v[a+1]) and not redis.call('ZSCORE', KEYS[k], v[a]) then
        pass = false; out[n] = '0'
      end
      k, a = k + 1, a + 3
    end
    if not pass then
      if part == 1 then ok = 0 else extra = 0 end
    end
  end
end
if ok == 0 or part == 1 then extra = 0 end
if ok == 1 then
  part, n, k, a = 1, 0, 1, 1
  for i = 1, #ops do
    local op = string.sub(ops, i, i)
    if op == '|' then part = 2
    else
      n = n + 1
      local take = part == 1 or extra == 1
      if op == 'g' then
        if take then
          redis.call('SET', KEYS[k], string.format('%.17g', new[n]), 'PX', math.ceil((new[n] - now) * 1000) + 1000)
        end
        k, a = k + 1, a + 3
      elseif op == 'h' then
        if take then
          redis.call('HINCRBY', KEYS[k], 'usd', v[a])
          redis.call('HINCRBY', KEYS[k+1], 'usd', v[a])
          local d, m = redis.call('HMGET', KEYS[k], 'usd', 'epoch'), redis.call('HMGET', KEYS[k+1], 'usd', 'epoch')
          out[n] = table.concat({'1', d[1], m[1], d[2] or '', m[2] or ''}, ',')
        end
        k, a = k + 2, a + 5
      else
        if take then
          redis.call('ZADD', KEYS[k], now_ms + tonumber(v[a+2]), v[a])
          local last = redis.call('ZRANGE', KEYS[k], -1, -1, 'WITHSCORES')
          redis.call('PEXPIREAT', KEYS[k], last[2])
        end
        k, a = k + 1, a + 3
      end
    end
  end
end
return ok .. ' ' .. string.format('%.17g', now) .. ' ' .. extra .. ' ' .. table.concat(out, ' ')
"""


def same_server(a: Any, b: Any) -> bool:
    """Whether two clients of :mod:`.redis_client` talk to one server and database (or one Cluster)."""
    return type(a) is type(b) and a.relay_guard.where == b.relay_guard.where


class Reservation:
    """Buckets and leases an admission takes as well when they all fit (an attempt's, taken
    early); when one does not fit, none is taken and the admission goes on without them."""

    __slots__ = ("buckets", "caps", "costs", "holder", "ttl_ms")

    def __init__(self, buckets: Sequence[Bucket], costs: Sequence[float], caps: Sequence[tuple[str, int]],
                 holder: str, ttl_ms: int) -> None:
        self.buckets = buckets
        self.costs = costs
        self.caps = caps
        self.holder = holder
        self.ttl_ms = ttl_ms


class Admitted:
    """The answer of one admission: ``ok`` when everything was taken; otherwise what refused.
    ``reserved`` when the :class:`Reservation` was taken too, with ``reservation``, the
    decision of its buckets (``None`` without buckets)."""

    __slots__ = ("decision", "full", "holds", "ok", "reservation", "reserved", "unseeded")

    def __init__(self, ok: bool, decision: Decision | None, holds: list[Held], unseeded: list[int], full: bool,
                 reserved: bool = False, reservation: Decision | None = None) -> None:
        self.ok = ok
        self.decision = decision
        self.holds = holds
        self.unseeded = unseeded
        self.full = full
        self.reserved = reserved
        self.reservation = reservation


class RedisAdmission(GiveBacks):
    """The joint script of one limits store (and, on its server, of the budgets and the leases).

    :param limits: the :class:`~asgi_ai_relay.storage.redis.RedisRateLimits` whose client runs it.
    :param leases: the shared slots' :class:`~asgi_ai_relay.storage.redis_leases.RedisLeases`,
        joined when they are on the same server.
    """

    def __init__(self, limits: Any, leases: RedisLeases | None = None) -> None:
        self.client = limits._client
        super().__init__(self.client)
        self.key_prefix = limits._key_prefix
        self._admit = self.client.register_script(_ADMIT)
        #: On a Cluster only keys of one hash tag may share a script.
        self.cluster = not isinstance(self.client, GuardedRedis)
        joins = leases is not None and same_server(self.client, leases._client) and (
            not self.cluster or leases.prefix == limits.prefix)
        self.leases = leases if joins else None
        self.budgets = None
        self._budgets_seen = False

    def join_budgets(self, store: object) -> redis_budgets.RedisBudgets | None:
        """The budget store joined to the script (``None``: it is elsewhere); decided once."""
        if not self._budgets_seen:
            self._budgets_seen = True
            if not self.cluster and isinstance(store, redis_budgets.RedisBudgets) and same_server(self.client, store.redis):
                self.budgets = store
        return self.budgets

    # -- admission -------------------------------------------------------------------------

    async def admit(self, buckets: Sequence[Bucket], costs: Sequence[float], holds: Sequence[tuple[Window, Decimal]] = (),
                    caps: Sequence[tuple[str, int]] = (), holder: str = "", ttl_ms: int = 0,
                    extra: Reservation | None = None) -> Admitted:
        """Take every bucket's cost, every hold and a lease of every cap, or none of them; and
        then ``extra``, all of it or none.

        :raises StorageError: when Redis cannot be reached.
        """
        ops: list[str] = []
        keys: list[str] = []
        args: list[str] = []
        self._buckets(ops, keys, args, buckets, costs)
        budgets = self.budgets
        for window, amount in holds:
            assert budgets is not None
            ops.append("h")
            keys += budgets.keys(window)
            pico = redis_budgets.to_pico(amount)
            args.append(str(pico))
            for limit in (window.daily, window.monthly):
                args += ("-", "-") if limit is None else (str(redis_budgets.to_pico(limit)), str(redis_budgets.to_pico(limit) - pico))
        self._leases(ops, keys, args, caps, holder, ttl_ms)
        if extra is not None:
            ops.append("|")
            self._buckets(ops, keys, args, extra.buckets, extra.costs)
            self._leases(ops, keys, args, extra.caps, extra.holder, extra.ttl_ms)
        try:
            reply = await self._admit(keys=keys, args=["".join(ops), " ".join(args)])
        except STORE_ERRORS as exc:
            raise StorageError(f"Redis admission failed: {type(exc).__name__}") from exc
        return _parse(reply, buckets, costs, len(holds), len(caps), extra)

    def _buckets(self, ops: list[str], keys: list[str], args: list[str], buckets: Sequence[Bucket],
                 costs: Sequence[float]) -> None:
        prefix = self.key_prefix
        for bucket, cost in zip(buckets, costs, strict=True):
            ops.append("g")
            keys.append(prefix + bucket.key)
            rate = bucket.rate
            args += (repr(rate.interval), str(rate.burst), repr(float(cost)))

    def _leases(self, ops: list[str], keys: list[str], args: list[str], caps: Sequence[tuple[str, int]],
                holder: str, ttl_ms: int) -> None:
        for name, cap in caps:
            assert self.leases is not None
            ops.append("l")
            keys.append(self.leases.key(name))
            args += (holder, str(int(cap)), str(ttl_ms))

    async def take(self, buckets: Sequence[Bucket], costs: Sequence[float], holds: Sequence[tuple[Window, Decimal]] = (),
                   caps: Sequence[tuple[str, int]] = (), holder: str = "", ttl_ms: int = 0,
                   extra: Reservation | None = None) -> Admitted:
        """:meth:`admit`, shielded: a request cancelled while the call is on its way gives back
        what it took once it lands.

        :raises StorageError: when Redis cannot be reached.
        """
        pending = asyncio.ensure_future(self.admit(buckets, costs, holds, caps, holder, ttl_ms, extra))
        try:
            return await asyncio.shield(pending)
        except asyncio.CancelledError:
            def landed(done: asyncio.Future[Admitted]) -> None:
                if not done.cancelled() and done.exception() is None and done.result().ok:
                    self.give_back(buckets, costs, holds, done.result(), caps, holder)
                    if done.result().reserved:
                        assert extra is not None
                        self.unreserve(extra)

            pending.add_done_callback(landed)
            raise

    def give_back(self, buckets: Sequence[Bucket], costs: Sequence[float], holds: Sequence[tuple[Window, Decimal]],
                  admitted: Admitted, caps: Sequence[tuple[str, int]] = (), holder: str = "") -> None:
        """Undo an admission that landed for a request no longer there (cancelled on the way)."""
        if buckets:
            self.adjust(buckets, [-c for c in costs])
        for (window, amount), held in zip(holds, admitted.holds, strict=True):
            self.settle(window, held, amount, Decimal(0), None)
        self.release([(name, holder) for name, _ in caps])

    def unreserve(self, reservation: Reservation) -> None:
        """Give back a reservation taken and not used: its buckets' whole charge, its leases."""
        if reservation.buckets:
            self.adjust(reservation.buckets, [-c for c in reservation.costs])
        self.release([(name, reservation.holder) for name, _ in reservation.caps])


def _parse(reply: Any, buckets: Sequence[Bucket], costs: Sequence[float], holds: int, caps: int,
           extra: Reservation | None) -> Admitted:
    words = (reply.decode() if isinstance(reply, bytes) else reply).split(" ")
    ok = words[0] == "1"
    now = float(words[1])
    out = words[3:]
    held: list[Held] = []
    unseeded: list[int] = []
    for index, word in enumerate(out[len(buckets):len(buckets) + holds]):
        raw = word.split(",")
        status = raw[0]
        if status == "-1":
            unseeded.append(index)
            held.append(Held(False, Decimal(0), Decimal(0)))
        elif status == "0":
            held.append(Held(False, redis_budgets.from_pico(raw[1]), redis_budgets.from_pico(raw[2])))
        elif len(raw) == 1:  # would fit, but something else refused: nothing was held
            held.append(Held(True, Decimal(0), Decimal(0)))
        else:
            held.append(Held(True, redis_budgets.from_pico(raw[1]), redis_budgets.from_pico(raw[2]), (raw[3], raw[4])))
    end = len(buckets) + holds + caps
    full = "0" in out[len(buckets) + holds:end]
    decision = None
    if buckets:
        wait, states = 0.0, []
        for bucket, cost, word in zip(buckets, costs, out, strict=False):
            _, bucket_wait, state = gcra(None if word == "-" else float(word), now, bucket.rate, cost)
            wait = max(wait, bucket_wait)
            states.append(state)
        # Refused with nothing else to blame: a bucket, by less than this side's rounding sees.
        allowed = ok or (wait <= 0.0 and (full or bool(unseeded) or not all(h.allowed for h in held)))
        decision = Decision(allowed, 0.0 if allowed else max(wait, 0.001), tuple(states))
    reserved = words[2] == "1"
    reservation = None
    if reserved and extra is not None and extra.buckets:
        states = [gcra(None if word == "-" else float(word), now, bucket.rate, cost)[2]
                  for bucket, cost, word in zip(extra.buckets, extra.costs, out[end:], strict=False)]
        reservation = Decision(True, 0.0, tuple(states))
    return Admitted(ok, decision, held, unseeded, full, reserved, reservation)
