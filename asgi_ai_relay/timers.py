"""Deadlines of one event loop in one heap of plain entries, behind one loop timer.

Every request arms deadlines (the attempt's time limit, the upstream connection's idle and total
bounds) and nearly every one is disarmed long before it is due. asyncio keeps each as a
``TimerHandle`` in its heap, ordered by a ``__lt__`` written in Python: a deadline armed and
disarmed costs tens of thousands of instructions, an ``asyncio.timeout`` around an await about
35k. Here a deadline is a list ``[when, seq, callback, arg]`` in this module's own heap (compared
in C, by time and then by order of arming), and the loop holds one timer, at the earliest
deadline. Disarming clears the entry's callback; cleared entries leave the heap when they reach
its top (an entry disarmed there leaves at once, as most do: deadlines mostly end in the order
they were armed) or when they outnumber the live ones.

:func:`within` is ``asyncio.timeout`` on these deadlines, with the same outcome: the task is
cancelled when the time is up and the cancellation comes out as :class:`TimeoutError`, unless
someone else cancelled the task as well.
"""

from __future__ import annotations

import asyncio
import weakref
from asyncio import current_task, get_running_loop
from heapq import heapify, heappop, heappush
from itertools import count
from typing import Any, Callable

__all__ = ["Timers", "timers_of", "within", "within_at"]

#: Cleared entries kept before the heap is rebuilt without them (and only when they are most of it).
_COMPACT_AT = 64


class Timers:
    """The deadlines of one loop. ``at`` arms one, ``cancel`` disarms it; callbacks run on the loop."""

    __slots__ = ("loop", "heap", "handle", "armed", "cleared", "_seq", "__weakref__")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.heap: list[list[Any]] = []
        self.handle: asyncio.TimerHandle | None = None
        self.armed = 0.0  # when ``handle`` fires
        self.cleared = 0
        self._seq = count()

    def at(self, when: float, callback: Callable[[Any], object], arg: Any = None) -> list[Any]:
        """Call ``callback(arg)`` at ``when`` (``loop.time()``); the entry returned disarms it."""
        entry = [when, next(self._seq), callback, arg]
        heappush(self.heap, entry)
        if self.handle is None or when < self.armed:
            self._arm(when)
        return entry

    def cancel(self, entry: list[Any]) -> None:
        """Disarm ``entry`` (nothing when it already ran or was disarmed)."""
        if entry[2] is not None:
            entry[2] = entry[3] = None
            heap = self.heap
            if heap[0] is entry:  # the earliest (deadlines mostly end in the order they were armed)
                heappop(heap)
                while heap and heap[0][2] is None:
                    heappop(heap)
                    self.cleared -= 1
                if not heap and self.handle is not None:
                    self.handle.cancel()
                    self.handle = None
                return
            cleared = self.cleared = self.cleared + 1
            if cleared > _COMPACT_AT and cleared * 2 > len(heap):
                self._compact()

    def _arm(self, when: float) -> None:
        if self.handle is not None:
            self.handle.cancel()
        self.armed = when
        self.handle = self.loop.call_at(when, self._fire)

    def _compact(self) -> None:
        heap = self.heap = [entry for entry in self.heap if entry[2] is not None]
        heapify(heap)
        self.cleared = 0
        if not heap and self.handle is not None:
            self.handle.cancel()
            self.handle = None

    def _fire(self) -> None:
        self.handle = None
        heap = self.heap
        now = self.loop.time()
        due = []
        while heap and heap[0][0] <= now:
            entry = heappop(heap)
            if entry[2] is None:
                self.cleared -= 1
            else:
                due.append((entry[2], entry[3]))
                entry[2] = entry[3] = None  # ran: a later cancel is a no-op
        while heap and heap[0][2] is None:
            heappop(heap)
            self.cleared -= 1
        if heap:
            self._arm(heap[0][0])
        for callback, arg in due:
            try:
                callback(arg)
            except Exception as exc:  # one failing callback must not stop the others
                self.loop.call_exception_handler({"message": "asgi_ai_relay timer callback failed", "exception": exc})


_by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Timers] = weakref.WeakKeyDictionary()
_last: Timers | None = None  # the timers asked for last: nearly always the ones asked for next


def timers_of(loop: asyncio.AbstractEventLoop) -> Timers:
    """The deadlines of ``loop`` (made on first use, gone with the loop)."""
    global _last
    last = _last
    if last is not None and last.loop is loop:
        return last
    timers = _by_loop.get(loop)
    if timers is None:
        timers = _by_loop[loop] = Timers(loop)
    _last = timers
    return timers


class _Within:
    """The context of :func:`within`; its state is that of ``asyncio.timeout``'s."""

    # No __slots__: a scope's entry and expiry start as the class's values, set by nothing.
    entry: list[Any] | None = None
    expired = False
    task: asyncio.Task[Any]
    cancelling: int

    def __init__(self, loop: asyncio.AbstractEventLoop, when: float | None) -> None:
        self.when = when
        last = _last  # timers_of(loop), its common case inline
        self.timers = last if last is not None and last.loop is loop else timers_of(loop)

    def __enter__(self) -> _Within:
        timers = self.timers
        task = current_task(timers.loop)
        if task is None:
            raise RuntimeError("within() must be used inside a task")
        self.task = task
        self.cancelling = task.cancelling()
        if self.when is not None:
            self.entry = timers.at(self.when, _expire, self)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if self.entry is not None:
            self.timers.cancel(self.entry)
            self.entry = None
        if self.expired:
            self.expired = False
            if self.task.uncancel() <= self.cancelling and exc_type is asyncio.CancelledError:
                raise TimeoutError from exc


def _expire(scope: _Within) -> None:
    scope.entry = None
    scope.expired = True
    scope.task.cancel()


def within(delay: float | None) -> _Within:
    """``with within(seconds):`` — ``asyncio.timeout(seconds)``, armed on the loop's :class:`Timers`."""
    loop = get_running_loop()
    return _Within(loop, None if delay is None else loop.time() + delay)


def within_at(when: float | None) -> _Within:
    """``with within_at(loop_time):`` — ``asyncio.timeout_at(loop_time)`` on the loop's :class:`Timers`."""
    return _Within(get_running_loop(), when)
