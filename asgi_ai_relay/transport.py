"""The relay's one pooled upstream HTTP client, behind a narrow interface.

Three backends share the interface: the relay's own HTTP/1.1 client (``h1``, the default, in
:mod:`asgi_ai_relay.h1`), aiohttp, and httpx (used whenever a custom httpx transport is given).
All three take their proxies and TLS settings, per provider, from one
:class:`~asgi_ai_relay.egress.EgressPolicy`. Each hands the raw bytes of an answer to the shared
:class:`~asgi_ai_relay.reply.BodyReader`, so all three decode and bound answers alike. The
upstream call is the relay's largest per-request cost, so the default is chosen by measurement:
one keep-alive call to a local upstream took about 54 us of CPU over a bare asyncio protocol,
183 us through aiohttp and about 600 us through httpx; over TLS, ``h1`` still takes 35-53% of
aiohttp's CPU per call (``benchmarks/tls_clients.py``, figures in docs/egress.md). Each backend
maps its exceptions to the relay's own in one place.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

from .config import HttpSettings, ProviderConfig, Timeouts
from .egress import EgressPolicy, Route, refused_certificate
from .errors import ConfigurationError, UpstreamConnectError, UpstreamError, UpstreamProtocolError, UpstreamTimeout
from .timers import within
from .h1 import H1Client
from .reply import BodyReader, Bounds, UpstreamHttp, UpstreamReply, with_accept_encoding

__all__ = ["AiohttpClient", "HttpxClient", "UpstreamHttp", "UpstreamReply", "make_client"]

# UpstreamHttp and UpstreamReply live in .reply (shared with .h1) and are re-exported here.


class AiohttpClient:
    def __init__(self, settings: HttpSettings, timeouts: Timeouts, egress: EgressPolicy | None = None) -> None:
        try:
            import aiohttp
        except ImportError as exc:  # pragma: no cover - depends on the installation
            raise ConfigurationError('http.client = "aiohttp" needs aiohttp: pip install "asgi-ai-relay[aiohttp]"') from exc

        self._aiohttp = aiohttp
        self.egress = egress if egress is not None else EgressPolicy(settings)
        self._options: dict[tuple[str, str], dict[str, Any]] = {}
        self._forward: dict[tuple[str, str], str] = {}
        self.bounds = Bounds(settings, timeouts)
        connector = aiohttp.TCPConnector(
            limit=settings.max_connections, limit_per_host=0, keepalive_timeout=settings.keepalive_expiry
        )
        # Bodies are decoded by the shared BodyReader, which bounds decompression. The proxy
        # comes from the egress policy (which reads the environment itself), per request.
        self.session = aiohttp.ClientSession(connector=connector, trust_env=False, auto_decompress=False)
        connect = timeouts.pool + timeouts.connect
        self.whole = aiohttp.ClientTimeout(total=timeouts.total, connect=connect, sock_connect=timeouts.connect, sock_read=timeouts.read)
        self.streaming = aiohttp.ClientTimeout(total=timeouts.total, connect=connect, sock_connect=timeouts.connect, sock_read=timeouts.stream_idle)

    async def post(self, provider: str, url: str, headers: Mapping[str, str], body: bytes, *, stream: bool) -> UpstreamReply:
        deadline = self.bounds.deadline()
        options = self._options.get((provider, url)) or self._route(provider, url)
        sent = with_accept_encoding(headers)
        forward = self._forward.get((provider, url))
        if forward is not None:  # an http upstream behind a proxy: its credentials on the request
            sent = {**sent, "proxy-authorization": forward}
        with self.errors(provider, deadline, options.get("proxy")):
            response = await self.session.post(
                url, data=body, headers=sent, timeout=self.streaming if stream else self.whole,
                allow_redirects=False, **options,
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

    def _route(self, provider: str, url: str) -> dict[str, Any]:
        """aiohttp's proxy and TLS options for one provider's URL (kept for the next call)."""
        parts = urlsplit(url)
        tls = parts.scheme == "https"
        route = self.egress.route(provider, tls, parts.hostname or "", parts.port or (443 if tls else 80))
        options: dict[str, Any] = {"ssl": route.ssl} if tls else {}
        proxy = route.proxy
        if proxy is not None:
            options["proxy"] = proxy.url
            auth = proxy.authorization
            if auth is not None and tls:  # sent with CONNECT only
                options["proxy_headers"] = {"proxy-authorization": auth}
            elif auth is not None:
                self._forward[(provider, url)] = auth
        self._options[(provider, url)] = options
        return options

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
    def errors(self, provider: str, deadline: float, proxy: str | None = None) -> Iterator[None]:
        aiohttp = self._aiohttp
        via = f" through the proxy {urlsplit(proxy).netloc}" if proxy else ""
        try:
            yield
        except UpstreamError:
            raise
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError) as exc:
            if time.monotonic() >= deadline:  # aiohttp's total timeout: timeouts.total
                raise self.bounds.late(provider) from exc
            raise UpstreamTimeout(f"Provider {provider!r} did not answer in time.") from exc
        except aiohttp.ClientConnectorCertificateError as exc:
            reason = refused_certificate(exc.certificate_error) or type(exc.certificate_error).__name__
            raise UpstreamConnectError(f"Provider {provider!r}{via}: its TLS certificate was refused ({reason}).") from exc
        except aiohttp.ClientHttpProxyError as exc:
            raise UpstreamConnectError(
                f"Could not reach provider {provider!r}{via}: the proxy answered CONNECT with {exc.status}."
            ) from exc
        except aiohttp.ClientConnectorError as exc:
            raise UpstreamConnectError(f"Could not connect to provider {provider!r}{via}.") from exc
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, aiohttp.ClientResponseError, ConnectionError) as exc:
            raise UpstreamProtocolError(f"Provider {provider!r} closed the connection unexpectedly.") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamConnectError(f"Request to provider {provider!r} failed ({type(exc).__name__}).") from exc

    async def aclose(self) -> None:
        await self.session.close()


class HttpxClient:
    """httpx: one ``AsyncClient`` per egress route (proxy and TLS), or one around ``transport``."""

    def __init__(
        self, settings: HttpSettings, timeouts: Timeouts, transport: Any = None, egress: EgressPolicy | None = None
    ) -> None:
        import httpx

        self._httpx = httpx
        self.settings = settings
        self.transport = transport
        self.egress = egress if egress is not None else EgressPolicy(settings)
        self.clients: dict[Route | None, Any] = {}
        self.bounds = Bounds(settings, timeouts)
        self.whole = httpx.Timeout(timeouts.read, connect=timeouts.connect, pool=timeouts.pool)
        self.streaming = httpx.Timeout(timeouts.stream_idle, connect=timeouts.connect, pool=timeouts.pool)

    def client(self, provider: str, url: str) -> Any:
        """The ``AsyncClient`` of ``provider``'s route to ``url`` (a given transport: always its one)."""
        route = None
        if self.transport is None:
            parts = urlsplit(url)
            tls = parts.scheme == "https"
            route = self.egress.route(provider, tls, parts.hostname or "", parts.port or (443 if tls else 80))
        client = self.clients.get(route)
        if client is None:
            httpx, settings = self._httpx, self.settings
            options: dict[str, Any] = {}
            if route is not None:
                if route.ssl is not None:
                    options["verify"] = route.ssl
                if route.proxy is not None:
                    auth = route.proxy.authorization
                    options["proxy"] = httpx.Proxy(route.proxy.url, headers={"proxy-authorization": auth} if auth else None)
            client = self.clients[route] = httpx.AsyncClient(
                transport=self.transport,
                limits=httpx.Limits(
                    max_connections=settings.max_connections,
                    max_keepalive_connections=settings.max_keepalive,
                    keepalive_expiry=settings.keepalive_expiry,
                ),
                follow_redirects=False,
                trust_env=False,
                **options,
            )
        return client

    async def post(self, provider: str, url: str, headers: Mapping[str, str], body: bytes, *, stream: bool) -> UpstreamReply:
        deadline = self.bounds.deadline()
        client = self.client(provider, url)
        request = client.build_request(
            "POST", url, content=body, headers=with_accept_encoding(headers), timeout=self.streaming if stream else self.whole
        )
        try:
            with self.errors(provider):
                with within(self.bounds.total):  # httpx has no timeout of its own for it
                    response = await client.send(request, stream=True)
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
                    with within(deadline - time.monotonic()):
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
        except httpx.ProxyError as exc:  # its text is the proxy's status line
            raise UpstreamConnectError(f"Could not reach provider {provider!r}: the proxy answered CONNECT with {exc}.") from exc
        except httpx.ConnectError as exc:
            reason = refused_certificate(exc)
            if reason is not None:
                raise UpstreamConnectError(f"Provider {provider!r}: its TLS certificate was refused ({reason}).") from exc
            raise UpstreamConnectError(f"Could not connect to provider {provider!r}.") from exc
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
            raise UpstreamProtocolError(f"Provider {provider!r} closed the connection unexpectedly.") from exc
        except httpx.HTTPError as exc:
            raise UpstreamConnectError(f"Request to provider {provider!r} failed ({type(exc).__name__}).") from exc

    async def aclose(self) -> None:
        clients, self.clients = list(self.clients.values()), {}
        for client in clients:
            await client.aclose()


def make_client(
    settings: HttpSettings, timeouts: Timeouts, transport: Any = None, providers: Mapping[str, ProviderConfig] | None = None
) -> UpstreamHttp:
    """``http.client`` (``h1`` by default); httpx whenever an httpx transport is given.

    :param providers: whose proxy and TLS keys apply to their calls (see :mod:`.egress`).
    :raises ConfigurationError: for egress settings that cannot be used (see :class:`EgressPolicy`).
    """
    egress = EgressPolicy(settings, providers)
    if transport is not None or settings.client == "httpx":
        return HttpxClient(settings, timeouts, transport, egress)
    if settings.client == "aiohttp":
        return AiohttpClient(settings, timeouts, egress)
    return H1Client(settings, timeouts, egress=egress)
