"""The relay's default upstream client: a lean HTTP/1.1 client on asyncio and httptools.

The upstream call is most of what a relay does per request, and a general-purpose client pays
on every call for what the relay never uses (cookie jars, redirects, tracing hooks, request and
response option objects). On the benchmark machine one keep-alive POST to a local upstream took
about 183 us of CPU through aiohttp and 54 us over a bare asyncio protocol; this client keeps
close to the latter. It does what an LLM provider's API needs:

* HTTP/1.1 over TCP or TLS (certificate and host name verified), directly or through an HTTP
  proxy (``CONNECT`` tunnels, see :mod:`asgi_ai_relay.h1_proxy`; proxy and TLS settings per
  provider from :mod:`asgi_ai_relay.egress`), one keep-alive pool per origin and route,
  at most ``http.max_connections`` connections in all, at most ``http.max_keepalive`` idle ones,
  an idle connection dropped after ``http.keepalive_expiry`` or the server's own
  ``Keep-Alive: timeout``, whichever is sooner;
* the request written with one system call; answers with a length, chunked, or read until the
  connection closes; gzip and deflate bodies decoded, and every answer held to the bounds of
  :mod:`asgi_ai_relay.reply` (sizes, decompression, stream lines, ``timeouts.total``);
* timeouts: connect, waiting for a free connection (``timeouts.pool``), read inactivity
  (``timeouts.read`` for a whole answer, ``timeouts.stream_idle`` between two chunks) and the
  whole answer (``timeouts.total``);
* streams handed on chunk by chunk as they arrive, with back-pressure on the socket;
* a request sent on a reused connection that the server had already closed (not one byte of
  answer came back) is sent once more on a new connection, as browsers do. Every other failure
  is an :class:`UpstreamError` for the relay's retry policy to judge.

This module is the pool; one connection is :mod:`asgi_ai_relay.h1_connection`.
"""

from __future__ import annotations

import asyncio
import functools
import resource
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from .config import HttpSettings, Timeouts
from .egress import EgressPolicy, Route
from .errors import UpstreamConnectError, UpstreamError, UpstreamProtocolError, UpstreamTimeout
from .h1_connection import HIGH_WATER, MAX_HEADER_BYTES, Broken, Closed, Connection, Headers, Idle, Late
from .h1_proxy import ProxyRefused, open_connection
from .reply import ACCEPT_ENCODING, Bounds, UpstreamReply

__all__ = ["HIGH_WATER", "MAX_HEADER_BYTES", "H1Client", "Headers"]

#: The connection class, under the name it had when it lived here.
_Connection = Connection
_SKIPPED = frozenset({"host", "content-length", "transfer-encoding", "connection", "proxy-authorization"})


class _Target:
    """What a URL resolves to for one provider, computed once: its route, pool key and request line."""

    __slots__ = ("blocks", "head", "host", "key", "port", "route", "tls")

    def __init__(self, url: str, route_of: Callable[[bool, str, int], Route]) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UpstreamConnectError(f"Not an http(s) URL: {parts.scheme}://{parts.hostname or ''}")
        self.tls = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.tls else 80)
        self.route = route = route_of(self.tls, self.host, self.port)
        self.key = (route, self.tls, self.host, self.port)
        default_port = self.port == (443 if self.tls else 80)
        name = f"[{self.host}]" if ":" in self.host else self.host
        authority = name if default_port else f"{name}:{self.port}"
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        head = f"POST {target} HTTP/1.1\r\nhost: {authority}\r\n"
        proxy = route.proxy
        if proxy is not None and not self.tls:  # a forwarding proxy: the whole URL, and its credentials
            head = f"POST http://{authority}{target} HTTP/1.1\r\nhost: {authority}\r\n"
            if proxy.authorization is not None:
                head += f"proxy-authorization: {proxy.authorization}\r\n"
        self.head = head.encode("latin-1")
        #: The request line and headers up to the length, by the headers sent (see ``block``).
        self.blocks: dict[tuple[tuple[str, str], ...], bytes] = {}

    def block(self, items: tuple[tuple[str, str], ...]) -> bytes:
        """The request line and the header block of ``items``, all but ``content-length``.

        A provider sends the same headers on nearly every request, so the block is built once
        for each set of them (and the cache starts over past a few, as per-request headers
        such as ``traceparent`` would fill it).

        :raises UpstreamProtocolError: for a header that cannot be sent as is.
        """
        block = self.head + _header_block(items)
        if len(self.blocks) >= _BLOCKS:
            self.blocks.clear()
        self.blocks[items] = block
        return block


