"""What every provider is: one ``send`` that returns a whole or streamed upstream answer.

A provider knows its endpoint URL, its auth header and its wire format; it knows nothing of
the caller. Third-party exceptions (httpx's) become the relay's own in :func:`upstream_errors`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import httpx
import orjson

from ..config import ModelConfig, ProviderConfig, Timeouts
from ..errors import (
    UpstreamConnectError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeout,
)

__all__ = ["HttpProvider", "Provider", "UpstreamResponse", "parse_retry_after", "upstream_errors"]


class UpstreamResponse:
    """A provider's successful answer: ``body`` when whole, ``chunks`` when streamed.

    ``aclose`` releases the connection; the relay calls it once it is done, including when the
    client went away mid-stream.
    """

    __slots__ = ("_response", "body", "chunks", "headers", "status")

    def __init__(
        self,
        status: int,
        headers: Mapping[str, str],
        body: bytes = b"",
        chunks: AsyncIterator[bytes] | None = None,
        response: httpx.Response | None = None,
    ) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.chunks = chunks
        self._response = response

    async def aclose(self) -> None:
        if self._response is not None:
            await self._response.aclose()


class Provider:
    """Base of all providers. ``format`` names the wire format the provider speaks."""

    format: str = "openai"

    def __init__(self, config: ProviderConfig) -> None:
        self.config = config
        self.name = config.name

    async def send(
        self, model: ModelConfig, body: dict[str, Any], *, stream: bool, headers: Mapping[str, str] | None = None
    ) -> UpstreamResponse:
        """Send ``body`` (already in this provider's format, model already rewritten).

        :param headers: inbound headers the translation forwards (``anthropic-beta``...);
            they override the provider's defaults but never its credentials.
        :raises UpstreamError: on any failure; a non-2xx answer is :class:`UpstreamStatusError`.
        """
        raise NotImplementedError

    def secrets(self) -> tuple[str, ...]:
        """Values that must never reach a caller or a log line."""
        key = self.config.api_key
        return (key.get(),) if key is not None and key.get() else ()

    def scrub(self, text: str) -> str:
        for secret in self.secrets():
            text = text.replace(secret, "[redacted]")
        return text

    async def aclose(self) -> None:
        return None


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait, from ``retry-after-ms`` or ``retry-after`` (seconds form)."""
    value = headers.get("retry-after-ms")
    if value:
        with contextlib.suppress(ValueError):
            return max(0.0, float(value) / 1000)
    value = headers.get("retry-after")
    if value:
        with contextlib.suppress(ValueError):
            return max(0.0, float(value))
    return None


@contextlib.contextmanager
def upstream_errors(provider: str, scrub: Any = None) -> Iterator[None]:
    """Turn httpx's exceptions into the relay's own, never quoting a URL that may hold a key."""
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


class HttpProvider(Provider):
    """A provider reached over HTTP with the relay's shared, pooled client."""

    def __init__(self, config: ProviderConfig, client: httpx.AsyncClient, timeouts: Timeouts) -> None:
        super().__init__(config)
        self.client = client
        self.whole_timeout = httpx.Timeout(timeouts.read, connect=timeouts.connect, pool=timeouts.pool)
        self.stream_timeout = httpx.Timeout(timeouts.stream_idle, connect=timeouts.connect, pool=timeouts.pool)
        self.base_headers = (
            self.default_headers | {"content-type": "application/json"} | dict(config.headers) | self.auth_headers()
        )

    @property
    def default_headers(self) -> dict[str, str]:
        """Headers this API wants on every request, which configuration may override."""
        return {}

    def auth_headers(self) -> dict[str, str]:
        key = self.config.api_key
        return {"authorization": f"Bearer {key.get()}"} if key is not None else {}

    def url(self, model: ModelConfig, stream: bool) -> str:
        raise NotImplementedError

    def error_message(self, payload: Any, raw: bytes) -> tuple[str, str | None]:
        """The message and code inside a provider's error body (formats differ)."""
        error = payload.get("error") if isinstance(payload, dict) else None
        if isinstance(error, dict):
            code = error.get("code") or error.get("type") or error.get("status")
            return str(error.get("message") or raw[:500].decode("utf-8", "replace")), str(code) if code else None
        if isinstance(error, str):
            return error, None
        return raw[:500].decode("utf-8", "replace") or "no message", None

    async def send(
        self, model: ModelConfig, body: dict[str, Any], *, stream: bool, headers: Mapping[str, str] | None = None
    ) -> UpstreamResponse:
        return await self.post(self.url(model, stream), model, body, stream=stream, headers=headers)

    async def post(
        self, url: str, model: ModelConfig, body: dict[str, Any], *, stream: bool, headers: Mapping[str, str] | None = None
    ) -> UpstreamResponse:
        """POST ``body`` to ``url`` with this provider's headers (credentials always last)."""
        sent = self.base_headers
        if model.headers or headers:
            sent = {**sent, **(headers or {}), **model.headers, **self.auth_headers()}
        request = self.client.build_request(
            "POST",
            url,
            content=orjson.dumps(body),
            headers=sent,
            timeout=self.stream_timeout if stream else self.whole_timeout,
        )
        with upstream_errors(self.name):
            response = await self.client.send(request, stream=stream)
            if not stream:
                if response.status_code >= 400:
                    self.raise_for_status(response, response.content)
                return UpstreamResponse(response.status_code, response.headers, response.content)
            if response.status_code >= 400:
                try:
                    raw = await response.aread()
                finally:
                    await response.aclose()
                self.raise_for_status(response, raw)
            return UpstreamResponse(
                response.status_code, response.headers, chunks=self._chunks(response), response=response
            )
        raise AssertionError("unreachable")  # pragma: no cover

    async def _chunks(self, response: httpx.Response) -> AsyncIterator[bytes]:
        with upstream_errors(self.name):
            async for chunk in response.aiter_bytes():
                yield chunk

    def raise_for_status(self, response: httpx.Response, raw: bytes) -> None:
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError:
            payload = None
        message, code = self.error_message(payload, raw)
        raise UpstreamStatusError(
            f"Provider {self.name!r} answered {response.status_code}: {self.scrub(message)}",
            upstream_status=response.status_code,
            upstream_code=code,
            retry_after=parse_retry_after(response.headers),
        )
