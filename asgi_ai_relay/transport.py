"""The relay's one pooled upstream HTTP client, behind a narrow interface.

Three backends share the interface: the relay's own HTTP/1.1 client (``h1``, the default, in
:mod:`asgi_ai_relay.h1`), aiohttp, and httpx (used whenever a custom httpx transport is given,
e.g. a proxy). The upstream call is the relay's largest per-request cost, so the default is
chosen by measurement: one keep-alive call to a local upstream took about 54 us of CPU over a
bare asyncio protocol, 183 us through aiohttp and about 600 us through httpx. Each backend maps
its exceptions to the relay's own in one place.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any, Protocol

from .config import HttpSettings, Timeouts
from .errors import ConfigurationError, UpstreamConnectError, UpstreamError, UpstreamProtocolError, UpstreamTimeout

__all__ = ["AiohttpClient", "HttpxClient", "UpstreamHttp", "UpstreamReply", "make_client"]


class UpstreamReply:
    """Status, headers (case-insensitive mapping) and either the whole body or its chunks."""

    __slots__ = ("_close", "body", "chunks", "headers", "status")

    def __init__(self, status: int, headers: Mapping[str, str], body: bytes = b"", chunks: AsyncIterator[bytes] | None = None, close: Any = None) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.chunks = chunks
        self._close = close

    async def read(self) -> bytes:
        """The whole body of a streamed reply (used for error bodies)."""
        if self.chunks is None:
            return self.body
        parts = [chunk async for chunk in self.chunks]
        return b"".join(parts)

    async def aclose(self) -> None:
        if self._close is not None:
            close, self._close = self._close, None
            result = close()
            if asyncio.iscoroutine(result):
                await result


class UpstreamHttp(Protocol):
    async def post(self, provider: str, url: str, headers: Mapping[str, str], body: bytes, *, stream: bool) -> UpstreamReply:
        """POST ``body``; a streamed reply must be closed with ``aclose``.

        :raises UpstreamError: for connection failures, timeouts and broken answers.
        """

    async def aclose(self) -> None: ...


class AiohttpClient:
    def __init__(self, settings: HttpSettings, timeouts: Timeouts) -> None:
        try:
            import aiohttp
        except ImportError as exc:  # pragma: no cover - depends on the installation
            raise ConfigurationError('http.client = "aiohttp" needs aiohttp: pip install "asgi-ai-relay[aiohttp]"') from exc

        self._aiohttp = aiohttp
        connector = aiohttp.TCPConnector(
            limit=settings.max_connections, limit_per_host=0, keepalive_timeout=settings.keepalive_expiry
        )
        self.session = aiohttp.ClientSession(connector=connector, trust_env=False, auto_decompress=True)
        self.whole = aiohttp.ClientTimeout(total=None, connect=timeouts.pool + timeouts.connect, sock_connect=timeouts.connect, sock_read=timeouts.read)
        self.streaming = aiohttp.ClientTimeout(total=None, connect=timeouts.pool + timeouts.connect, sock_connect=timeouts.connect, sock_read=timeouts.stream_idle)

    async def post(self, provider: str, url: str, headers: Mapping[str, str], body: bytes, *, stream: bool) -> UpstreamReply:
        with self.errors(provider):
            response = await self.session.post(
                url, data=body, headers=headers, timeout=self.streaming if stream else self.whole, allow_redirects=False
            )
            if not stream:
                try:
                    return UpstreamReply(response.status, response.headers, await response.read())
                finally:
                    response.release()
        # release() keeps the connection for reuse only when the body was read to the end.
        return UpstreamReply(response.status, response.headers, chunks=self._chunks(provider, response), close=response.release)

    async def _chunks(self, provider: str, response: Any) -> AsyncIterator[bytes]:
        with self.errors(provider):
            async for chunk in response.content.iter_any():
                yield chunk

    @contextlib.contextmanager
    def errors(self, provider: str) -> Iterator[None]:
        aiohttp = self._aiohttp
        try:
            yield
        except UpstreamError:
            raise
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError) as exc:
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
        self.whole = httpx.Timeout(timeouts.read, connect=timeouts.connect, pool=timeouts.pool)
        self.streaming = httpx.Timeout(timeouts.stream_idle, connect=timeouts.connect, pool=timeouts.pool)

    async def post(self, provider: str, url: str, headers: Mapping[str, str], body: bytes, *, stream: bool) -> UpstreamReply:
        request = self.client.build_request(
            "POST", url, content=body, headers=headers, timeout=self.streaming if stream else self.whole
        )
        with self.errors(provider):
            response = await self.client.send(request, stream=stream)
        if not stream:
            return UpstreamReply(response.status_code, response.headers, response.content)
        return UpstreamReply(response.status_code, response.headers, chunks=self._chunks(provider, response), close=response.aclose)

    async def _chunks(self, provider: str, response: Any) -> AsyncIterator[bytes]:
        with self.errors(provider):
            async for chunk in response.aiter_bytes():
                yield chunk

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
    from .h1 import H1Client

    return H1Client(settings, timeouts)
