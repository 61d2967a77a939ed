"""The relay's own HTTP/1.1 client (``asgi_ai_relay.h1``) against real raw-socket upstreams.

Each test starts an asyncio TCP server on 127.0.0.1 whose handler writes exactly the bytes the
case needs and records what it saw (connections, requests, peak concurrency), so framing,
keep-alive reuse, the one resend on a stale connection, the pool's bounds, timeouts and
back-pressure are all checked on the wire. No mocks; every wait is bounded and synchronised with
events. The few sleeps are the case itself (an upstream's pace, a consumer slower than a timeout),
never a stand-in for synchronisation.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import inspect
import os
import socket
import ssl
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
import trustme

from asgi_ai_relay.config import HttpSettings, Timeouts
from asgi_ai_relay.errors import UpstreamConnectError, UpstreamProtocolError, UpstreamTimeout, UpstreamTooLarge
from asgi_ai_relay.h1 import HIGH_WATER, H1Client, _Connection
from asgi_ai_relay.timers import Timers
from asgi_ai_relay.transport import UpstreamReply

#: The longest any one step may take before the test fails (every wait is bounded by it), and the
#: client's timeouts unless a test narrows one: generous, since the machine running the suite is
#: shared and may stall a process for a second or two; a narrowed timeout is told from these by
#: firing well before WAIT / 2.
WAIT = 10.0
PROVIDER = "prov"


# -- a raw upstream ----------------------------------------------------------------------------


@dataclass
class Request:
    """One request as the upstream read it off the socket."""

    head: bytes  # request line and header lines, without the blank line
    fields: list[tuple[str, str]]  # header lines in order, names lower-cased
    body: bytes
    reads: int  # socket reads it took to arrive whole
    trailing: bytes  # bytes that came after it in the same reads (nothing, for a well-framed request)
    connection: int  # which accepted connection (0, 1, ...) it came on

    @property
    def line(self) -> str:
        return self.head.split(b"\r\n", 1)[0].decode("latin-1")

    @property
    def headers(self) -> dict[str, str]:
        return dict(self.fields)

    def names(self) -> list[str]:
        return [name for name, _ in self.fields]


class Peer:
    """One accepted connection, driven by a test's handler."""

    def __init__(self, server: Upstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        self.index = index
        self.buffer = b""
        self.served = 0  # requests read on this connection

    async def _fill(self) -> bool:
        try:
            data = await self.reader.read(65536)
        except ConnectionError:
            data = b""
        self.buffer += data
        return bool(data)

    async def request(self) -> Request | None:
        """The next request on this connection (recorded on the server); None once the client closed it."""
        reads = 0
        while b"\r\n\r\n" not in self.buffer:
            if not await self._fill():
                return None
            reads += 1
        head, _, _ = self.buffer.partition(b"\r\n\r\n")
        fields = []
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.decode("latin-1").partition(":")
            fields.append((name.strip().lower(), value.strip()))
        end = len(head) + 4 + int(dict(fields).get("content-length", "0"))
        while len(self.buffer) < end:
            if not await self._fill():
                return None
            reads += 1
        request = Request(head, fields, self.buffer[len(head) + 4 : end], reads, self.buffer[end:], self.index)
        self.buffer = self.buffer[end:]
        self.served += 1
        self.server.requests.append(request)
        return request

    async def until_closed(self) -> None:
        """Wait for the client to close this connection (end of file or reset)."""
        while await self._fill():
            pass

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


Handler = Callable[[Peer], Awaitable[None]]


class Upstream:
    """``async with Upstream(handler) as server``: a TCP (or TLS) server on 127.0.0.1, port 0.

    ``handler(peer)`` runs once per accepted connection; what the server saw is on its attributes.
    An exception in a handler (other than the client hanging up) fails the test on exit.
    """

    def __init__(self, handler: Handler, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.ssl_context = ssl_context
        self.connections = 0  # accepted so far
        self.open = 0  # open right now
        self.peak = 0  # the most open at once
        self.requests: list[Request] = []
        self.errors: list[BaseException] = []
        self.port = 0
        self._tasks: set[asyncio.Task[Any]] = set()

    def url(self, path: str = "/v1/chat/completions", host: str = "127.0.0.1") -> str:
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://{host}:{self.port}{path}"

    def bodies(self) -> list[bytes]:
        return [request.body for request in self.requests]

    async def __aenter__(self) -> Upstream:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0, ssl=self.ssl_context)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = Peer(self, reader, writer, self.connections)
        self.connections += 1
        self.open += 1
        self.peak = max(self.peak, self.open)
        # The handler runs in a task of its own, so that closing the server can cancel it without
        # cancelling asyncio's connection callback (which would log the cancellation as an error).
        task = asyncio.create_task(self.handler(peer))
        self._tasks.add(task)
        try:
            await asyncio.wait([task])
        finally:
            self.open -= 1
            writer.close()
            self._tasks.discard(task)
        if not task.cancelled() and not isinstance(task.exception(), (type(None), ConnectionError)):
            self.errors.append(task.exception())  # ConnectionError: the client hung up as the handler wrote

    async def __aexit__(self, *exc_info: object) -> None:
        self._server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._server.wait_closed()
        if self.errors and exc_info[0] is None:
            raise self.errors[0]


def serve(respond: Callable[[Peer, Request], Any]) -> Handler:
    """A handler that answers each request of a connection with ``respond`` until the client closes."""

    async def handler(peer: Peer) -> None:
        while (request := await peer.request()) is not None:
            result = respond(peer, request)
            if inspect.isawaitable(result):
                await result

    return handler


def echo(peer: Peer, request: Request) -> None:
    """Answer ``re: <body>`` with a length."""
    peer.send(answer(b"re: " + request.body))


def answer(body: bytes = b"ok", *, status: str = "200 OK", headers: tuple[tuple[str, str], ...] = (), length: bool = True) -> bytes:
    lines = [f"HTTP/1.1 {status}", *(f"{name}: {value}" for name, value in headers)]
    if length:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def chunked_head(*headers: tuple[str, str]) -> bytes:
    return answer(b"", headers=(("Content-Type", "text/event-stream"), ("Transfer-Encoding", "chunked"), *headers), length=False)


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"


# -- the client side -----------------------------------------------------------------------------


@pytest.fixture
async def make_client() -> AsyncIterator[Callable[..., H1Client]]:
    """Builds clients (generous limits and timeouts unless a test narrows one) and closes them after."""
    clients: list[H1Client] = []

    def make(
        *, max_connections: int = 8, max_keepalive: int = 8, keepalive_expiry: float = 30.0,
        read: float = WAIT, stream_idle: float = WAIT, pool: float = WAIT, total: float = 600.0,
        ssl_context: ssl.SSLContext | None = None, **bounds: int,
    ) -> H1Client:
        client = H1Client(
            HttpSettings(max_connections=max_connections, max_keepalive=max_keepalive, keepalive_expiry=keepalive_expiry, **bounds),
            Timeouts(connect=WAIT, read=read, stream_idle=stream_idle, pool=pool, total=total),
            ssl_context=ssl_context,
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


async def within(awaitable: Awaitable[Any], seconds: float = WAIT) -> Any:
    return await asyncio.wait_for(awaitable, seconds)


async def post(client: H1Client, server: Upstream, body: bytes = b"{}", *, stream: bool = False, headers: dict[str, str] | None = None) -> UpstreamReply:
    return await within(client.post(PROVIDER, server.url(), headers or {"Content-Type": "application/json"}, body, stream=stream))


async def pieces(reply: UpstreamReply) -> list[bytes]:
    assert reply.chunks is not None
    return await within(_collect(reply.chunks))


async def _collect(chunks: AsyncIterator[bytes]) -> list[bytes]:
    return [piece async for piece in chunks]


async def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Poll a state no event reports (the client's own view of its socket), for at most WAIT."""
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting until {what}")
        await asyncio.sleep(0.001)


def connection_of(reply: UpstreamReply) -> _Connection:
    """The pooled connection a streamed reply reads from (the stream generator's ``conn`` argument)."""
    conn = reply.chunks.ag_frame.f_locals["conn"]  # type: ignore[union-attr]
    assert isinstance(conn, _Connection)
    return conn


def free_port() -> int:
    """A loopback port with nothing listening on it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- framing -------------------------------------------------------------------------------------


async def test_whole_answer_with_length(make_client):
    """A length-framed answer comes back whole with its headers (any case); the request went out as
    one well-framed write with host, content-length and the caller's headers, not the caller's framing."""
    headers = (("Content-Type", "application/json"), ("X-Dup", "a"), ("X-Dup", "b"))
    async with Upstream(serve(lambda peer, request: peer.send(answer(b'{"id": 1}', headers=headers)))) as server:
        client = make_client()
        body = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}'
        sent = {"Authorization": "Bearer k-1", "X-Trace": "t-1", "Host": "evil.example", "Content-Length": "999", "Connection": "close"}
        reply = await within(client.post(PROVIDER, server.url("/v1/chat/completions?api-version=2"), sent, body, stream=False))

    assert reply.status == 200
    assert reply.body == b'{"id": 1}'
    assert reply.chunks is None
    assert reply.headers.get("Content-Type") == "application/json"
    assert reply.headers["CONTENT-LENGTH"] == "9"
    assert "content-type" in reply.headers
    assert reply.headers.get("x-dup") == "a, b"

    [request] = server.requests
    assert request.line == "POST /v1/chat/completions?api-version=2 HTTP/1.1"
    assert request.headers["host"] == f"127.0.0.1:{server.port}"
    assert request.headers["content-length"] == str(len(body))
    assert request.headers["authorization"] == "Bearer k-1"
    assert request.headers["x-trace"] == "t-1"
    assert request.headers["user-agent"] == "asgi-ai-relay"
    assert request.headers["accept-encoding"] == "gzip, deflate"
    names = request.names()
    assert names.count("host") == 1 and names.count("content-length") == 1
    assert "connection" not in names and "transfer-encoding" not in names
    assert request.body == body
    assert request.reads == 1  # head and body in one write
    assert request.trailing == b""


async def test_keep_alive_reuses_one_connection(make_client):
    """Three sequential posts travel on one connection, each answered with its own body."""
    async with Upstream(serve(echo)) as server:
        client = make_client()
        replies = [await post(client, server, body) for body in (b"1", b"2", b"3")]

    assert [reply.body for reply in replies] == [b"re: 1", b"re: 2", b"re: 3"]
    assert server.connections == 1
    assert server.bodies() == [b"1", b"2", b"3"]
    assert {request.connection for request in server.requests} == {0}


def test_works_on_uvloop():
    """The same client on uvloop, the loop uvicorn picks when it is installed: a whole answer, a
    streamed one, one connection for both."""
    uvloop = pytest.importorskip("uvloop")

    async def scenario() -> tuple[bytes, bytes, int]:
        async with Upstream(serve(echo)) as server:
            client = H1Client(HttpSettings(), Timeouts(connect=WAIT, read=WAIT, stream_idle=WAIT, pool=WAIT))
            try:
                whole = await post(client, server, b"1")
                streamed = b"".join(await pieces(await post(client, server, b"2", stream=True)))
            finally:
                await client.aclose()
            return whole.body, streamed, server.connections

    loop = uvloop.new_event_loop()
    try:
        assert loop.run_until_complete(scenario()) == (b"re: 1", b"re: 2", 1)
    finally:
        loop.close()


async def test_chunked_whole_answer(make_client):
    """A chunked answer read whole is the exact concatenation of its chunks (sent in separate writes)."""
    parts = [b'{"a": ', b"1, ", b'"b": "' + b"x" * 5000 + b'"}']

    async def respond(peer: Peer, request: Request) -> None:
        peer.send(chunked_head(("Content-Type", "application/json")))
        for part in parts:
            peer.send(chunk(part))
            await peer.writer.drain()
        peer.send(LAST_CHUNK)

    async with Upstream(serve(respond)) as server:
        client = make_client()
        reply = await post(client, server)
        again = await post(client, server)

    assert reply.status == 200
    assert reply.body == b"".join(parts)
    assert again.body == reply.body
    assert server.connections == 1  # the chunked framing ended the answer: the connection was reusable


async def read_in_lockstep(reply, received: list[asyncio.Event]) -> list[bytes]:
    """The stream's pieces, setting ``received[i]`` as piece ``i`` arrives (the server waits on it)."""
    assert reply.chunks is not None
    got = []
    async for piece in reply.chunks:
        got.append(piece)
        received[len(got) - 1].set()
    return got


async def test_chunked_stream_hands_on_each_piece_as_it_arrives(make_client):
    """A stream yields each piece before the next is even sent: the server waits for the test to
    have received piece n before it writes piece n+1, so a client that buffered would time out."""
    sent = [b"data: one\n\n", b"data: two\n\n", b"data: three\n\n"]
    received = [asyncio.Event() for _ in sent]

    async def respond(peer: Peer, request: Request) -> None:
        peer.send(chunked_head())
        for piece, got in zip(sent, received):
            peer.send(chunk(piece))
            await within(got.wait())
        peer.send(LAST_CHUNK)

    async with Upstream(serve(respond)) as server:
        client = make_client()
        reply = await post(client, server, stream=True)
        assert reply.status == 200
        assert reply.headers.get("Content-Type") == "text/event-stream"
        got = await read_in_lockstep(reply, received)

    assert got == sent


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_answer_read_until_close(make_client, stream):
    """An answer with neither length nor chunks ends when the server closes; all of it arrives and
    the connection is not reused."""
    body = b"first part;" + b"y" * 3000 + b";last part"

    async def handler(peer: Peer) -> None:
        if await peer.request() is None:
            return
        peer.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n" + body[:11])
        await peer.writer.drain()
        peer.send(body[11:])
        await peer.close()

    async with Upstream(handler) as server:
        client = make_client()
        reply = await post(client, server, stream=stream)
        data = b"".join(await pieces(reply)) if stream else reply.body
        second = await post(client, server)

    assert reply.status == 200
    assert data == body
    assert second.body == body
    assert server.connections == 2


# -- content encoding -----------------------------------------------------------------------------


@pytest.mark.parametrize("coding, compress", [("gzip", gzip.compress), ("deflate", zlib.compress)])
async def test_compressed_whole_answer_is_decoded(make_client, coding, compress):
    """A gzip (or zlib deflate) body is handed on decoded."""
    payload = b'{"choices": [' + b'{"text": "hello"}, ' * 500 + b"{}]}"
    headers = (("Content-Type", "application/json"), ("Content-Encoding", coding))
    async with Upstream(serve(lambda peer, request: peer.send(answer(compress(payload), headers=headers)))) as server:
        client = make_client()
        reply = await post(client, server)

    assert reply.body == payload


async def test_gzip_stream_is_decoded_piece_by_piece(make_client):
    """A gzip stream (each piece sync-flushed) is decoded as each piece arrives, in lockstep with the server."""
    sent = [b"data: one\n\n", b"data: two\n\n", b"data: [DONE]\n\n"]
    received = [asyncio.Event() for _ in sent]

    async def respond(peer: Peer, request: Request) -> None:
        compressor = zlib.compressobj(wbits=31)  # gzip framing
        peer.send(chunked_head(("Content-Encoding", "gzip")))
        for piece, got in zip(sent, received):
            peer.send(chunk(compressor.compress(piece) + compressor.flush(zlib.Z_SYNC_FLUSH)))
            await within(got.wait())
        peer.send(chunk(compressor.flush()) + LAST_CHUNK)

    async with Upstream(serve(respond)) as server:
        client = make_client()
        reply = await post(client, server, stream=True)
        got = await read_in_lockstep(reply, received)

    assert got == sent


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_truncated_gzip_is_a_protocol_error(make_client, stream):
    """A gzip body cut short (its trailer missing, though the HTTP framing is complete) is an error, not a short answer."""
    truncated = gzip.compress(b'{"text": "' + b"z" * 2000 + b'"}')[:-8]

    def respond(peer: Peer, request: Request) -> None:
        if stream:
            peer.send(chunked_head(("Content-Encoding", "gzip")) + chunk(truncated) + LAST_CHUNK)
        else:
            peer.send(answer(truncated, headers=(("Content-Encoding", "gzip"),)))

    async with Upstream(serve(respond)) as server:
        client = make_client()
        with pytest.raises(UpstreamProtocolError, match=PROVIDER):
            reply = await post(client, server, stream=stream)
            await within(reply.read())

    assert len(server.requests) == 1


async def test_unknown_content_encoding_is_a_protocol_error(make_client):
    """A body in an encoding the client never asked for (br) is refused rather than passed on encoded."""
    headers = (("Content-Encoding", "br"),)
    async with Upstream(serve(lambda peer, request: peer.send(answer(b"\x0b\x02\x80hi\x03", headers=headers)))) as server:
        client = make_client()
        with pytest.raises(UpstreamProtocolError, match="content-encoding"):
            await post(client, server)


# -- stale connections and resends ---------------------------------------------------------------


async def test_idle_connection_closed_by_server_is_replaced(make_client):
    """An idle connection the server closed (and the client noticed) is dropped: the next post goes
    on a new connection and the server sees each request once."""
    close_now = asyncio.Event()

    async def handler(peer: Peer) -> None:
        while (request := await peer.request()) is not None:
            echo(peer, request)
            if peer.index == 0:
                await within(close_now.wait())
                await peer.close()
                return

    async with Upstream(handler) as server:
        client = make_client()
        first = await post(client, server, b"one")
        close_now.set()
        await wait_until(lambda: client.open == 0, "the client saw the idle connection close")
        second = await post(client, server, b"two")

    assert (first.body, second.body) == (b"re: one", b"re: two")
    assert server.connections == 2
    assert server.bodies() == [b"one", b"two"]
    assert [request.connection for request in server.requests] == [0, 1]


async def test_request_on_stale_connection_is_sent_once_more(make_client):
    """A reused connection the server closes on reading the request, without a byte of answer, is
    retried once on a new connection; the handler that answers sees the request exactly once."""
    dropped: list[Request] = []

    async def handler(peer: Peer) -> None:
        while (request := await peer.request()) is not None:
            if peer.index == 0 and peer.served == 2:  # the second request on the first connection
                dropped.append(request)
                await peer.close()
                return
            echo(peer, request)

    async with Upstream(handler) as server:
        client = make_client()
        first = await post(client, server, b"one")
        second = await post(client, server, b"two")

    assert (first.body, second.body) == (b"re: one", b"re: two")
    assert [request.body for request in dropped] == [b"two"]  # the stale connection was really tried first
    answered = [request for request in server.requests if request not in dropped]
    assert [(request.body, request.connection) for request in answered] == [(b"one", 0), (b"two", 1)]
    assert server.connections == 2


async def test_stale_connection_resend_happens_only_once(make_client):
    """When the resend on a new connection is also closed unanswered, the post fails: no third try."""

    async def handler(peer: Peer) -> None:
        while (request := await peer.request()) is not None:
            if request.body == b"two":
                await peer.close()
                return
            echo(peer, request)

    async with Upstream(handler) as server:
        client = make_client()
        await post(client, server, b"one")
        with pytest.raises(UpstreamProtocolError, match="closed the connection"):
            await post(client, server, b"two")

    assert server.bodies() == [b"one", b"two", b"two"]
    assert [request.connection for request in server.requests] == [0, 0, 1]
    assert server.connections == 2


async def test_fresh_connection_closed_unanswered_is_not_resent(make_client):
    """On a new connection an unanswered close is the server's doing, not staleness: no resend."""

    async def handler(peer: Peer) -> None:
        if await peer.request() is not None:
            await peer.close()

    async with Upstream(handler) as server:
        client = make_client()
        with pytest.raises(UpstreamProtocolError):
            await post(client, server)

    assert len(server.requests) == 1
    assert server.connections == 1


@pytest.mark.parametrize(
    "partial, stream",
    [
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Ty", False, id="half-headers"),
        pytest.param(answer(b"0123456789")[:-5], False, id="half-body"),
        pytest.param(chunked_head() + chunk(b"data: 1\n\n"), True, id="half-stream"),
    ],
)
async def test_no_resend_once_part_of_the_answer_arrived(make_client, partial, stream):
    """A reused connection that closes after part of the answer is a protocol error, never resent
    (the server may have acted on it): the server saw the request once."""

    async def handler(peer: Peer) -> None:
        while (request := await peer.request()) is not None:
            if request.body == b"two":
                peer.send(partial)
                await peer.close()
                return
            echo(peer, request)

    async with Upstream(handler) as server:
        client = make_client()
        await post(client, server, b"one")
        with pytest.raises(UpstreamProtocolError):
            reply = await post(client, server, b"two", stream=stream)
            await within(reply.read())

    assert server.bodies() == [b"one", b"two"]
    assert server.connections == 1


async def test_garbage_answer_is_a_protocol_error(make_client):
    """Bytes that are not HTTP/1.1 are a protocol error naming the provider."""
    async with Upstream(serve(lambda peer, request: peer.send(b"SSH-2.0-OpenSSH_9.6\r\n\r\n"))) as server:
        client = make_client()
        with pytest.raises(UpstreamProtocolError, match="broken answer"):
            await post(client, server)


async def test_oversized_header_block_is_a_protocol_error(make_client):
    """An answer whose header block passes 64 KiB is refused."""
    headers = tuple((f"X-Filler-{i}", "f" * 1000) for i in range(80))
    async with Upstream(serve(lambda peer, request: peer.send(answer(headers=headers)))) as server:
        client = make_client()
        with pytest.raises(UpstreamProtocolError, match="header block"):
            await post(client, server)


# -- the pool ------------------------------------------------------------------------------------


async def test_pool_bounds_concurrent_connections(make_client):
    """Six concurrent posts with max_connections=2 are all answered over at most two connections."""
    release = asyncio.Event()
    both_in = asyncio.Event()
    waiting: list[Request] = []

    async def respond(peer: Peer, request: Request) -> None:
        waiting.append(request)
        if len(waiting) == 2:
            both_in.set()
        await within(release.wait())
        echo(peer, request)

    async with Upstream(serve(respond)) as server:
        client = make_client(max_connections=2)
        tasks = [asyncio.create_task(post(client, server, b"%d" % i)) for i in range(6)]
        await within(both_in.wait())
        release.set()
        replies = await within(asyncio.gather(*tasks))

    assert [reply.body for reply in replies] == [b"re: %d" % i for i in range(6)]
    assert sorted(server.bodies()) == [b"%d" % i for i in range(6)]
    assert server.peak == 2
    assert server.connections == 2


async def test_pool_timeout_when_no_connection_frees(make_client):
    """With the only connection busy, a second post gives up after timeouts.pool without reaching the
    server; the first then completes and the slot serves a third post."""
    release = asyncio.Event()
    first_in = asyncio.Event()

    async def respond(peer: Peer, request: Request) -> None:
        if request.body == b"first":
            first_in.set()
            await within(release.wait())
        echo(peer, request)

    async with Upstream(serve(respond)) as server:
        client = make_client(max_connections=1, pool=0.3)
        first = asyncio.create_task(post(client, server, b"first"))
        await within(first_in.wait())
        started = time.monotonic()
        with pytest.raises(UpstreamTimeout, match="max_connections"):
            await post(client, server, b"second")
        waited = time.monotonic() - started
        release.set()
        first_reply = await within(first)
        third = await post(client, server, b"third")

    assert 0.25 <= waited < WAIT / 2  # the narrowed timeout, not a default (WAIT)
    assert first_reply.body == b"re: first"
    assert third.body == b"re: third"
    assert server.bodies() == [b"first", b"third"]
    assert server.connections == 1


@pytest.mark.parametrize("settings", [{"max_keepalive": 0}, {"keepalive_expiry": 0.0}], ids=["no-idle", "no-expiry"])
async def test_keepalive_off_in_settings(make_client, settings):
    """max_keepalive=0 or keepalive_expiry=0 means each post opens its own connection."""
    async with Upstream(serve(echo)) as server:
        client = make_client(**settings)
        for body in (b"1", b"2", b"3"):
            assert (await post(client, server, body)).body == b"re: " + body

    assert server.connections == 3


async def test_connection_close_answer_is_not_reused(make_client):
    """An answer saying ``Connection: close`` ends that connection's use."""

    def respond(peer: Peer, request: Request) -> None:
        peer.send(answer(b"bye", headers=(("Connection", "close"),)))

    async with Upstream(serve(respond)) as server:
        client = make_client()
        await post(client, server)
        await post(client, server)

    assert server.connections == 2


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_second_answer_to_one_request_is_not_taken(make_client, stream):
    """A confused server that sends two answers to one request (in one write): the first is the
    answer, the second is not mixed into it, and the connection is not used again."""

    def respond(peer: Peer, request: Request) -> None:
        peer.send(answer(b"first") + answer(b"second"))

    async with Upstream(serve(respond)) as server:
        client = make_client()
        reply = await post(client, server, stream=stream)
        body = b"".join(await pieces(reply)) if stream else reply.body
        again = await post(client, server)

    assert (reply.status, body) == (200, b"first")
    assert again.body == b"first"
    assert server.connections == 2


@pytest.mark.parametrize(
    "keep_alive, connections",
    [("timeout=1", 2), ("max=100, timeout=1", 2), ("timeout=30, max=100", 1)],
)
async def test_server_keep_alive_timeout_is_honoured(make_client, keep_alive, connections):
    """``Keep-Alive: timeout=N`` caps the idle time at N - 1 s: timeout=1 means never reuse, 30 means reuse."""

    def respond(peer: Peer, request: Request) -> None:
        peer.send(answer(b"ok", headers=(("Keep-Alive", keep_alive),)))

    async with Upstream(serve(respond)) as server:
        client = make_client()
        await post(client, server)
        await post(client, server)

    assert server.connections == connections
    assert len(server.requests) == 2


# -- timeouts ------------------------------------------------------------------------------------


async def test_read_timeout_when_body_never_comes(make_client):
    """Headers and then silence: UpstreamTimeout after timeouts.read, and the client drops the connection."""
    dropped = asyncio.Event()

    async def respond(peer: Peer, request: Request) -> None:
        peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
        await peer.until_closed()
        dropped.set()

    async with Upstream(serve(respond)) as server:
        client = make_client(read=0.3)
        started = time.monotonic()
        with pytest.raises(UpstreamTimeout, match="did not answer in time"):
            await post(client, server)
        waited = time.monotonic() - started
        await within(dropped.wait())

    assert 0.25 <= waited < WAIT / 2  # the narrowed timeout, not a default (WAIT)


async def test_read_timeout_is_inactivity_not_total(make_client):
    """A slow but steady answer (a byte every 0.05 s for 1.5 s) outlasts timeouts.read=1.0 and
    arrives whole. The gap is far below the timeout, so a process stalled for most of a second
    (the upstream and the client share it) does not open a gap as long as the timeout."""
    body = b"abcdefghijklmnopqrstuvwxyz0123"

    async def respond(peer: Peer, request: Request) -> None:
        peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
        for byte in body:
            await asyncio.sleep(0.05)  # the upstream's own pace, not a synchronisation
            peer.send(bytes([byte]))

    async with Upstream(serve(respond)) as server:
        client = make_client(read=1.0)
        started = time.monotonic()
        reply = await post(client, server)
        took = time.monotonic() - started

    assert reply.body == body
    assert took > 1.0  # the answer as a whole took longer than timeouts.read


async def test_stream_idle_timeout_between_chunks(make_client):
    """One chunk and then silence: iterating raises UpstreamTimeout after timeouts.stream_idle."""
    dropped = asyncio.Event()

    async def respond(peer: Peer, request: Request) -> None:
        peer.send(chunked_head() + chunk(b"data: 1\n\n"))
        await peer.until_closed()
        dropped.set()

    async with Upstream(serve(respond)) as server:
        client = make_client(stream_idle=0.3)
        reply = await post(client, server, stream=True)
        assert reply.chunks is not None
        assert await within(anext(reply.chunks)) == b"data: 1\n\n"
        started = time.monotonic()
        with pytest.raises(UpstreamTimeout, match="middle of a stream"):
            await within(anext(reply.chunks))
        waited = time.monotonic() - started
        await within(dropped.wait())

    assert 0.25 <= waited < WAIT / 2  # the narrowed timeout, not a default (WAIT)


async def test_total_deadline_cuts_a_steady_answer(make_client):
    """A steady answer (a byte every 0.1 s) with timeouts.total shorter than it: cut, and the
    connection dropped. timeouts.read stays the default, so a stall between two bytes cannot
    make the read timeout fire first."""
    async def respond(peer: Peer, request: Request) -> None:
        peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n")
        for byte in b"abcdef":
            await asyncio.sleep(0.1)  # the upstream's own pace, not a synchronisation
            peer.send(bytes([byte]))

    async with Upstream(serve(respond)) as server:
        client = make_client(total=0.35)
        with pytest.raises(UpstreamTimeout, match="timeouts.total"):
            await post(client, server)
        assert client.open == 0


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_total_deadline_fires_in_silence(make_client, stream):
    """Headers, then nothing: the deadline's own timer ends the wait (read and stream_idle are longer)."""
    dropped = asyncio.Event()

    async def respond(peer: Peer, request: Request) -> None:
        peer.send(chunked_head() if stream else b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
        await peer.until_closed()
        dropped.set()

    async with Upstream(serve(respond)) as server:
        client = make_client(total=0.3, read=30, stream_idle=30)
        with pytest.raises(UpstreamTimeout, match="timeouts.total"):
            reply = await post(client, server, stream=stream)
            await pieces(reply)
        await within(dropped.wait())


async def test_an_error_body_is_cut_at_max_error_bytes_and_its_connection_dropped(make_client):
    async def respond(peer: Peer, request: Request) -> None:
        if len(peer.server.requests) == 1:
            peer.send(answer(b"E" * 50_000, status="500 Internal Server Error"))
        else:
            peer.send(answer(b"fine"))

    async with Upstream(serve(respond)) as server:
        client = make_client(max_error_bytes=100)
        reply = await post(client, server)
        assert (reply.status, reply.body) == (500, b"E" * 100)
        assert (await post(client, server)).body == b"fine"
    assert [request.connection for request in server.requests] == [0, 1]  # the cut one was not reused


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_an_answer_over_max_response_bytes_is_refused(make_client, stream):
    async with Upstream(serve(lambda peer, request: peer.send(answer(b"x" * 10_000)))) as server:
        client = make_client(max_response_bytes=4096)
        with pytest.raises(UpstreamTooLarge, match="max_response_bytes"):
            reply = await post(client, server, stream=stream)
            await pieces(reply)
        assert client.open == 0


# -- failures before anything is sent ------------------------------------------------------------


async def test_connect_refused(make_client):
    """Nothing listening: UpstreamConnectError naming the provider without the URL's secrets; the slot is returned."""
    client = make_client(max_connections=1)
    url = f"http://user:hunter2@127.0.0.1:{free_port()}/v1/chat?key=qs-secret"
    for _ in range(2):  # a leaked slot would make the second try a pool timeout
        with pytest.raises(UpstreamConnectError) as caught:
            await within(client.post(PROVIDER, url, {}, b"{}", stream=False))
        message = str(caught.value)
        assert repr(PROVIDER) in message
        for secret in ("hunter2", "user", "qs-secret"):
            assert secret not in message
    assert client.open == 0


async def test_not_an_http_url(make_client):
    """A URL that is not http(s) is a connect error that shows no credentials."""
    client = make_client()
    with pytest.raises(UpstreamConnectError, match="Not an http") as caught:
        await client.post(PROVIDER, "ftp://user:hunter2@example.test/x", {}, b"", stream=False)
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"X-Bad": "a\r\nInjected: yes"}, id="crlf-in-value"),
        pytest.param({"X-Bad": "a\nInjected: yes"}, id="lf-in-value"),
        pytest.param({"X-Bad\r\nInjected": "yes"}, id="crlf-in-name"),
        pytest.param({"X-Bad: Injected": "yes"}, id="colon-in-name"),
        pytest.param({"X-Bad": "snow \u2603"}, id="not-latin-1"),
    ],
)
async def test_unsendable_header_fails_before_sending(make_client, headers):
    """A header that would break the request's framing is refused before any connection is made."""
    async with Upstream(serve(echo)) as server:
        client = make_client()
        with pytest.raises(UpstreamProtocolError):
            await within(client.post(PROVIDER, server.url(), headers, b"{}", stream=False))
        ok = await post(client, server)  # and the client is none the worse for it

    assert ok.body == b"re: {}"
    assert server.connections == 1
    assert len(server.requests) == 1
    assert "injected" not in server.requests[0].names()


