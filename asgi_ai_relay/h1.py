"""The relay's default upstream client: a lean HTTP/1.1 client on asyncio and httptools.

The upstream call is most of what a relay does per request, and a general-purpose client pays
on every call for what the relay never uses (cookie jars, redirects, tracing hooks, request and
response option objects). On the benchmark machine one keep-alive POST to a local upstream took
about 183 us of CPU through aiohttp and 54 us over a bare asyncio protocol; this client keeps
close to the latter. It does what an LLM provider's API needs:

* HTTP/1.1 over TCP or TLS (certificate and host name verified), one keep-alive pool per origin,
  at most ``http.max_connections`` connections in all, at most ``http.max_keepalive`` idle ones,
  an idle connection dropped after ``http.keepalive_expiry`` or the server's own
  ``Keep-Alive: timeout``, whichever is sooner;
* the request written with one system call; answers with a length, chunked, or read until the
  connection closes; gzip and deflate bodies decoded;
* timeouts: connect, waiting for a free connection (``timeouts.pool``) and read inactivity
  (``timeouts.read`` for a whole answer, ``timeouts.stream_idle`` between two chunks);
* streams handed on chunk by chunk as they arrive, with back-pressure on the socket;
* a request sent on a reused connection that the server had already closed (not one byte of
  answer came back) is sent once more on a new connection, as browsers do. Every other failure
  is an :class:`UpstreamError` for the relay's retry policy to judge.
"""

from __future__ import annotations

import asyncio
import ssl
import zlib
from collections import deque
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import httptools

from .config import HttpSettings, Timeouts
from .errors import UpstreamConnectError, UpstreamError, UpstreamProtocolError, UpstreamTimeout
from .transport import UpstreamReply

__all__ = ["H1Client", "Headers"]

#: A stream's unread chunks past this many bytes pause reading from the socket.
HIGH_WATER = 256 * 1024
#: An answer's header block past this many bytes is refused.
MAX_HEADER_BYTES = 64 * 1024
_SKIPPED = frozenset({"host", "content-length", "transfer-encoding", "connection"})
_DECODED = frozenset({"gzip", "x-gzip", "deflate"})


class Headers(dict[str, str]):
    """An answer's headers: names lower-cased, lookups in any case; repeats joined by ", "."""

    __slots__ = ()

    def __getitem__(self, key: str) -> str:
        return dict.__getitem__(self, key.lower())

    def get(self, key: str, default: Any = None) -> Any:
        return dict.get(self, key.lower(), default)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and dict.__contains__(self, key.lower())


class _Closed(Exception):
    """The connection closed before the answer was complete (``early``: before any byte of it)."""

    def __init__(self, early: bool) -> None:
        super().__init__()
        self.early = early


class _Broken(Exception):
    """The answer was not valid HTTP/1.1 (or not one this client reads)."""


class _Trailing(Exception):
    """Bytes after the complete answer: the answer stands, the connection is not reused."""


class _Idle(Exception):
    """No byte arrived for the read timeout."""


class _Target:
    """What a URL resolves to, computed once per URL: its pool key and the request line."""

    __slots__ = ("head", "host", "key", "port", "tls")

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UpstreamConnectError(f"Not an http(s) URL: {parts.scheme}://{parts.hostname or ''}")
        self.tls = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.tls else 80)
        self.key = (self.tls, self.host, self.port)
        default_port = self.port == (443 if self.tls else 80)
        name = f"[{self.host}]" if ":" in self.host else self.host
        authority = name if default_port else f"{name}:{self.port}"
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.head = f"POST {target} HTTP/1.1\r\nhost: {authority}\r\n".encode("latin-1")


def _header_block(headers: Mapping[str, str], length: int) -> bytes:
    lines = []
    agent = encoding = False
    for name, value in headers.items():
        lowered = name.lower()
        if lowered in _SKIPPED:
            continue
        if "\n" in value or "\r" in value or "\n" in name or "\r" in name or ":" in name:
            raise UpstreamProtocolError(f"Header {name!r} cannot be sent: it contains a line break or a colon.")
        agent = agent or lowered == "user-agent"
        encoding = encoding or lowered == "accept-encoding"
        lines.append(f"{name}: {value}\r\n")
    if not agent:
        lines.append("user-agent: asgi-ai-relay\r\n")
    if not encoding:
        lines.append("accept-encoding: gzip, deflate\r\n")
    lines.append(f"content-length: {length}\r\n\r\n")
    try:
        return "".join(lines).encode("latin-1")
    except UnicodeEncodeError as exc:
        raise UpstreamProtocolError("A header value is not Latin-1 text and cannot be sent.") from exc


