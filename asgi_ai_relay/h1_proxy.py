"""Opening one connection of the relay's own client: directly, or through an HTTP proxy.

For an ``https`` upstream behind a proxy the connection is a tunnel: a ``CONNECT host:port``
(with the proxy's ``Proxy-Authorization``, if any) on a TCP connection to the proxy, then, once
the proxy answers 2xx, TLS to the upstream over it (the upstream's certificate and name are
checked as on a direct connection). For an ``http`` upstream the connection goes to the proxy,
and each request names the whole URL (:mod:`asgi_ai_relay.h1` writes it). The caller bounds all
of it, handshakes included, with ``timeouts.connect``.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import Any

from .egress import Proxy
from .h1_connection import Connection

__all__ = ["MAX_PROXY_ANSWER", "ProxyRefused", "open_connection"]

#: The most bytes of a proxy's answer to ``CONNECT`` that are read before giving up on it.
MAX_PROXY_ANSWER = 16 * 1024


class ProxyRefused(Exception):
    """The proxy did not open the tunnel (``status``: its answer's status, 0 when unreadable)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


class _ConnectAnswer(asyncio.Protocol):
    """Reads the proxy's answer to ``CONNECT`` (up to its blank line)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.buffer = bytearray()
        self.done: asyncio.Future[bytes] = loop.create_future()

    def data_received(self, data: bytes) -> None:
        if self.done.done():
            return
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end >= 0:
            if end + 4 != len(self.buffer):  # nothing may follow before the TLS handshake starts
                self.done.set_exception(ProxyRefused(0, "the proxy sent data after its answer to CONNECT"))
            else:
                self.done.set_result(bytes(self.buffer[:end]))
        elif len(self.buffer) > MAX_PROXY_ANSWER:
            self.done.set_exception(ProxyRefused(0, "the proxy's answer to CONNECT is too long"))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(ProxyRefused(0, "the proxy closed the connection instead of answering CONNECT"))


def connect_request(host: str, port: int, proxy: Proxy) -> bytes:
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    lines = [f"CONNECT {authority} HTTP/1.1\r\n", f"host: {authority}\r\n", "user-agent: asgi-ai-relay\r\n"]
    if proxy.authorization is not None:
        lines.append(f"proxy-authorization: {proxy.authorization}\r\n")
    return ("".join(lines) + "\r\n").encode("latin-1")


def _status(head: bytes) -> tuple[int, str]:
    line = head.split(b"\r\n", 1)[0].decode("latin-1")
    version, _, rest = line.partition(" ")
    code, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/1.") or not code.isdigit():
        raise ProxyRefused(0, "the proxy's answer to CONNECT is not HTTP/1.1")
    return int(code), reason.strip()


async def open_connection(
    loop: asyncio.AbstractEventLoop,
    factory: Callable[[], Connection],
    host: str,
    port: int,
    *,
    proxy: Proxy | None,
    context: ssl.SSLContext | None,
    options: dict[str, Any],
) -> Connection:
    """One new connection to ``host:port`` (TLS when ``context`` is given), through ``proxy``.

    :raises ProxyRefused: when the proxy answers ``CONNECT`` with anything but 2xx.
    :raises OSError: (``ssl.SSLError`` included) when a connection or handshake fails.
    """
    if proxy is None:
        _, direct = await loop.create_connection(
            factory, host, port, ssl=context, server_hostname=host if context is not None else None, **options
        )
        return direct
    if context is None:  # an http upstream: the proxy forwards each request
        _, forwarded = await loop.create_connection(factory, proxy.host, proxy.port, **options)
        return forwarded
    transport, answer = await loop.create_connection(lambda: _ConnectAnswer(loop), proxy.host, proxy.port, **options)
    conn: Connection | None = None
    try:
        transport.write(connect_request(host, port, proxy))
        status, reason = _status(await answer.done)
        if not 200 <= status < 300:
            raise ProxyRefused(status, f"the proxy answered CONNECT with {status} {reason}".rstrip())
        conn = factory()
        tls = await loop.start_tls(transport, conn, context, server_hostname=host)
        if tls is None:  # pragma: no cover - only when the transport closed meanwhile
            raise ConnectionResetError("the tunnel closed during the TLS handshake")
        conn.connection_made(tls)
        return conn
    except BaseException:
        if conn is not None:
            # start_tls hands the protocol connection_lost even when the handshake failed; the
            # caller counts the failed connection itself.
            conn.counted = False
        transport.abort()
        raise