#: Header blocks a target keeps (see ``_Target.block``).
_BLOCKS = 16


def _header_block(items: tuple[tuple[str, str], ...]) -> bytes:
    """:raises UpstreamProtocolError: for a header that cannot be sent as is."""
    lines = []
    agent = encoding = False
    for name, value in items:
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
        lines.append(f"accept-encoding: {ACCEPT_ENCODING}\r\n")
    try:
        return "".join(lines).encode("latin-1")
    except UnicodeEncodeError as exc:
        raise UpstreamProtocolError("A header value is not Latin-1 text and cannot be sent.") from exc



def make_room_for(connections: int) -> None:
    """Raise this process's soft limit on open files, up to its hard limit, so ``connections``
    upstream connections and as many callers' fit (as Go's runtime does for every program).

    A relayed stream holds two descriptors; the common soft limit of 1,024 would otherwise turn
    the 513th concurrent stream into an error accepting or connecting instead of a stream.
    """
    want = 2 * connections + 256
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want if hard == resource.RLIM_INFINITY else min(want, hard), hard))
    except (OSError, ValueError):  # not allowed here: the host's limit stands
        pass


class H1Client:
    """The pooled client behind :class:`~asgi_ai_relay.transport.UpstreamHttp`.

    :param ssl_context: for every ``https`` upstream, instead of the contexts of the settings.
    :param egress: proxies and TLS per provider (by default, ``settings``' alone).
    """

    def __init__(
        self, settings: HttpSettings, timeouts: Timeouts, *,
        ssl_context: ssl.SSLContext | None = None, egress: EgressPolicy | None = None,
    ) -> None:
        self.max_connections = settings.max_connections
        make_room_for(self.max_connections)
        self.max_idle = settings.max_keepalive
        self.keepalive = settings.keepalive_expiry
        self.timeouts = timeouts
        self.bounds = Bounds(settings, timeouts)
        self.egress = egress if egress is not None else EgressPolicy(settings, ssl_context=ssl_context)
        self._targets: dict[tuple[str, str], _Target] = {}
        self._idle: dict[tuple[Any, ...], list[Connection]] = {}
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
        target = self._targets.get((provider, url))
        if target is None:
            target = self._targets[provider, url] = _Target(url, functools.partial(self.egress.route, provider))
        items = tuple(headers.items())
        data = (target.blocks.get(items) or target.block(items)) + b"content-length: %d\r\n\r\n" % len(body) + body
        timeout = self.timeouts.stream_idle if stream else self.timeouts.read
        deadline = time.monotonic() + self.bounds.total  # when the answer must be complete (Bounds.deadline)
        for attempt in (1, 2):
            conn = await self._acquire(target, provider)
            conn.send(data, stream, provider, deadline)
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
            except Closed as exc:
                conn.abort()
                if exc.early and conn.reused and attempt == 1:
                    continue  # the server had closed this idle connection: once more, on a new one
                raise UpstreamProtocolError(f"Provider {provider!r} closed the connection unexpectedly.") from None
            except BaseException as exc:
                conn.abort()  # cancelled (the caller left), or failed: the exchange cannot go on
                error = self._error(exc, provider, stream=False)
                if error is exc:
                    raise
                raise error from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _error(self, exc: BaseException, provider: str, *, stream: bool) -> BaseException:
        """The relay's own error for what ended an exchange (anything else goes on as it is)."""
        if isinstance(exc, Late):
            return self.bounds.late(provider)
        if isinstance(exc, Idle):
            if stream:
                return UpstreamTimeout(f"Provider {provider!r} stopped sending in the middle of a stream.")
            return UpstreamTimeout(f"Provider {provider!r} did not answer in time.")
        if isinstance(exc, Broken):
            return UpstreamProtocolError(f"Provider {provider!r} sent a broken answer: {exc}.")
        if isinstance(exc, Closed):  # on a stream: a whole answer's is handled where it may be resent
            return UpstreamProtocolError(f"Provider {provider!r} broke off the stream (closed).")
        return exc

    async def _chunks(self, conn: Connection, provider: str, timeout: float) -> AsyncIterator[bytes]:
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
        except (Idle, Late, Closed, Broken, UpstreamError) as exc:
            conn.abort()
            error = self._error(exc, provider, stream=True)
            if error is exc:
                raise
            raise error from None
        self._release(conn)

    def _close_stream(self, conn: Connection) -> None:
        if not conn.active:
            return
        if conn.complete and conn.error is None and not conn.body:
            self._release(conn)  # all of it arrived, the reader just stopped at the end
        else:
            conn.abort()  # the rest of the answer is still on the wire

    # -- the pool ------------------------------------------------------------------------

    async def _acquire(self, target: _Target, provider: str) -> Connection:
        if self.closed:
            raise UpstreamConnectError("The relay's upstream client is closed.")
        loop = self._loop or self.loop
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

    async def _connect(self, target: _Target, provider: str) -> Connection:
        self.open += 1
        loop = self.loop
        proxy = target.route.proxy
        via = f" through the proxy {proxy.display}" if proxy is not None else ""
        try:
            return await asyncio.wait_for(
                open_connection(
                    loop, lambda: Connection(self, target.key), target.host, target.port,
                    proxy=proxy, context=target.route.ssl if target.tls else None, options=self._connect_options(loop),
                ),
                self.timeouts.connect,  # the TCP connect, the proxy's CONNECT and the TLS handshake
            )
        except asyncio.TimeoutError:
            self._gone()
            raise UpstreamTimeout(f"Could not connect to provider {provider!r}{via} in time.") from None
        except ProxyRefused as exc:
            self._gone()
            raise UpstreamConnectError(f"Could not reach provider {provider!r}{via}: {exc}.") from None
        except ssl.SSLCertVerificationError as exc:
            self._gone()
            raise UpstreamConnectError(
                f"Provider {provider!r}{via}: its TLS certificate was refused ({exc.verify_message})."
            ) from None
        except (OSError, ssl.SSLError) as exc:
            self._gone()
            raise UpstreamConnectError(f"Could not connect to provider {provider!r}{via} ({type(exc).__name__}).") from None
        except BaseException:
            self._gone()
            raise

    @staticmethod
    def _connect_options(loop: asyncio.AbstractEventLoop) -> dict[str, Any]:
        # Happy Eyeballs (RFC 8305): a provider name with an unreachable IPv6 address costs a
        # quarter second, not the whole connect timeout. asyncio's own loops take the option;
        # uvloop's create_connection does not.
        return {"happy_eyeballs_delay": 0.25} if isinstance(loop, asyncio.BaseEventLoop) else {}

    def _release(self, conn: Connection) -> None:
        conn.active = False
        if not conn.keep_alive or conn.closed or self.closed or conn.buffered or self.max_idle == 0:
            conn.abort()
            return
        conn.idle_since = conn.loop.time()
        idle = self._idle.setdefault(conn.key, [])
        idle.append(conn)
        if len(idle) > self.max_idle:
            idle.pop(0).abort()
        if self._waiters:
            self._notify()

    def _evict_one(self) -> None:
        for idle in self._idle.values():
            if idle:
                idle.pop(0).abort()
                return

    def _lost(self, conn: Connection) -> None:
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
