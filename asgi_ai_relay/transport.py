"""The relay's one pooled upstream HTTP client, behind a narrow interface.

Three backends share the interface: the relay's own HTTP/1.1 client (``h1``, the default, in
:mod:`asgi_ai_relay.h1`), aiohttp, and httpx (used whenever a custom httpx transport is given,
e.g. a proxy). Each hands the raw bytes of an answer to the shared
:class:`~asgi_ai_relay.reply.BodyReader`, so all three decode and bound answers alike. The
upstream call is the relay's largest per-request cost, so the default is chosen by measurement:
one keep-alive call to a local upstream took about 54 us of CPU over a bare asyncio protocol,
183 us through aiohttp and about 600 us through httpx. Each backend maps its exceptions to the
relay's own in one place.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

from .config import HttpSettings, Timeouts
from .errors import ConfigurationError, UpstreamConnectError, UpstreamError, UpstreamProtocolError, UpstreamTimeout
from .h1 import H1Client
from .reply import BodyReader, Bounds, UpstreamHttp, UpstreamReply, with_accept_encoding

__all__ = ["AiohttpClient", "HttpxClient", "UpstreamHttp", "UpstreamReply", "make_client"]

# UpstreamHttp and UpstreamReply live in .reply (shared with .h1) and are re-exported here.


class AiohttpClient:
    def __init__(self, settings: HttpSettings, timeouts: Timeouts) -> None:
        try:
            import aiohttp
        except ImportError as exc:  # pragma: no cover - depends on the installation
            raise ConfigurationError('http.client = "aiohttp" needs aiohttp: pip install "asgi-ai-relay[aiohttp]"') from exc

        self._aiohttp = aiohttp
        self.bounds = Bounds(settings, timeouts)
        connector = aiohttp.TCPConnector(
            limit=settings.max_connections, limit_per_host=0, keepalive_timeout=settings.keepalive_expiry
        )
        # Bodies are decoded by the shared BodyReader, which bounds decompression.
        self.session = aiohttp.ClientSession(connector=connector, trust_env=False, auto_decompress=False)
        connect = timeouts.pool + timeouts.connect
        self.whole = aiohttp.ClientTimeout(total=timeouts.total, connect=connect, sock_connect=timeouts.connect, sock_read=timeouts.read)
        self.streaming = aiohttp.ClientTimeout(total=timeouts.total, connect=connect, sock_connect=timeouts.connect, sock_read=timeouts.stream_idle)

    async def post(self, provider: str, url: str, headers: Mapping[str, str], body: bytes, *, stream: bool) -> UpstreamReply:
        deadline = self.bounds.deadline()
        with self.errors(provider, deadline):
            response = await self.session.post(
                url, data=body, headers=with_accept_encoding(headers), timeout=self.streaming if stream else self.whole,
                allow_redirects=False,
            )
        try:
            reader = BodyReader(self.bounds, provider, response.status, response.headers, stream=stream, deadline=deadline)
        except BaseException:
            response.close()
            raise
        if not stream:
            try:
                whole = b"".join([piece async for piece in self._chunks(provider, response, reader)])
            except BaseException:
                response.close()
                raise
            return UpstreamReply(response.status, response.headers, whole)
        return UpstreamReply(response.status, response.headers, chunks=self._chunks(provider, response, reader), close=response.release)

    async def _chunks(self, provider: str, response: Any, reader: BodyReader) -> AsyncIterator[bytes]:
        deadline = reader.deadline
        with self.errors(provider, deadline):
            async for raw in response.content.iter_any():
                piece = reader.feed(raw)
                if piece:
                    yield piece
                if reader.full:
                    response.close()  # the rest of an error body stays unread: not reusable
                    return
            tail = reader.end()
        if tail:
            yield tail
        # release() keeps the connection for reuse only when the body was read to the end.
        response.release()

    @contextlib.contextmanager
    def errors(self, provider: str, deadline: float) -> Iterator[None]:
        aiohttp = self._aiohttp
        try:
            yield
        except UpstreamError:
            raise
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError) as exc:
            if time.monotonic() >= deadline:  # aiohttp's total timeout: timeouts.total
                raise self.bounds.late(provider) from exc
            raise UpstreamTimeout(f"Provider {provider!r} did not answer in time.") from exc
        except aiohttp.ClientConnectorError as exc:
            raise UpstreamConnectError(f"Could not connect to provider {provider!r}.") from exc
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, aiohttp.ClientResponseError, ConnectionError) as exc:
            raise UpstreamProtocolError(f"Provider {provider!r} closed the connection unexpectedly.") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamConnectError(f"Request to provider {provider!r} failed ({type(exc).__name__}).") from exc

    async def aclose(self) -> None:
        await self.session.close()


class HttpxClient:
    def __init__(self, settings: HttpSettings, timeouts: Timeouts, transport: Any = None) -> None:
        import httpx

        self._httpx = httpx
        self.client = httpx.AsyncClient(
            transport=transport,
            limits=httpx.Limits(
                max_connections=settings.max_connections,
                max_keepalive_connections=settings.max_keepalive,
                keepalive_expiry=settings.keepalive_expiry,
            ),
            follow_redirects=False,
            trust_env=False,
        )
        self.bounds = Bounds(settings, timeouts)
        self.whole = httpx.Timeout(timeouts.read, connect=timeouts.connect, pool=timeouts.pool)
        self.streaming = httpx.Timeout(timeouts.stream_idle, connect=timeouts.connect, pool=timeouts.pool)

    async def post(self, provider: str, url: str, headers: Mapping[str, str], body: bytes, *, stream: bool) -> UpstreamReply:
        deadline = self.bounds.deadline()
        request = self.client.build_request(
            "POST", url, content=body, headers=with_accept_encoding(headers), timeout=self.streaming if stream else self.whole
        )
        try:
            with self.errors(provider):
                async with asyncio.timeout(self.bounds.total):  # httpx has no timeout of its own for it
                    response = await self.client.send(request, stream=True)
        except TimeoutError:
            raise self.bounds.late(provider) from None
        try:
            reader = BodyReader(self.bounds, provider, response.status_code, response.headers, stream=stream, deadline=deadline)
        except BaseException:
            await response.aclose()
            raise
        chunks = self._chunks(provider, response, reader, deadline)
        if not stream:
            try:
                whole = b"".join([piece async for piece in chunks])
            finally:
                await response.aclose()
            return UpstreamReply(response.status_code, response.headers, whole)
        return UpstreamReply(response.status_code, response.headers, chunks=chunks, close=response.aclose)

    async def _chunks(self, provider: str, response: Any, reader: BodyReader, deadline: float) -> AsyncIterator[bytes]:
        raw = response.aiter_raw()
        with self.errors(provider):
            while True:
                try:
                    # httpx bounds each read, not the answer: the deadline is armed around each wait.
                    async with asyncio.timeout(deadline - time.monotonic()):
                        data = await raw.__anext__()
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    raise self.bounds.late(provider) from None
                piece = reader.feed(data)
                if piece:
                    yield piece
                if reader.full:
                    return
            tail = reader.end()
        if tail:
            yield tail

    @contextlib.contextmanager
    def errors(self, provider: str) -> Iterator[None]:
        httpx = self._httpx
        try:
            yield
        except UpstreamError:
            raise
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout(f"Provider {provider!r} did not answer in time ({type(exc).__name__}).") from exc
        except httpx.ConnectError as exc:
            raise UpstreamConnectError(f"Could not connect to provider {provider!r}.") from exc
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
            raise UpstreamProtocolError(f"Provider {provider!r} closed the connection unexpectedly.") from exc
        except httpx.HTTPError as exc:
            raise UpstreamConnectError(f"Request to provider {provider!r} failed ({type(exc).__name__}).") from exc

    async def aclose(self) -> None:
        await self.client.aclose()


def make_client(settings: HttpSettings, timeouts: Timeouts, transport: Any = None) -> UpstreamHttp:
    """``http.client`` (``h1`` by default); httpx whenever an httpx transport is given."""
    if transport is not None or settings.client == "httpx":
        return HttpxClient(settings, timeouts, transport)
    if settings.client == "aiohttp":
        return AiohttpClient(settings, timeouts)
    return H1Client(settings, timeouts)