# -- odd but valid answers -----------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_early_hints_are_skipped(make_client, stream):
    """A 103 Early Hints before the answer is skipped: the status, headers and body are the final answer's."""
    hints = b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
    final = answer(b"final", headers=(("Content-Type", "text/plain"),))
    async with Upstream(serve(lambda peer, request: peer.send(hints + final))) as server:
        client = make_client()
        reply = await post(client, server, stream=stream)
        data = await within(reply.read())
        again = await post(client, server)

    assert reply.status == 200
    assert data == b"final"
    assert reply.headers.get("Content-Type") == "text/plain"
    assert "link" not in reply.headers
    assert again.body == b"final"
    assert server.connections == 1


# -- cancellation and closing --------------------------------------------------------------------


async def test_cancelled_post_closes_its_connection_and_frees_the_slot(make_client):
    """Cancelling a post that waits for its answer closes that connection (the server sees it go)
    and gives back its slot: with max_connections=1 the next post succeeds on a new connection."""
    first_in = asyncio.Event()
    dropped = asyncio.Event()

    async def handler(peer: Peer) -> None:
        while (request := await peer.request()) is not None:
            if request.body == b"slow":
                first_in.set()
                await peer.until_closed()
                dropped.set()
                return
            echo(peer, request)

    async with Upstream(handler) as server:
        client = make_client(max_connections=1, pool=1.0)
        task = asyncio.create_task(post(client, server, b"slow"))
        await within(first_in.wait())
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await within(dropped.wait())
        reply = await post(client, server, b"next")

    assert reply.body == b"re: next"
    assert server.bodies() == [b"slow", b"next"]
    assert server.connections == 2