class _Connection(asyncio.Protocol):
    """One TCP or TLS connection carrying one exchange at a time."""

    def __init__(self, client: H1Client, key: tuple[bool, str, int]) -> None:
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
        self.timer: asyncio.TimerHandle | None = None
        self._begin()

    def _begin(self) -> None:
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
        self.decoder: Any = None
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
            # httptools wraps what a callback raised; a _Broken of ours keeps its own reason.
            cause = exc.__context__
            if isinstance(cause, _Trailing):
                self.keep_alive = False
            else:
                self._fail(cause if isinstance(cause, _Broken) else _Broken(f"unreadable answer ({exc})"))
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.active and not self.complete and self.error is None:
            if self.headers_done and self.until_close:
                self._finish_body()
                self.keep_alive = False
            else:
                self._fail(_Closed(early=not self.got_bytes))
        self._wake()
        self.client._lost(self)

    # -- httptools callbacks -------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.complete:  # a second answer to one request (in the same read): stop there
            raise _Trailing

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_bytes += len(name) + len(value) + 4
        if self.header_bytes > MAX_HEADER_BYTES:
            raise _Broken(f"header block larger than {MAX_HEADER_BYTES} bytes")
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        previous = self.headers.get(key)
        dict.__setitem__(self.headers, key, text if previous is None else f"{previous}, {text}")

    def on_headers_complete(self) -> None:
        headers = self.headers
        status = self.parser.get_status_code()
        if 100 <= status < 200:  # informational (103 Early Hints): the answer is still to come
            self.informational = True
            self.headers = Headers()
            return
        self.status = status
        self.headers_done = True
        self.until_close = "content-length" not in headers and "transfer-encoding" not in headers \
            and self.status >= 200 and self.status not in (204, 304)
        coding = headers.get("content-encoding", "identity").strip().lower()
        if coding in _DECODED:
            self.decoder = zlib.decompressobj(zlib.MAX_WBITS | 32)  # zlib or gzip framing
        elif coding not in ("identity", ""):
            raise _Broken(f"content-encoding {coding!r}, which was not asked for")
        alive = headers.get("keep-alive")
        if alive:
            for part in alive.split(","):
                name, _, number = part.strip().partition("=")
                if name.strip().lower() == "timeout" and number.strip().isdigit():
                    # Leave a second's margin: a server closes on its own clock.
                    self.expires_after = min(self.client.keepalive, float(number) - 1.0)

    def on_body(self, body: bytes) -> None:
        if self.decoder is not None:
            try:
                body = self.decoder.decompress(body)
            except zlib.error as exc:
                raise _Broken("a compressed body that does not decompress") from exc
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
        self.keep_alive = self.parser.should_keep_alive()
        self._finish_body()

    def _finish_body(self) -> None:
        if self.decoder is not None:
            try:
                tail = self.decoder.flush()
            except zlib.error:
                tail = b""
            if tail:
                self.body.append(tail)
            if not self.decoder.eof:
                self.error = _Broken("a compressed body cut short")
            self.decoder = None
        self.complete = True

    # -- the exchange --------------------------------------------------------------------

    def send(self, data: bytes, stream: bool) -> None:
        self._begin()
        self.stream = stream
        self.active = True
        self.last_data = self.loop.time()
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
            loop = self.loop
            self.waiter = waiter = loop.create_future()
            self.timer = loop.call_at(self.last_data + timeout, self._check_idle, waiter, timeout)
            try:
                await waiter
            finally:
                self.waiter = None
                if self.timer is not None:
                    self.timer.cancel()
                    self.timer = None
        if self.error is not None:
            raise self.error

    def _check_idle(self, waiter: asyncio.Future[None], timeout: float) -> None:
        if waiter.done():
            return
        due = self.last_data + timeout
        if self.loop.time() < due:
            self.timer = self.loop.call_at(due, self._check_idle, waiter, timeout)
        else:
            self.timer = None
            waiter.set_exception(_Idle())

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
        if self.transport is not None and not self.closed:
            self.transport.abort()


