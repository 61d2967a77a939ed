"""One HTTP/1.1 connection of the relay's own client (:mod:`asgi_ai_relay.h1` keeps the pool).

A :class:`Connection` is an asyncio protocol carrying one exchange at a time: it writes the
request, parses the answer with httptools as bytes arrive, passes the body through the answer's
:class:`~asgi_ai_relay.reply.BodyReader` (decoding and bounds) and wakes the one reader waiting
on it. Failures are kept on the connection and raised to that reader: the private exceptions
below, which the pool turns into the relay's own errors, or an ``UpstreamError`` as is.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any, Protocol

import httptools

from .errors import UpstreamError
from .reply import BodyReader, Bounds
from .timers import timers_of

__all__ = ["HIGH_WATER", "MAX_HEADER_BYTES", "Broken", "Closed", "Connection", "Headers", "Idle", "Late"]

#: A stream's unread chunks past this many bytes pause reading from the socket.
HIGH_WATER = 256 * 1024
#: An answer's header block past this many bytes is refused.
MAX_HEADER_BYTES = 64 * 1024

# The connection's own lookups in its answer's headers, whose names it lower-cased itself.
_get = dict.get
_has = dict.__contains__
_set = dict.__setitem__


class Headers(dict[str, str]):
    """An answer's headers: names lower-cased, lookups in any case; repeats joined by ", "."""

    __slots__ = ()

    def __getitem__(self, key: str) -> str:
        return dict.__getitem__(self, key.lower())

    def get(self, key: str, default: Any = None) -> Any:
        return dict.get(self, key.lower(), default)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and dict.__contains__(self, key.lower())


class Closed(Exception):
    """The connection closed before the answer was complete (``early``: before any byte of it)."""

    def __init__(self, early: bool) -> None:
        super().__init__()
        self.early = early


class Broken(Exception):
    """The answer was not valid HTTP/1.1 (or not one this client reads)."""


class _Trailing(Exception):
    """Bytes after the complete answer: the answer stands, the connection is not reused."""


class Idle(Exception):
    """No byte arrived for the read timeout."""


class Late(Exception):
    """The answer was not complete by its deadline (``timeouts.total``)."""


class Owner(Protocol):
    """What a connection needs of its pool."""

    keepalive: float
    bounds: Bounds

    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...

    def _lost(self, conn: Connection) -> None: ...


