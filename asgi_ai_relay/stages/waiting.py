"""The waiting half of traffic control: concurrency slots, the priority queue, and every wait.

A request that needs a concurrency slot (``queue.max_in_flight``, ``queue.per_provider``) takes
one of :class:`~asgi_ai_relay.scheduler.Gate` at once or waits in its priority queue (its level
from the caller's ``priority`` or, where allowed, ``X-Priority``); with ``storage.slots`` on
Redis it also takes a shared lease per cap (:mod:`asgi_ai_relay.slots`). Every wait, for a slot
or for a rate limit's capacity (:mod:`.ratelimit`), is bounded by a deadline and ends at once
when the client leaves (status 499 in the ledger). A full queue or a wait past ``max_wait``
answers 503 with ``Retry-After``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TYPE_CHECKING

from ..errors import ClientClosed, InvalidRequest, ServiceUnavailable
from ..scheduler import LEVEL_INDEX, Gate, QueueFull
from ..slots import shared_slots

if TYPE_CHECKING:
    from ..call import Call
    from ..config import RelayConfig

__all__ = ["QUEUE_RETRY_AFTER", "Waiting"]

#: The ``Retry-After`` of a full queue, a wait past ``max_wait`` or a store down (fail closed).
QUEUE_RETRY_AFTER = 1.0


class Waiting:
    """The slots and the queue of one relay; :class:`~.ratelimit.Traffic` adds the limits."""

    def __init__(self, config: RelayConfig) -> None:
        queue = config.queue
        self.config = queue
        self.gate = Gate(queue.max_in_flight, queue.per_provider, queue.max_queue)
        #: The gate's ``leave``, bound once (a slot's release holds it with the provider).
        self.leave_gate = self.gate.leave
        self.shared = shared_slots(config)
        self.gated = bool(queue.max_in_flight or queue.per_provider)
        #: Requests sleeping until a rate limit's capacity returns (they count as queued).
        self.sleeping = 0

    def level(self, call: Call) -> int:
        """:raises InvalidRequest: for an ``X-Priority`` that is not a level, where it is honoured."""
        asked = call.request.headers.get("x-priority")
        if asked is not None and (self.config.priority_header or call.caller.allow_priority_header):
            level = LEVEL_INDEX.get(asked.strip().lower())
            if level is None:
                raise InvalidRequest("X-Priority must be one of critical, high, normal, low.", param="x-priority")
            return level
        return LEVEL_INDEX.get(call.caller.priority, 2)

    def check_room(self) -> None:
        """:raises ServiceUnavailable: when the queue (slot waiters and limit sleepers) is full."""
        if self.gate.waiting + self.sleeping >= self.config.max_queue:
            raise ServiceUnavailable("The relay's queue is full; retry shortly.", retry_after=QUEUE_RETRY_AFTER,
                                     code="queue_full")

    async def enter(self, call: Call, provider: str, deadline: float) -> None:
        """Take a concurrency slot for ``provider``, waiting in the priority queue when none is free.

        :raises ServiceUnavailable: the queue is full, or the wait ran past ``max_wait``.
        """
        if self.gate.try_enter(provider):
            return
        level = self.level(call)
        self.check_room()
        await self.wait(call, self.gate.enter(provider, level), deadline)

    async def wait(self, call: Call, waiting: Awaitable[None], deadline: float) -> None:
        """Wait for ``waiting`` until ``deadline``, giving up at once if the client leaves.

        :raises ServiceUnavailable: past the deadline.
        :raises RelayError: 499 when the client disconnected.
        """
        task = asyncio.ensure_future(waiting)
        watch = call.request.disconnected
        gone = asyncio.ensure_future(watch()) if watch is not None else None
        waits = {task} if gone is None else {task, gone}
        timeout = max(deadline - asyncio.get_running_loop().time(), 0.0)
        try:
            done, _ = await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pending in waits:
                pending.cancel()
            await asyncio.gather(*waits, return_exceptions=True)
        if gone is not None and gone in done:
            raise ClientClosed("The client closed the connection while queued.")
        if task not in done:
            raise ServiceUnavailable("Timed out waiting in the relay's queue; retry shortly.",
                                     retry_after=QUEUE_RETRY_AFTER, code="queue_timeout")
        try:
            task.result()
        except QueueFull:
            raise ServiceUnavailable("The relay's queue is full; retry shortly.", retry_after=QUEUE_RETRY_AFTER,
                                     code="queue_full") from None