async def test_stream_closed_early_is_not_reused(make_client):
    """A stream closed before its end drops the connection (the rest is still on the wire): the server
    sees it closed and the next post opens a new connection."""
    dropped = asyncio.Event()

    async def handler(peer: Peer) -> None:
        while (request := await peer.request()) is not None:
            if request.body == b"long":
                peer.send(chunked_head() + chunk(b"data: first\n\n"))
                await peer.until_closed()
                dropped.set()
                return
            echo(peer, request)

    async with Upstream(handler) as server:
        client = make_client()
        reply = await post(client, server, b"long", stream=True)
        assert reply.chunks is not None
        assert await within(anext(reply.chunks)) == b"data: first\n\n"
        await reply.aclose()
        await within(dropped.wait())
        after = await post(client, server, b"after")

    assert after.body == b"re: after"
    assert server.connections == 2


async def test_stream_read_to_the_end_is_reused(make_client):
    """A stream read to its end (then closed, which is harmless) leaves the connection for the next post."""

    def respond(peer: Peer, request: Request) -> None:
        peer.send(chunked_head() + chunk(b"data: a\n\n") + chunk(b"data: b\n\n") + LAST_CHUNK)

    async with Upstream(serve(respond)) as server:
        client = make_client()
        reply = await post(client, server, stream=True)
        assert b"".join(await pieces(reply)) == b"data: a\n\ndata: b\n\n"
        await reply.aclose()
        second = await post(client, server, stream=True)
        assert b"".join(await pieces(second)) == b"data: a\n\ndata: b\n\n"
        await second.aclose()

    assert server.connections == 1
    assert len(server.requests) == 2


