"""Waking the relay's loop thread from a request thread without giving up the GIL.

A request thread hands work to the loop thread and then sleeps on a lock until the answer is
there. asyncio's ``call_soon_threadsafe`` wakes the loop by writing to its self-pipe with
``socket.send``, which releases the GIL around the system call: the loop thread, woken by that
very write, takes the GIL on the other core before the request thread gets it back, and the
request thread then waits for the GIL through the whole of the loop's turn (about the time the
core takes to answer), woken for nothing at each of the loop's system calls, only to reach
its lock and release the GIL again. :class:`Wakeup` writes its byte with the GIL held (libc's
``write`` through :class:`ctypes.PyDLL`, which does not release it; the write is non-blocking
and takes microseconds): the woken loop thread waits for the GIL, which the request thread
hands it at once when it goes to sleep on its lock. Where ctypes or libc is not to be had
(Windows), the write is a plain ``os.write``, as asyncio's.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections import deque
from collections.abc import Callable
from typing import Protocol

__all__ = ["Inbox", "Wakeup"]


def _gil_holding_write() -> Callable[[int, bytes, int], int] | None:
    try:
        import ctypes

        write = ctypes.PyDLL(None).write
    except (ImportError, OSError, AttributeError, TypeError):  # no ctypes, or no libc symbols in the process
        return None
    write.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t]
    write.restype = ctypes.c_ssize_t
    return write


_WRITE = _gil_holding_write()


class Wakeup:
    """A socket pair whose reading end is in ``loop``'s selector: :meth:`wake` (from any
    thread) makes the loop call ``callback`` once, soon; wakes while one is pending merge.

    :param loop: the loop to wake (not yet running, or running in another thread).
    :param callback: called on the loop, after the pending wake-ups are read.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)
        self._fd = self._writer.fileno()
        self._callback = callback
        loop.add_reader(self._reader.fileno(), self._readable)

    def wake(self) -> None:
        """Make the loop run the callback; never blocks (a full pair is already waking it)."""
        if _WRITE is not None:
            _WRITE(self._fd, b"\0", 1)
            return
        try:
            os.write(self._fd, b"\0")
        except (BlockingIOError, InterruptedError):
            pass

    def _readable(self) -> None:  # on the loop
        try:
            while self._reader.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        self._callback()

    def close(self, loop: asyncio.AbstractEventLoop) -> None:
        """Leave the loop's selector (on the loop, or after it stopped) and close the pair."""
        loop.remove_reader(self._reader.fileno())
        self._reader.close()
        self._writer.close()


class Startable(Protocol):
    def start(self) -> None: ...


class Inbox:
    """Work handed to ``loop`` from other threads, started there in arrival order. Work put
    while a wake-up is on its way rides on it: requests that come in while the loop is busy
    start in one batch, after one wake-up.

    :param loop: the loop to start the work on (not yet running, or running in another thread).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._queue: deque[Startable] = deque()
        self._waking = False
        self._wakeup = Wakeup(loop, self._drain)

    def put(self, work: Startable) -> None:
        """Queue ``work`` (from any thread); its ``start()`` runs on the loop, soon."""
        self._queue.append(work)
        if not self._waking:
            self._waking = True
            self._wakeup.wake()

    def _drain(self) -> None:  # on the loop
        self._waking = False  # before taking: work put from now on wakes the loop again
        queue = self._queue
        while queue:
            queue.popleft().start()

    def close(self, loop: asyncio.AbstractEventLoop) -> None:
        """Leave ``loop`` (stopped, or from its own thread)."""
        self._wakeup.close(loop)
