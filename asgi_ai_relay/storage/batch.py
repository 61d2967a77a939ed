"""A writer thread that takes rows off a queue and stores them in batches, off the request path.

``put`` only appends to a queue, so a request never waits on a database. The thread takes
whatever has queued (up to ``batch`` rows) and hands it to ``write`` in one call; ``flush`` and
``close`` wait until everything queued so far has been written, so a graceful stop loses nothing.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["BatchWriter"]

T = TypeVar("T")


class BatchWriter(Generic[T]):
    def __init__(self, write: Callable[[list[T]], None], *, name: str, batch: int = 500) -> None:
        self._write = write
        self.batch = batch
        self._queue: queue.SimpleQueue[T | threading.Event | None] = queue.SimpleQueue()
        self.closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def put(self, item: T) -> None:
        self._queue.put(item)

    def _take(self) -> tuple[list[T], list[threading.Event], bool]:
        item = self._queue.get()
        items: list[T] = []
        waiters: list[threading.Event] = []
        stop = False
        while True:
            if item is None:
                stop = True
            elif isinstance(item, threading.Event):
                waiters.append(item)
            else:
                items.append(item)
            if len(items) >= self.batch:
                break
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
        return items, waiters, stop

    def _run(self) -> None:
        while True:
            items, waiters, stop = self._take()
            if items:
                self._write(items)
            for waiter in waiters:
                waiter.set()
            if stop:
                return

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until everything put so far is written."""
        if self.closed:
            return
        done = threading.Event()
        self._queue.put(done)
        done.wait(timeout=timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued, then stop the thread; safe to call twice."""
        if self.closed:
            return
        self._queue.put(None)
        self._thread.join(timeout=timeout)
        self.closed = True
