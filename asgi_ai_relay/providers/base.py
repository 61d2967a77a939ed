"""What every provider is: one ``send`` that returns a whole or streamed upstream answer.

A provider knows its endpoint URL, its auth header and its wire format; it knows nothing of
the caller. The HTTP client (:mod:`asgi_ai_relay.transport`) turns network failures into the
relay's own errors; a provider turns an error status into :class:`UpstreamStatusError`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import orjson

from ..config import ModelConfig, ProviderConfig, Timeouts
from ..errors import UpstreamStatusError
from ..transport import UpstreamHttp, UpstreamReply

__all__ = ["HttpProvider", "Provider", "UpstreamResponse", "parse_retry_after"]


#: What ``Provider.send`` returns: status, headers, and ``body`` or ``chunks``.
UpstreamResponse = UpstreamReply


class Provider:
    """Base of all providers. ``format`` names the wire format the provider speaks."""

    format: str = "openai"

    def __init__(self, config: ProviderConfig) -> None:
        self.config = config
        self.name = config.name

    async def send(self, model: ModelConfig, body: dict[str, Any], *, stream: bool) -> UpstreamResponse:
        """Send ``body`` (already in this provider's format, model already rewritten).

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


class HttpProvider(Provider):
    """A provider reached over HTTP with the relay's shared, pooled client."""

    def __init__(self, config: ProviderConfig, client: UpstreamHttp, timeouts: Timeouts) -> None:
        super().__init__(config)
        self.client = client
        self.base_headers = self.auth_headers() | {"content-type": "application/json"} | dict(config.headers)

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

    async def send(self, model: ModelConfig, body: dict[str, Any], *, stream: bool) -> UpstreamResponse:
        headers = self.base_headers | dict(model.headers) if model.headers else self.base_headers
        reply = await self.client.post(self.name, self.url(model, stream), headers, orjson.dumps(body), stream=stream)
        if reply.status >= 400:
            try:
                raw = await reply.read()
            finally:
                await reply.aclose()
            self.raise_for_status(reply.status, reply.headers, raw)
        return reply

    def raise_for_status(self, status: int, headers: Mapping[str, str], raw: bytes) -> None:
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError:
            payload = None
        message, code = self.error_message(payload, raw)
        raise UpstreamStatusError(
            f"Provider {self.name!r} answered {status}: {self.scrub(message)}",
            upstream_status=status,
            upstream_code=code,
            retry_after=parse_retry_after(headers),
        )