class H1Client:
    """The pooled client behind :class:`~asgi_ai_relay.transport.UpstreamHttp`.

    :param ssl_context: for ``https`` upstreams; by default the system's trusted roots.
    """

    def __init__(self, settings: HttpSettings, timeouts: Timeouts, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self.max_connections = settings.max_connections
        self.max_idle = settings.max_keepalive
        self.keepalive = settings.keepalive_expiry
        self.timeouts = timeouts
        self._ssl = ssl_context
        self._targets: dict[str, _Target] = {}
        self._idle: dict[tuple[bool, str, int], list[_Connection]] = {}
        self._waiters: deque[asyncio.Future[None]] = deque()
        self.open = 0  # connections open or opening
        self.closed = False
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    async def post(self, provider: str, url: str, headers: Mapping[str, str], body: bytes, *, stream: bool) -> UpstreamReply:
        target = self._targets.get(url)
        if target is None:
            target = self._targets[url] = _Target(url)
        data = target.head + _header_block(headers, len(body)) + body
        timeout = self.timeouts.stream_idle if stream else self.timeouts.read
        for attempt in (1, 2):
            conn = await self._acquire(target, provider)
            conn.send(data, stream)
            try:
                if stream:
                    while not conn.headers_done:
                        await conn.progress(timeout)
                    return UpstreamReply(conn.status, conn.headers, chunks=self._chunks(conn, provider, timeout), close=lambda c=conn: self._close_stream(c))
                while not conn.complete:
                    await conn.progress(timeout)
                if conn.error is not None:
                    raise conn.error
                reply = UpstreamReply(conn.status, conn.headers, conn.take() if conn.body else b"")
                self._release(conn)
                return reply
            except _Closed as exc:
                conn.abort()
                if exc.early and conn.reused and attempt == 1:
                    continue  # the server had closed this idle connection: once more, on a new one
                raise UpstreamProtocolError(f"Provider {provider!r} closed the connection unexpectedly.") from None
            except _Idle:
                conn.abort()
                raise UpstreamTimeout(f"Provider {provider!r} did not answer in time.") from None
            except _Broken as exc:
                conn.abort()
                raise UpstreamProtocolError(f"Provider {provider!r} sent a broken answer: {exc}.") from None
            except BaseException:
                conn.abort()  # cancelled (the caller left) or worse: the exchange cannot go on
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def _chunks(self, conn: _Connection, provider: str, timeout: float) -> AsyncIterator[bytes]:
        try:
            while True:
                if conn.body:
                    yield conn.take()
                    continue
                if conn.complete:
                    if conn.error is not None:
                        raise conn.error
                    break
                await conn.progress(timeout, chunks=True)
        except _Idle:
            conn.abort()
            raise UpstreamTimeout(f"Provider {provider!r} stopped sending in the middle of a stream.") from None
        except (_Closed, _Broken) as exc:
            conn.abort()
            raise UpstreamProtocolError(f"Provider {provider!r} broke off the stream ({type(exc).__name__.strip('_').lower()}).") from None
        self._release(conn)

    def _close_stream(self, conn: _Connection) -> None:
        if not conn.active:
            return
        if conn.complete and conn.error is None and not conn.body:
            self._release(conn)  # all of it arrived, the reader just stopped at the end
        else:
            conn.abort()  # the rest of the answer is still on the wire

    # -- the pool ------------------------------------------------------------------------

    async def _acquire(self, target: _Target, provider: str) -> _Connection:
        if self.closed:
            raise UpstreamConnectError("The relay's upstream client is closed.")
        loop = self.loop
        while True:
            idle = self._idle.get(target.key)
            while idle:
                conn = idle.pop()
                if conn.closed or loop.time() - conn.idle_since >= conn.expires_after:
                    conn.abort()
                    continue
                conn.reused = True
                return conn
            if self.open >= self.max_connections:
                self._evict_one()  # an idle connection to another origin makes room
            if self.open < self.max_connections:
                return await self._connect(target, provider)
            waiter = loop.create_future()
            self._waiters.append(waiter)
            try:
                await asyncio.wait_for(waiter, self.timeouts.pool)
            except asyncio.TimeoutError:
                raise UpstreamTimeout(f"No free connection to provider {provider!r} in time (http.max_connections).") from None
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)

    async def _connect(self, target: _Target, provider: str) -> _Connection:
        self.open += 1
        loop = self.loop
        context = None
        if target.tls:
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
                self._ssl.set_alpn_protocols(["http/1.1"])
            context = self._ssl
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _Connection(self, target.key), target.host, target.port,
                    ssl=context, server_hostname=target.host if context is not None else None,
                    **self._connect_options(loop),
                ),
                self.timeouts.connect,
            )
        except asyncio.TimeoutError:
            self._gone()
            raise UpstreamTimeout(f"Could not connect to provider {provider!r} in time.") from None
        except (OSError, ssl.SSLError) as exc:
            self._gone()
            raise UpstreamConnectError(f"Could not connect to provider {provider!r} ({type(exc).__name__}).") from None
        except BaseException:
            self._gone()
            raise
        return conn

    @staticmethod
    def _connect_options(loop: asyncio.AbstractEventLoop) -> dict[str, Any]:
        # Happy Eyeballs (RFC 8305): a provider name with an unreachable IPv6 address costs a
        # quarter second, not the whole connect timeout. asyncio's own loops take the option;
        # uvloop's create_connection does not.
        return {"happy_eyeballs_delay": 0.25} if isinstance(loop, asyncio.BaseEventLoop) else {}

    def _release(self, conn: _Connection) -> None:
        conn.active = False
        if not conn.keep_alive or conn.closed or self.closed or conn.buffered or self.max_idle == 0:
            conn.abort()
            return
        conn.idle_since = self.loop.time()
        idle = self._idle.setdefault(conn.key, [])
        idle.append(conn)
        if len(idle) > self.max_idle:
            idle.pop(0).abort()
        self._notify()

    def _evict_one(self) -> None:
        for idle in self._idle.values():
            if idle:
                idle.pop(0).abort()
                return

    def _lost(self, conn: _Connection) -> None:
        if conn.counted:
            conn.counted = False
            self._gone()

    def _gone(self) -> None:
        self.open -= 1
        self._notify()

    def _notify(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def aclose(self) -> None:
        self.closed = True
        for idle in self._idle.values():
            for conn in idle:
                conn.abort()
        self._idle.clear()
        await asyncio.sleep(0)  # let the transports report their close