async def test_aclose_drops_idle_connections_and_refuses_new_posts(make_client):
    """After aclose the idle connection is gone (the server sees it close) and posting fails cleanly."""
    dropped = asyncio.Event()

    async def handler(peer: Peer) -> None:
        while (request := await peer.request()) is not None:
            echo(peer, request)
        dropped.set()

    async with Upstream(handler) as server:
        client = make_client()
        await post(client, server)
        await client.aclose()
        await within(dropped.wait())
        with pytest.raises(UpstreamConnectError, match="closed"):
            await post(client, server)

    assert server.connections == 1


# -- TLS -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    return context


async def test_tls_with_trusted_ca(make_client, ca, server_tls):
    """https with the server's CA trusted works, names the host in the request and keeps the connection."""
    context = ssl.create_default_context()
    ca.configure_trust(context)
    async with Upstream(serve(echo), ssl_context=server_tls) as server:
        client = make_client(ssl_context=context)
        url = server.url(host="localhost")
        first = await within(client.post(PROVIDER, url, {}, b"one", stream=False))
        second = await within(client.post(PROVIDER, url, {}, b"two", stream=True))
        streamed = b"".join(await pieces(second))

    assert (first.status, first.body, streamed) == (200, b"re: one", b"re: two")
    assert server.requests[0].headers["host"] == f"localhost:{server.port}"
    assert server.connections == 1


