"""Rows written in batches by one thread, off the request path (SQLite and PostgreSQL ledgers).

``put`` only appends to a list, so a request never waits on a database nor makes a system
call: the first row of a batch arms a timer on the event loop (``linger`` seconds), and when it
fires the whole batch goes to the writer thread, which stores it with one ``write`` call. Waking
a thread per row cost more than the rest of the ledger together. ``flush`` and ``close`` hand
over what is pending and wait until it is written, so a graceful stop loses nothing; a crash
loses at most the last ``linger`` seconds.

The thread survives any row: a batch whose ``write`` raises (anything) is tried again a bounded
number of times when the error may pass (``retry_on``), then row by row, and only the rows that still fail are dropped, each logged
and counted in :attr:`BatchWriter.dropped`. A row put after :meth:`~BatchWriter.close` is
written at once on the caller's thread (there is no thread left to queue it to).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["BatchWriter"]

logger = logging.getLogger("asgi_ai_relay")

T = TypeVar("T")

#: Pauses between the tries of a batch that failed with a ``retry_on`` error (6.35 s in all).
_BACKOFF = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2)


class BatchWriter(Generic[T]):
    """:param retry_on: errors worth trying the same batch again for (a lock another process
        holds); any other error goes straight to row by row.
    :param idle: called in the writer thread when it starts and after every ``interval``
        seconds without a batch (reconnects, spool replays); exceptions are logged.
    """

    def __init__(
        self,
        write: Callable[[list[T]], None],
        *,
        name: str,
        batch: int = 500,
        linger: float = 0.05,
        retry_on: tuple[type[BaseException], ...] = (),
        idle: Callable[[], None] | None = None,
        interval: float = 1.0,
    ) -> None:
        self._write = write
        self.name = name
        self.batch = batch
        self.linger = linger
        self.retry_on = retry_on
        self._idle = idle
        self._interval = interval
        self._pending: list[T] = []
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[list[T] | threading.Event | None] = queue.SimpleQueue()
        self.closed = False
        #: Rows dropped because writing them failed however often it was tried.
        self.dropped = 0
        #: Rows put and not yet written (nor dropped).
        self.queued = 0
        #: The last write failure, as ``"Type: message"`` (``None`` before any).
        self.last_error: str | None = None
        #: Whether the last write failed (cleared by the next one that succeeds).
        self.failing = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def put(self, item: T) -> None:
        with self._lock:
            self.queued += 1
            closed = self.closed
            if not closed:
                pending = self._pending
                pending.append(item)
                size = len(pending)
        if closed:
            self._store([item])
            return
        if size >= self.batch:
            self._hand_over()
        elif size == 1:
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
        self._call_idle()
        while True:
            try:
                item = self._queue.get(timeout=self._interval) if self._idle is not None else self._queue.get()
            except queue.Empty:
                self._call_idle()
                continue
            if item is None:
                return
            if isinstance(item, threading.Event):
                item.set()
            else:
                self._store(item)

    def _call_idle(self) -> None:
        if self._idle is not None:
            try:
                self._idle()
            except BaseException as exc:  # the thread outlives its helpers
                logger.exception("ledger: %s: background step failed: %s", self.name, exc)

    def _store(self, items: list[T]) -> None:
        try:
            for pause in (*_BACKOFF, None):
                try:
                    self._write(items)
                    self.failing = False
                    return
                except BaseException as exc:  # any row, any failure: the thread must live on
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    if pause is None or not isinstance(exc, self.retry_on):
                        break
                    time.sleep(pause)
            for item in items if len(items) > 1 else ():
                try:
                    self._write([item])
                except BaseException as exc:
                    self._drop(exc)
            if len(items) == 1:
                self._drop(None)
        finally:
            with self._lock:
                self.queued -= len(items)

    def _drop(self, exc: BaseException | None) -> None:
        self.dropped += 1
        self.failing = True
        logger.error("ledger: %s: dropped a row that could not be written: %s", self.name, exc or self.last_error)

    @property
    def alive(self) -> bool:
        """Whether the writer thread runs (or was closed on purpose)."""
        return self.closed or self._thread.is_alive()

    def flush(self, timeout: float = 30.0) -> bool:
        """Hand over what is pending and wait (at most ``timeout`` seconds) until everything put
        so far is written; ``False`` when the wait timed out."""
        if self.closed:
            return True
        self._hand_over()
        if not self._thread.is_alive():
            return False
        done = threading.Event()
        self._queue.put(done)
        return done.wait(timeout=timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Write what is pending, then stop the thread; safe to call twice. Rows put later are
        written on the caller's thread."""
        with self._lock:
            if self.closed:
                return
            self.closed = True  # from here on, put writes on its caller's thread
        self._hand_over()
        self._queue.put(None)
        self._thread.join(timeout=timeout)
