"""Concurrency slots for upstream requests, and a bounded, weighted-fair priority queue.

A request needs one slot of the global cap (``max_in_flight``) and one of its provider's cap
(``per_provider``); ``0`` means no cap. While slots are free and nobody waits, :meth:`Gate.enter`
takes one without awaiting. Otherwise the request waits in the FIFO of its level.

Scheduling is deficit round robin over the levels in priority order, with weights
``critical=8, high=4, normal=2, low=1`` (``W = 15``): each round a level may dispatch up to
its weight, critical first. **Guarantee**: a request at the head of level ``L``, that a free
slot could serve, is dispatched after at most ``W - w(L)`` dispatches of other levels (14 for
``low``, 7 for ``critical``); a continuously waiting level gets ``w(L)`` of every ``W``
dispatches. So higher levels go first and no level starves.

The queue is bounded (``max_queue``): past it :meth:`enter` raises :class:`QueueFull` at once.
A waiter that is cancelled (timeout, client gone) leaves its FIFO at once; if it had just been
granted a slot, the slot is passed on.
"""

from __future__ import annotations

import asyncio
from collections import deque

__all__ = ["LEVELS", "WEIGHTS", "Gate", "QueueFull"]

LEVELS = ("critical", "high", "normal", "low")
WEIGHTS = (8, 4, 2, 1)
LEVEL_INDEX = {name: i for i, name in enumerate(LEVELS)}


class QueueFull(Exception):
    """The queue holds ``max_queue`` waiters already."""


class _Waiter:
    __slots__ = ("future", "provider")

    def __init__(self, future: asyncio.Future[None], provider: str) -> None:
        self.future = future
        self.provider = provider


class Gate:
    """Slots and the priority queue of one process.

    :param max_in_flight: upstream requests at once (0: no cap).
    :param per_provider: upstream requests at once to any one provider (0: no cap).
    :param max_queue: waiters at most; more raise :class:`QueueFull`.
    """

    def __init__(self, max_in_flight: int = 0, per_provider: int = 0, max_queue: int = 1000) -> None:
        self.max_in_flight = max_in_flight
        self.per_provider = per_provider
        self.max_queue = max_queue
        self.in_flight = 0
        self.by_provider: dict[str, int] = {}
        self.queues: tuple[deque[_Waiter], ...] = tuple(deque() for _ in LEVELS)
        self.waiting = 0
        self._level = 0
        self._credit = WEIGHTS[0]

    def _free(self, provider: str) -> bool:
        if self.max_in_flight and self.in_flight >= self.max_in_flight:
            return False
        return not self.per_provider or self.by_provider.get(provider, 0) < self.per_provider

    def _take(self, provider: str) -> None:
        self.in_flight += 1
        self.by_provider[provider] = self.by_provider.get(provider, 0) + 1

    def try_enter(self, provider: str) -> bool:
        """Take a slot without waiting, if one is free and nobody is ahead."""
        if self.waiting or not self._free(provider):
            return False
        self._take(provider)
        return True

    async def enter(self, provider: str, level: int) -> None:
        """Wait for a slot at ``level`` (an index into :data:`LEVELS`); cancel to give up.

        :raises QueueFull: when ``max_queue`` requests wait already.
        """
        if self.try_enter(provider):
            return
        if self.waiting >= self.max_queue:
            raise QueueFull
        waiter = _Waiter(asyncio.get_running_loop().create_future(), provider)
        self.queues[level].append(waiter)
        self.waiting += 1
        self._dispatch()  # those ahead may wait for a provider this one does not need
        try:
            await waiter.future
        except asyncio.CancelledError:
            if waiter.future.done() and not waiter.future.cancelled():
                self.leave(provider)  # granted as we were cancelled: pass the slot on
            else:
                self.queues[level].remove(waiter)
                self.waiting -= 1
            raise

    def leave(self, provider: str) -> None:
        """Give a slot back and hand free slots to the waiters the schedule picks."""
        self.in_flight -= 1
        count = self.by_provider[provider] - 1
        if count:
            self.by_provider[provider] = count
        else:
            del self.by_provider[provider]
        if self.waiting:
            self._dispatch()

    def _dispatch(self) -> None:
        while self.waiting and not (self.max_in_flight and self.in_flight >= self.max_in_flight):
            waiter = self._pick()
            if waiter is None:
                return
            self.waiting -= 1
            self._take(waiter.provider)
            waiter.future.set_result(None)

    def _pick(self) -> _Waiter | None:
        """The next waiter by deficit round robin; ``None`` when no waiter can have a slot."""
        for _ in range(len(LEVELS) + 1):
            if self._credit > 0:
                queue = self.queues[self._level]
                for i, waiter in enumerate(queue):
                    # A cancelled waiter is still queued until its task runs; it removes itself.
                    if not waiter.future.done() and self._free(waiter.provider):
                        del queue[i]
                        self._credit -= 1
                        return waiter
            self._level = (self._level + 1) % len(LEVELS)
            self._credit = WEIGHTS[self._level]
        return None
