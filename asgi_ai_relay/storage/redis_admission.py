"""One round trip per admission on Redis: rate limits, budget holds and leases in one script.

When the rate limits are on a Redis server (not a Cluster) and the budgets and the shared
concurrency slots are on the same server, what one request takes there goes in one script
call instead of one per store:

- **Admission** (:meth:`RedisAdmission.admit`): a list of operations, each a GCRA bucket
  (``g``), a budget hold on a caller's day and month counters (``h``) or a lease of a cap
  (``l``). The script checks them all first and writes only when every one passes, so a
  refused request takes nothing: not a bucket's charge, not a hold, not a lease. Its answer
  says which refused (a bucket: wait ``retry_after``; a budget: refuse; a cap: poll again; a
  missing budget counter: seed it from the ledger and ask again).
- **The end** (:meth:`RedisAdmission.later`): what requests give back (a bucket's token
  estimate reconciled, a hold settled to the real cost, a lease released) is queued, and
  everything queued within one turn of the event loop goes in one script call: a request's
  whole end is one round trip, shared with the ends of the requests finishing in the same turn.

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
import logging
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from ..errors import StorageError
from ..limits import Bucket, Decision, gcra
from . import redis_budgets
from .budget_state import Held, Window
from .redis_client import STORE_ERRORS, GuardedRedis

if TYPE_CHECKING:
    from .redis_leases import RedisLeases

__all__ = ["Admitted", "RedisAdmission", "same_server"]

logger = logging.getLogger("asgi_ai_relay")

# ARGV[1]: one letter per operation; then each one's arguments in order, each one's keys in KEYS:
#   g  key | interval, burst, cost         (a GCRA bucket)
#   h  day, month | amount, day limit, day room, month limit, month room   ('' = no limit)
#   l  key | holder, limit, ttl ms         (a lease)
# -> {1 if all passed, now, {per operation: g: old TAT or '' | h: {1, day, month, day epoch,
#    month epoch}, {0, day, month} refused, {-1} unseeded | l: 1 free, 0 full}}
_ADMIT = redis_budgets._COMPARE + """
local ops = ARGV[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function over(spent, limit, room)
  return limit ~= '' and (not gt(limit, spent) or gt(spent, room))
end
local ok, k, a, out, new = 1, 1, 2, {}, {}
for i = 1, #ops do
  local op = string.sub(ops, i, i)
  if op == 'g' then
    local interval, burst, cost = tonumber(ARGV[a]), tonumber(ARGV[a+1]), tonumber(ARGV[a+2])
    local raw = redis.call('GET', KEYS[k])
    local tat = now
    out[i] = ''
    if raw then out[i] = raw; tat = math.max(tonumber(raw), now) end
    new[i] = tat + cost * interval
    if cost > burst or new[i] - burst * interval - now > 1e-6 * interval then ok = 0 end
    k, a = k + 1, a + 3
  elseif op == 'h' then
    local d, m = redis.call('HGET', KEYS[k], 'usd'), redis.call('HGET', KEYS[k+1], 'usd')
    if not d or not m then ok = 0; out[i] = {-1}
    elseif over(d, ARGV[a+1], ARGV[a+2]) or over(m, ARGV[a+3], ARGV[a+4]) then ok = 0; out[i] = {0, d, m}
    else out[i] = {1} end
    k, a = k + 2, a + 5
  else
    redis.call('ZREMRANGEBYSCORE', KEYS[k], '-inf', now_ms)
    out[i] = 1
    if not redis.call('ZSCORE', KEYS[k], ARGV[a]) and redis.call('ZCARD', KEYS[k]) >= tonumber(ARGV[a+1]) then
      ok = 0; out[i] = 0
    end
    k, a = k + 1, a + 3
  end
end
if ok == 1 then
  k, a = 1, 2
  for i = 1, #ops do
    local op = string.sub(ops, i, i)
    if op == 'g' then
      redis.call('SET', KEYS[k], string.format('%.17g', new[i]), 'PX', math.ceil((new[i] - now) * 1000) + 1000)
      k, a = k + 1, a + 3
    elseif op == 'h' then
      redis.call('HINCRBY', KEYS[k], 'usd', ARGV[a])
      redis.call('HINCRBY', KEYS[k+1], 'usd', ARGV[a])
      out[i] = {1, redis.call('HGET', KEYS[k], 'usd'), redis.call('HGET', KEYS[k+1], 'usd'),
                redis.call('HGET', KEYS[k], 'epoch'), redis.call('HGET', KEYS[k+1], 'epoch')}
      k, a = k + 2, a + 5
    else
      redis.call('ZADD', KEYS[k], now_ms + tonumber(ARGV[a+2]), ARGV[a])
      local last = redis.call('ZRANGE', KEYS[k], -1, -1, 'WITHSCORES')
      redis.call('PEXPIREAT', KEYS[k], last[2])
      k, a = k + 1, a + 3
    end
  end
end
return {ok, string.format('%.17g', now), out}
"""

# ARGV[1]: one letter per operation, as above:
#   a  key | interval, delta               (a bucket reconciled: limits' adjust) -> 1
#   s  day, month | cost - held, cost, day epoch, month epoch   (budgets' settle) -> {day, month}
#   r  key | holder                        (a lease released) -> 1 or 0
_FINISH = """
local ops = ARGV[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local k, a, out = 1, 2, {}
for i = 1, #ops do
  local op = string.sub(ops, i, i)
  if op == 'a' then
    local interval, delta = tonumber(ARGV[a]), tonumber(ARGV[a+1])
    local raw = redis.call('GET', KEYS[k])
    local tat = now
    if raw then tat = math.max(tonumber(raw), now) end
    local new = tat + delta * interval
    if new > now then
      redis.call('SET', KEYS[k], string.format('%.17g', new), 'PX', math.ceil((new - now) * 1000) + 1000)
    else
      redis.call('DEL', KEYS[k])
    end
    out[i] = 1
    k, a = k + 1, a + 2
  elseif op == 's' then
    local spent = {}
    for j = 0, 1 do
      local epoch = redis.call('HGET', KEYS[k+j], 'epoch')
      if epoch then
        redis.call('HINCRBY', KEYS[k+j], 'usd', epoch == ARGV[a+2+j] and ARGV[a] or ARGV[a+1])
      end
      spent[j+1] = redis.call('HGET', KEYS[k+j], 'usd') or '0'
    end
    out[i] = spent
    k, a = k + 2, a + 4
  else
    out[i] = redis.call('ZREM', KEYS[k], ARGV[a])
    k, a = k + 1, a + 1
  end
end
return out
"""

#: What a queued operation's sender hears back: its reply, or ``None`` when the call failed.
Done = Callable[[Any], None]


def same_server(a: Any, b: Any) -> bool:
    """Whether two clients of :mod:`.redis_client` talk to one server and database (or one Cluster)."""
    return type(a) is type(b) and a.relay_guard.where == b.relay_guard.where


class Admitted:
    """The answer of one admission: ``ok`` when everything was taken; otherwise what refused."""

    __slots__ = ("decision", "full", "holds", "ok", "unseeded")

    def __init__(self, ok: bool, decision: Decision | None, holds: list[Held], unseeded: list[int], full: bool) -> None:
        self.ok = ok
        self.decision = decision
        self.holds = holds
        self.unseeded = unseeded
        self.full = full


class RedisAdmission:
    """The joint script of one limits store (and, on its server, of the budgets and the leases).

    :param limits: the :class:`~asgi_ai_relay.storage.redis.RedisRateLimits` whose client runs it.
    :param leases: the shared slots' :class:`~asgi_ai_relay.storage.redis_leases.RedisLeases`,
        joined when they are on the same server.
    """

    def __init__(self, limits: Any, leases: RedisLeases | None = None) -> None:
        self.client = limits._client
        self.key_prefix: str = limits._key_prefix
        self._admit = self.client.register_script(_ADMIT)
        self._finish = self.client.register_script(_FINISH)
        #: On a Cluster only keys of one hash tag may share a script.
        self.cluster = not isinstance(self.client, GuardedRedis)
        joins = leases is not None and same_server(self.client, leases._client) and (
            not self.cluster or leases.prefix == limits.prefix)
        self.leases = leases if joins else None
        self.budgets: redis_budgets.RedisBudgets | None = None
        self._budgets_seen = False
        self._queue: list[tuple[str, list[str], list[str], Done | None]] = []
        self._pending: set[asyncio.Task[None]] = set()

    def join_budgets(self, store: object) -> redis_budgets.RedisBudgets | None:
        """The budget store joined to the script (``None``: it is elsewhere); decided once."""
        if not self._budgets_seen:
            self._budgets_seen = True
            if not self.cluster and isinstance(store, redis_budgets.RedisBudgets) and same_server(self.client, store.redis):
                self.budgets = store
        return self.budgets

    # -- admission -------------------------------------------------------------------------

    async def admit(self, buckets: Sequence[Bucket], costs: Sequence[float], holds: Sequence[tuple[Window, Decimal]] = (),
                    caps: Sequence[tuple[str, int]] = (), holder: str = "", ttl_ms: int = 0) -> Admitted:
        """Take every bucket's cost, every hold and a lease of every cap, or none of them.

        :raises StorageError: when Redis cannot be reached.
        """
        ops: list[str] = []
        keys: list[str] = []
        args: list[str] = [""]
        for bucket, cost in zip(buckets, costs, strict=True):
            ops.append("g")
            keys.append(self.key_prefix + bucket.key)
            args += (repr(bucket.rate.interval), str(bucket.rate.burst), repr(float(cost)))
        budgets, leases = self.budgets, self.leases
        for window, amount in holds:
            assert budgets is not None
            ops.append("h")
            keys += budgets.keys(window)
            pico = redis_budgets.to_pico(amount)
            args.append(str(pico))
            for limit in (window.daily, window.monthly):
                args += ("", "") if limit is None else (str(redis_budgets.to_pico(limit)), str(redis_budgets.to_pico(limit) - pico))
        for name, cap in caps:
            assert leases is not None
            ops.append("l")
            keys.append(leases.key(name))
            args += (holder, str(int(cap)), str(ttl_ms))
        args[0] = "".join(ops)
        try:
            reply = await self._admit(keys=keys, args=args)
        except STORE_ERRORS as exc:
            raise StorageError(f"Redis admission failed: {type(exc).__name__}") from exc
        return _parse(reply, buckets, costs, len(holds))

    async def take(self, buckets: Sequence[Bucket], costs: Sequence[float], holds: Sequence[tuple[Window, Decimal]] = (),
                   caps: Sequence[tuple[str, int]] = (), holder: str = "", ttl_ms: int = 0) -> Admitted:
        """:meth:`admit`, shielded: a request cancelled while the call is on its way gives back
        what it took once it lands.

        :raises StorageError: when Redis cannot be reached.
        """
        pending = asyncio.ensure_future(self.admit(buckets, costs, holds, caps, holder, ttl_ms))
        try:
            return await asyncio.shield(pending)
        except asyncio.CancelledError:
            def landed(done: asyncio.Future[Admitted]) -> None:
                if not done.cancelled() and done.exception() is None and done.result().ok:
                    self.give_back(buckets, costs, holds, done.result(), caps, holder)

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

    # -- the end: one call for everything given back in one turn of the loop ----------------

    def adjust(self, buckets: Sequence[Bucket], deltas: Sequence[float]) -> None:
        keys = [self.key_prefix + b.key for b in buckets]
        args: list[str] = []
        for bucket, delta in zip(buckets, deltas, strict=True):
            args += (repr(bucket.rate.interval), repr(float(delta)))
        self.later("a" * len(keys), keys, args, None)

    def settle(self, window: Window, held: Held, amount: Decimal, cost: Decimal, done: Done | None) -> None:
        """Replace a hold by ``cost``; ``done`` hears ``(day, month)`` spent, or ``None``."""
        day_epoch, month_epoch = held.token
        cost_pico = redis_budgets.to_pico(cost)
        args = [str(cost_pico - redis_budgets.to_pico(amount)), str(cost_pico), day_epoch, month_epoch]
        assert self.budgets is not None
        self.later("s", self.budgets.keys(window), args, done)

    def release(self, held: Sequence[tuple[str, str]]) -> None:
        if held:
            assert self.leases is not None
            self.later("r" * len(held), [self.leases.key(name) for name, _ in held], [h for _, h in held], None)

    def later(self, ops: str, keys: list[str], args: list[str], done: Done | None) -> None:
        """Queue operations of :data:`_FINISH` for the call at the end of this turn of the loop."""
        self._queue.append((ops, keys, args, done))
        if len(self._queue) == 1:
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        queue, self._queue = self._queue, []
        if queue:
            task = asyncio.get_running_loop().create_task(self._send(queue))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _send(self, queue: list[tuple[str, list[str], list[str], Done | None]]) -> None:
        ops = "".join(q[0] for q in queue)
        keys = [k for q in queue for k in q[1]]
        args = [ops, *(a for q in queue for a in q[2])]
        try:
            reply = await self._finish(keys=keys, args=args)
        except STORE_ERRORS as exc:
            logger.debug("Redis: %d give-backs not sent (holds stay counted, leases expire): %s",
                         len(queue), type(exc).__name__)
            reply = None
        at = 0
        for op, _, _, done in queue:
            if done is not None:
                done(None if reply is None else reply[at])
            at += len(op)

    async def settled(self) -> None:
        """Wait for the give-backs queued so far."""
        await asyncio.sleep(0)
        while self._pending or self._queue:
            self._flush()
            await asyncio.gather(*list(self._pending), return_exceptions=True)


def _parse(reply: Any, buckets: Sequence[Bucket], costs: Sequence[float], holds: int) -> Admitted:
    ok = int(reply[0]) == 1
    out = reply[2]
    held: list[Held] = []
    unseeded: list[int] = []
    for index, raw in enumerate(out[len(buckets):len(buckets) + holds]):
        status = int(raw[0])
        if status == -1:
            unseeded.append(index)
            held.append(Held(False, Decimal(0), Decimal(0)))
        elif status == 0:
            held.append(Held(False, redis_budgets.from_pico(raw[1]), redis_budgets.from_pico(raw[2])))
        elif len(raw) == 1:  # would fit, but something else refused: nothing was held
            held.append(Held(True, Decimal(0), Decimal(0)))
        else:
            token = (redis_budgets._text(raw[3]), redis_budgets._text(raw[4]))
            held.append(Held(True, redis_budgets.from_pico(raw[1]), redis_budgets.from_pico(raw[2]), token))
    full = any(int(raw) == 0 for raw in out[len(buckets) + holds:])
    decision = None
    if buckets:
        now = float(reply[1])
        wait, states = 0.0, []
        for bucket, cost, raw in zip(buckets, costs, out, strict=False):
            _, bucket_wait, state = gcra(float(raw) if raw else None, now, bucket.rate, cost)
            wait = max(wait, bucket_wait)
            states.append(state)
        # Refused with nothing else to blame: a bucket, by less than this side's rounding sees.
        allowed = ok or (wait <= 0.0 and (full or bool(unseeded) or not all(h.allowed for h in held)))
        decision = Decision(allowed, 0.0 if allowed else max(wait, 0.001), tuple(states))
    return Admitted(ok, decision, held, unseeded, full)
