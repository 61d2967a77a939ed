"""The end of a request on Redis's joint script: every give-back of one turn of the loop in one call.

What requests give back (a bucket's token estimate reconciled, a hold settled to the real cost,
a lease released, a reservation taken and not used) is queued by :class:`GiveBacks`, and
everything queued within one turn of the event loop goes to Redis in one script call
(:data:`_FINISH`): a request's whole end is one round trip, shared with the ends of the
requests finishing in the same turn. :class:`~.redis_admission.RedisAdmission` is one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from . import redis_budgets
from .budget_state import Held, Window
from .redis_client import STORE_ERRORS

if TYPE_CHECKING:
    from ..limits import Bucket
    from .redis_leases import RedisLeases

__all__ = ["Done", "GiveBacks"]

logger = logging.getLogger("asgi_ai_relay")

# ARGV[1]: one letter per operation; then each one's arguments in order, each one's keys in KEYS:
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


class GiveBacks:
    """The queue of give-backs of one client, sent once per turn of the loop."""

    key_prefix: str
    leases: RedisLeases | None
    budgets: redis_budgets.RedisBudgets | None

    def __init__(self, client: Any) -> None:
        self._finish = client.register_script(_FINISH)
        self._queue: list[tuple[str, list[str], list[str], Done | None]] = []
        self._pending: set[asyncio.Task[None]] = set()

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