async def test_tls_with_untrusted_certificate_is_a_connect_error(make_client, server_tls):
    """A certificate the client's roots do not vouch for is a connect error; no request is sent."""
    async with Upstream(serve(echo), ssl_context=server_tls) as server:
        client = make_client()  # the system's roots, which do not include the test CA
        with pytest.raises(UpstreamConnectError, match=PROVIDER):
            await within(client.post(PROVIDER, server.url(host="localhost"), {}, b"{}", stream=False))

    assert server.requests == []
    assert client.open == 0


# -- big bodies and back-pressure ----------------------------------------------------------------

BIG = os.urandom(2 * 1024 * 1024)
PIECE = 64 * 1024


def send_big(peer: Peer, request: Request) -> None:
    """BIG as a chunked stream of 64 KiB pieces."""
    peer.send(chunked_head())
    for start in range(0, len(BIG), PIECE):
        peer.send(chunk(BIG[start : start + PIECE]))
    peer.send(LAST_CHUNK)


async def test_big_stream_with_slow_consumer_pauses_reading(make_client):
    """2 MiB streamed to a consumer that does not read: the client stops reading the socket once the
    unread data passes the high-water mark (and the buffer stops growing); then every byte arrives
    intact and the connection is reused."""
    async with Upstream(serve(send_big)) as server:
        client = make_client()
        reply = await post(client, server, stream=True)
        conn = connection_of(reply)
        await wait_until(lambda: conn.paused, "the client paused reading")
        held = conn.buffered
        assert HIGH_WATER < held <= 2 * HIGH_WATER  # at most one socket read (256 KiB) past the mark
        await asyncio.sleep(0.05)  # room for more data to come in, were reading not paused
        assert conn.buffered == held
        data = b"".join(await pieces(reply))
        assert not conn.paused
        again = await post(client, server, stream=True)
        assert b"".join(await pieces(again)) == BIG

    assert len(data) == len(BIG)
    assert data == BIG
    assert server.connections == 1


