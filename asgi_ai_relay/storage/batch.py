"""Rows written in batches by one thread, off the request path (SQLite and PostgreSQL ledgers).

``put`` only appends to a list, so a request never waits on a database nor makes a system
call: the first row of a batch arms a timer on the event loop (``linger`` seconds), and when it
fires the whole batch goes to the writer thread, which stores it with one ``write`` call. Waking
a thread per row cost more than the rest of the ledger together. ``flush`` and ``close`` hand
over what is pending and wait until it is written, so a graceful stop loses nothing; a crash
loses at most the last ``linger`` seconds.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["BatchWriter"]

T = TypeVar("T")


class BatchWriter(Generic[T]):
    def __init__(
        self, write: Callable[[list[T]], None], *, name: str, batch: int = 500, linger: float = 0.05
    ) -> None:
        self._write = write
        self.batch = batch
        self.linger = linger
        self._pending: list[T] = []
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[list[T] | threading.Event | None] = queue.SimpleQueue()
        self.closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def put(self, item: T) -> None:
        with self._lock:
            self._pending.append(item)
            first = len(self._pending) == 1
            full = len(self._pending) >= self.batch
        if full:
            self._hand_over()
        elif first:
            try:
                asyncio.get_running_loop().call_later(self.linger, self._hand_over)
            except RuntimeError:  # put outside an event loop: no timer to arm
                self._hand_over()

    def _hand_over(self) -> None:
        with self._lock:
            items, self._pending = self._pending, []
        if items:
            self._queue.put(items)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if isinstance(item, threading.Event):
                item.set()
            else:
                self._write(item)

    def flush(self, timeout: float = 30.0) -> None:
        """Hand over what is pending and wait until everything put so far is written."""
        if self.closed:
            return
        self._hand_over()
        done = threading.Event()
        self._queue.put(done)
        done.wait(timeout=timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Write what is pending, then stop the thread; safe to call twice."""
        if self.closed:
            return
        self._hand_over()
        self._queue.put(None)
        self._thread.join(timeout=timeout)
        self.closed = True
