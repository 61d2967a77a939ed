"""A small HTTP proxy on 127.0.0.1 for the egress tests: ``CONNECT`` tunnels and plain forwarding.

``with EgressProxy(auth=("user", "secret")) as proxy:`` runs an asyncio server in a background
thread (its own loop) on a free port. Every request it gets is recorded in ``proxy.seen`` as a
:class:`ProxyRequest` before it is judged: a missing or wrong ``Proxy-Authorization`` gets 407,
``proxy.refuse = 403`` makes it refuse every request, and otherwise

* ``CONNECT host:port`` opens a TCP connection to ``127.0.0.1:port`` (whatever the host: the names
  the tests use resolve nowhere else, so an upstream under such a name is reachable only through
  this proxy), answers 200 and pipes bytes both ways;
* ``POST http://host:port/path`` is sent on to ``127.0.0.1:port`` in origin form, without its
  ``Proxy-Authorization`` and with ``connection: close``, and the answer is piped back.

Nothing leaves the loopback interface.
"""

from __future__ import annotations

import asyncio
import base64
import threading
from dataclasses import dataclass, field
from urllib.parse import urlsplit

__all__ = ["EgressProxy", "ProxyRequest"]


@dataclass
class ProxyRequest:
    method: str
    target: str
    headers: dict[str, str] = field(default_factory=dict)


class EgressProxy:
    def __init__(self, *, auth: tuple[str, str] | None = None) -> None:
        self.auth = auth
        self.refuse = 0
        self.seen: list[ProxyRequest] = []
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="egress-proxy", daemon=True)
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        """``http://[user:password@]127.0.0.1:PORT``."""
        credentials = f"{self.auth[0]}:{self.auth[1]}@" if self.auth else ""
        return f"http://{credentials}127.0.0.1:{self.port}"

    def __enter__(self) -> EgressProxy:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        future.result(5)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    @property
    def connects(self) -> list[ProxyRequest]:
        return [r for r in self.seen if r.method == "CONNECT"]

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        self.seen.append(ProxyRequest(method, target, headers))
        if self.refuse:
            writer.write(f"HTTP/1.1 {self.refuse} Refused\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".encode())
            return
        if self.auth is not None:
            expected = "Basic " + base64.b64encode(f"{self.auth[0]}:{self.auth[1]}".encode()).decode()
            if headers.get("proxy-authorization") != expected:
                writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\nproxy-authenticate: Basic\r\n"
                             b"content-length: 0\r\nconnection: close\r\n\r\n")
                return
        if method == "CONNECT":
            port = int(target.rpartition(":")[2])
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await self._pipe(reader, writer, up_reader, up_writer)
            return
        parts = urlsplit(target)
        if parts.scheme != "http" or parts.port is None:
            writer.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", parts.port)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        kept = [line for line in lines[1:] if line and line.partition(":")[0].strip().lower()
                not in ("proxy-authorization", "connection")]
        up_writer.write(f"{method} {path} HTTP/1.1\r\n".encode("latin-1")
                        + "".join(f"{line}\r\n" for line in kept).encode("latin-1") + b"connection: close\r\n\r\n")
        await self._pipe(reader, writer, up_reader, up_writer)

    async def _pipe(self, reader, writer, up_reader, up_writer) -> None:
        async def copy(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except ConnectionError:
                pass
            finally:
                if sink.can_write_eof():
                    try:
                        sink.write_eof()
                    except OSError:
                        pass

        try:
            await asyncio.gather(copy(reader, up_writer), copy(up_reader, writer))
        finally:
            up_writer.close()