async def test_paused_stream_outlasts_stream_idle(make_client):
    """Back-pressure is not silence: a consumer slower than stream_idle while reading is paused still
    gets the whole stream."""
    async with Upstream(serve(send_big)) as server:
        client = make_client(stream_idle=0.2)
        reply = await post(client, server, stream=True)
        conn = connection_of(reply)
        await wait_until(lambda: conn.paused, "the client paused reading")
        await asyncio.sleep(0.3)  # the consumer dawdles longer than stream_idle
        data = b"".join(await pieces(reply))

    assert data == BIG


@pytest.mark.parametrize("framing", ["length", "chunked"])
async def test_big_whole_answer(make_client, framing):
    """A whole (not streamed) answer larger than the high-water mark arrives complete."""

    def respond(peer: Peer, request: Request) -> None:
        if framing == "length":
            peer.send(answer(BIG, headers=(("Content-Type", "application/octet-stream"),)))
        else:
            send_big(peer, request)

    async with Upstream(serve(respond)) as server:
        client = make_client(read=1.0)
        reply = await post(client, server)
        again = await post(client, server)

    assert reply.body == BIG
    assert again.body == BIG
    assert server.connections == 1


async def test_a_stream_arms_one_idle_timer_not_one_per_chunk(make_client):
    """Forty chunks, each waited for: the idle timer is armed once for the exchange (it re-arms
    itself from the last byte's time), not set and cancelled around every wait."""
    sent = [b"data: %d\n\n" % i for i in range(40)]
    received = [asyncio.Event() for _ in sent]
    armed = []
    at = Timers.at

    def counting_at(timers: Timers, when: float, callback: Any, arg: Any = None) -> list[Any]:
        if getattr(callback, "__name__", "") == "_check_idle":
            armed.append(when)
        return at(timers, when, callback, arg)

    async def respond(peer: Peer, request: Request) -> None:
        peer.send(chunked_head())
        for piece, got in zip(sent, received):
            peer.send(chunk(piece))
            await within(got.wait())
        peer.send(LAST_CHUNK)

    async with Upstream(serve(respond)) as server:
        client = make_client(stream_idle=30)
        Timers.at = counting_at  # type: ignore[method-assign]
        try:
            reply = await post(client, server, stream=True)
            got = await read_in_lockstep(reply, received)
        finally:
            Timers.at = at  # type: ignore[method-assign]

    assert got == sent
    assert len(armed) == 1
