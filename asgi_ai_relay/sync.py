"""Drive the async core from synchronous hosts (Flask, Django under WSGI).

One event loop per process runs in a background thread for the life of the process, so the
relay's pooled upstream connections survive from one request to the next. Request threads hand
it coroutines and wait for their results; a streamed answer is pulled one chunk at a time, so
a slow stream holds only its own request thread, never the loop.

    relay = SyncRelay(Relay(config))
    request.disconnected = client_socket(environ)  # the client's departure, where the server tells
    response = relay.handle(request)
    for chunk in relay.chunks(response): ...     # closes the stream when done or dropped
"""

from __future__ import annotations

import asyncio
import atexit
import contextvars
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .wakeup import Inbox
from .wsgi import ClientSocket

if TYPE_CHECKING:
    from .relay import Relay
    from .types import RelayRequest, RelayResponse

__all__ = ["LoopThread", "SyncRelay", "loop_thread"]

T = TypeVar("T")


async def _next(stream: AsyncIterator[bytes]) -> bytes | None:
    try:
        return await stream.__anext__()
    except StopAsyncIteration:
        return None


async def _await(awaitable: Awaitable[T]) -> T:
    return await awaitable


class _Handoff(Generic[T]):
    """One coroutine handed from a request thread to the loop, run there as a task whose last
    step releases ``finished``, the lock the request thread waits on: one wake-up, in the same
    loop iteration as the answer (no future chained to another, no done-callback turn)."""

    __slots__ = ("context", "coro", "error", "finished", "task", "value")

    def __init__(self, coro: Coroutine[Any, Any, T]) -> None:
        self.coro: Coroutine[Any, Any, T] | None = coro
        self.context = contextvars.copy_context()  # the caller's (its tracing span, say), for the task
        self.task: asyncio.Task[None] | None = None
        self.error: BaseException | None = None
        self.finished = threading.Lock()
        self.finished.acquire()

    def start(self) -> None:  # on the loop
        coro, self.coro = self.coro, None
        if coro is not None:  # else cancelled before it started
            self.task = asyncio.get_running_loop().create_task(self._run(coro), context=self.context)

    async def _run(self, coro: Coroutine[Any, Any, T]) -> None:
        try:
            self.value = await coro
        except BaseException as error:  # the caller's to see, in its thread
            self.error = error
            if isinstance(error, asyncio.CancelledError):
                raise
        finally:
            self.finished.release()

    def cancel(self) -> None:  # on the loop, when the caller gave up waiting
        if self.coro is not None:  # never started: nothing will await it
            self.coro.close()
            self.coro = None
        elif self.task is not None:
            self.task.cancel()

    def result(self) -> T:
        """The coroutine's result, or its exception raised; once ``finished`` is released."""
        error = self.error
        if error is not None:
            self.error = None  # no reference cycle through the traceback
            raise error
        return self.value


class LoopThread:
    """An event loop running forever in a daemon thread.

    :param name: the thread's name, as it shows in thread dumps.
    """

    def __init__(self, name: str = "asgi-ai-relay-loop") -> None:
        self.name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._closers: list[Callable[[], Awaitable[Any]]] = []
        self._inbox: Inbox | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The running loop, started on first use (and again in a forked worker)."""
        loop = self._loop
        if loop is not None and self._pid == os.getpid():
            return loop
        with self._lock:
            if self._loop is None or self._pid != os.getpid():
                self._start()
            assert self._loop is not None
            return self._loop

    def _start(self) -> None:
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._inbox = Inbox(loop)  # a forked worker's own, not its parent's

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()

        self._thread = threading.Thread(target=run, name=self.name, daemon=True)
        self._thread.start()
        ready.wait()
        self._loop, self._pid = loop, os.getpid()
        # A forked worker inherits the parent's closers; they belong to objects it also inherited.

    def run(self, coro: Coroutine[Any, Any, T] | Awaitable[T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and wait for its result in the calling thread.

        :raises RuntimeError: when called from the loop's own thread (it would deadlock).
        :raises TimeoutError: when ``timeout`` seconds pass first (the coroutine is cancelled).
        """
        loop = self.loop
        if threading.current_thread() is self._thread:
            raise RuntimeError("LoopThread.run() called from its own loop; await the coroutine instead")
        work: Coroutine[Any, Any, T] = coro if asyncio.iscoroutine(coro) else _await(coro)
        handoff: _Handoff[T] = _Handoff(work)
        assert self._inbox is not None
        self._inbox.put(handoff)
        try:
            if not handoff.finished.acquire(timeout=-1 if timeout is None else timeout):
                raise TimeoutError(f"the loop did not answer within {timeout}s")
        except BaseException:  # a timeout, or the request thread interrupted: stop the work too
            loop.call_soon_threadsafe(handoff.cancel)
            raise
        return handoff.result()

    def iterate(self, stream: AsyncIterator[bytes]) -> Iterator[bytes]:
        """A plain generator over an async stream; closing it (a WSGI server does when the
        client goes away) calls the stream's ``aclose`` on the loop."""
        try:
            while (chunk := self.run(_next(stream))) is not None:
                yield chunk
        finally:
            close = getattr(stream, "aclose", None)
            if close is not None:
                self.run(close())

    def on_exit(self, closer: Callable[[], Awaitable[Any]]) -> None:
        """Await ``closer()`` on the loop when the process exits (e.g. ``relay.shutdown``)."""
        with self._lock:
            self._closers.append(closer)

    def close(self, timeout: float = 10.0) -> None:
        """Run the exit closers, then stop the loop; called at interpreter exit."""
        with self._lock:
            closers, self._closers = self._closers, []
            loop, pid = self._loop, self._pid
        if loop is None or pid != os.getpid() or not loop.is_running():
            return
        for closer in closers:
            try:
                self.run(closer(), timeout)
            except Exception:  # noqa: BLE001 - one failing closer must not keep the others from running
                pass
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout)
        if self._inbox is not None and not (self._thread is not None and self._thread.is_alive()):
            self._inbox.close(loop)
            self._inbox = None
        self._loop = None


_runner: LoopThread | None = None
_runner_lock = threading.Lock()


def loop_thread() -> LoopThread:
    """The process's one :class:`LoopThread`, shared by every synchronous adapter."""
    global _runner
    if _runner is None:
        with _runner_lock:
            if _runner is None:
                _runner = LoopThread()
                atexit.register(_runner.close)
    return _runner


class SyncRelay:
    """A :class:`~asgi_ai_relay.Relay` driven from synchronous code through the process loop.

    :param relay: the relay to drive; it is shut down (client closed, ledger flushed) on the
        loop when the process exits.
    :param runner: the loop to use; the process's one :func:`loop_thread` by default.
    """

    def __init__(self, relay: Relay, runner: LoopThread | None = None) -> None:
        self.relay = relay
        self.runner = runner if runner is not None else loop_thread()
        self.runner.on_exit(relay.shutdown)

    def handle(self, request: RelayRequest) -> RelayResponse:
        """:meth:`Relay.handle`, from a request thread. A :class:`ClientSocket` watching the
        client stops watching when the core has answered: the socket is the server's again."""
        return self.runner.run(self._handle(request))

    async def _handle(self, request: RelayRequest) -> RelayResponse:
        try:
            return await self.relay.handle(request)
        finally:
            if isinstance(request.disconnected, ClientSocket):
                request.disconnected.detach()

    def chunks(self, response: RelayResponse) -> Iterator[bytes]:
        """The body of a streamed answer as a plain generator (see :meth:`LoopThread.iterate`)."""
        assert response.stream is not None
        return self.runner.iterate(response.stream)