class Connection(asyncio.Protocol):
    """One TCP or TLS connection carrying one exchange at a time."""

    def __init__(self, client: Owner, key: tuple[Any, ...]) -> None:
        self.client = client
        self.key = key
        self.loop = client.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.counted = True  # holds one of the client's max_connections until lost
        self.closed = False
        self.reused = False
        self.idle_since = 0.0
        self.expires_after = client.keepalive
        self.active = False
        self.timers = timers_of(client.loop)
        self.timer: list[Any] | None = None  # an entry of ``timers``
        self.provider = ""
        self.deadline = 0.0  # on the loop's clock
        self.ends_by = 0.0  # the same moment on time.monotonic()'s clock, for the body reader
        self.status = 0
        self.headers = Headers()
        self.header_bytes = 0
        self.body: deque[bytes] = deque()
        self.buffered = 0
        self.got_bytes = False
        self.headers_done = False
        self.complete = False
        self.keep_alive = False
        self.until_close = False
        self.error: Exception | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.reader: BodyReader | None = None
        self.paused = False
        self.informational = False
        self.stream = False

    # -- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if not self.active:  # nothing asked for: an idle connection must stay silent
            self.abort()
            return
        if self.complete:  # bytes after the whole answer: keep the answer, not the connection
            self.keep_alive = False
            return
        self.got_bytes = True
        self.last_data = self.loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            # httptools wraps what a callback raised; an error of ours keeps its own reason.
            cause = exc.__context__
            if isinstance(cause, _Trailing):
                self.keep_alive = False
            else:
                self._fail(cause if isinstance(cause, (Broken, UpstreamError)) else Broken(f"unreadable answer ({exc})"))
        waiter = self.waiter  # _wake(), inline on the path of every read
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.active and not self.complete and self.error is None:
            if self.headers_done and self.until_close:
                self._finish_body()
                self.keep_alive = False
            else:
                self._fail(Closed(early=not self.got_bytes))
        self._wake()
        self.client._lost(self)

    # -- httptools callbacks -------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.complete:  # a second answer to one request (in the same read): stop there
            raise _Trailing

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_bytes += len(name) + len(value) + 4
        if self.header_bytes > MAX_HEADER_BYTES:
            raise Broken(f"header block larger than {MAX_HEADER_BYTES} bytes")
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        headers = self.headers
        previous = _get(headers, key)
        _set(headers, key, text if previous is None else f"{previous}, {text}")

    def on_headers_complete(self) -> None:
        headers = self.headers
        status = self.parser.get_status_code()
        if 100 <= status < 200:  # informational (103 Early Hints): the answer is still to come
            self.informational = True
            self.headers = Headers()
            return
        self.status = status
        self.headers_done = True
        self.until_close = not _has(headers, "content-length") and not _has(headers, "transfer-encoding") \
            and status >= 200 and status not in (204, 304)
        if 200 <= status < 300 and not self.stream and not _has(headers, "content-encoding"):
            self.reader = None  # a whole answer as sent: on_body keeps its bounds itself
        else:
            self.reader = BodyReader(self.client.bounds, self.provider, status, headers, stream=self.stream, deadline=self.ends_by)
        alive = _get(headers, "keep-alive")
        if alive:
            for part in alive.split(","):
                name, _, number = part.strip().partition("=")
                if name.strip().lower() == "timeout" and number.strip().isdigit():
                    # Leave a second's margin: a server closes on its own clock.
                    self.expires_after = min(self.client.keepalive, float(number) - 1.0)

    def on_body(self, body: bytes) -> None:
        reader = self.reader
        if reader is None:
            # A whole 2xx answer in no content-coding, the common case: what its BodyReader
            # would do, in its order (the deadline, then the size), with no reader to walk.
            if time.monotonic() > self.ends_by:
                raise self.client.bounds.late(self.provider)
            size = self.buffered + len(body)
            if size > self.client.bounds.max_response:
                raise self.client.bounds.too_large(self.provider)
            if body:
                self.body.append(body)
                self.buffered = size
            return
        if self.complete:
            return
        body = reader.feed(body)
        if reader.full:  # an error body cut at http.max_error_bytes: the rest stays unread
            self.keep_alive = False
            self.complete = True
        if not body:
            return
        self.body.append(body)
        self.buffered += len(body)
        # Only a stream's reader takes chunks off as they come: a whole answer is read to its end.
        if self.stream and self.buffered > HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def on_message_complete(self) -> None:
        if self.informational:
            self.informational = False
            return
        if self.complete:
            return
        self.keep_alive = self.parser.should_keep_alive()
        if self.reader is None:  # a whole answer as sent: nothing held back to add
            self.complete = True
        else:
            self._finish_body()

    def _finish_body(self) -> None:
        self.complete = True
        if self.reader is not None:
            try:
                tail = self.reader.end()
            except UpstreamError as exc:
                self.error = exc
                return
            if tail:
                self.body.append(tail)
                self.buffered += len(tail)

    # -- the exchange --------------------------------------------------------------------

    def send(self, data: bytes, stream: bool, provider: str, deadline: float) -> None:
        """Write one request; ``deadline`` (``time.monotonic()``) is when its answer must be complete.

        A connection is sent on new or back from the pool, which takes back only one whose
        answer was read to its end without an error: its body was taken, no one waits on it and
        its reading is not paused. What an exchange leaves otherwise is set again here; its
        status, reader and framing are set again with the next answer's headers.
        """
        self.headers = Headers()
        self.header_bytes = 0
        self.got_bytes = False
        self.headers_done = False
        self.complete = False
        self.keep_alive = False
        if self.timer is not None:  # one left from the exchange before (it ended without a last wait)
            self._stop_timer()
        self.stream = stream
        self.provider = provider
        self.active = True
        self.last_data = now = self.loop.time()
        self.ends_by = deadline
        self.deadline = now + (deadline - time.monotonic())
        assert self.transport is not None
        self.transport.write(data)

    def _fail(self, error: Exception) -> None:
        if self.error is None:
            self.error = error

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def progress(self, timeout: float, *, chunks: bool = False) -> None:
        """Wait for more of the answer (``chunks``: until some body is buffered); raise what went wrong."""
        if self.error is None and not self.complete and not (chunks and self.body):
            self.waiter = waiter = self.loop.create_future()
            if self.timer is None:
                # One timer per exchange, not one per wait: it re-arms itself from the last byte's
                # time while bytes keep coming, so a stream's chunks set and cancel no timers.
                self.timer = self.timers.at(min(self.last_data + timeout, self.deadline), self._check_idle, timeout)
            try:
                await waiter
            finally:
                self.waiter = None
                if (self.complete or self.error is not None) and self.timer is not None:
                    self.timers.cancel(self.timer)
                    self.timer = None
        if self.error is not None:
            raise self.error

    def _check_idle(self, timeout: float) -> None:
        self.timer = None
        waiter = self.waiter
        if waiter is None or waiter.done():
            return  # no one is waiting: the next wait arms the timer again
        now = self.loop.time()
        if now >= self.deadline:
            waiter.set_exception(Late())
            return
        due = min(self.last_data + timeout, self.deadline)
        if now < due:
            self.timer = self.timers.at(due, self._check_idle, timeout)
        else:
            waiter.set_exception(Idle())

    def _stop_timer(self) -> None:
        if self.timer is not None:
            self.timers.cancel(self.timer)
            self.timer = None

    def take(self) -> bytes:
        """Everything buffered so far, as one piece; reading resumes if it was paused."""
        body = self.body
        chunk = body.popleft() if len(body) == 1 else b"".join(body)
        body.clear()
        self.buffered = 0
        if self.paused and self.transport is not None and not self.closed:
            self.paused = False
            self.transport.resume_reading()
        return chunk

    def abort(self) -> None:
        self.active = False
        self._stop_timer()
        if self.transport is not None and not self.closed:
            self.transport.abort()
