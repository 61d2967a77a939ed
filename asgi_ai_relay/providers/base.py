"""What every provider is: one ``send`` that returns a whole or streamed upstream answer.

A provider knows its endpoint URL, its auth header and its wire format; it knows nothing of
the caller. The HTTP client (:mod:`asgi_ai_relay.transport`) turns network failures into the
relay's own errors and bounds what an answer may be (:mod:`asgi_ai_relay.reply`); a provider
turns every answer that is not 2xx into an error (an error status into
:class:`UpstreamStatusError`, a redirect, which is never followed, into
:class:`UpstreamRedirect`) and refuses a stream that is not ``text/event-stream``. Every string
it copies from an answer is scrubbed of the upstream keys (:mod:`asgi_ai_relay.redact`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from typing import Any

import orjson

from .. import redact
from ..config import ModelConfig, ProviderConfig, Timeouts
from ..errors import UpstreamProtocolError, UpstreamRedirect, UpstreamStatusError
from ..reply import UpstreamHttp, UpstreamReply
from ..retry import parse_retry_after
from .credentials import TokenSource, azure_fetcher, google_fetcher

__all__ = ["HttpProvider", "Provider", "UpstreamResponse", "parse_retry_after"]

# parse_retry_after lives in ..retry, which holds waits to finite bounds; it is re-exported here.


#: What ``Provider.send`` returns: status, headers, and ``body`` or ``chunks``.
UpstreamResponse = UpstreamReply


class Provider:
    """Base of all providers. ``format`` names the wire format the provider speaks."""

    format: str = "openai"
    #: Whether :meth:`embed` is available (``POST /v1/embeddings``).
    embeds: bool = False
    #: Whether the provider serves the Responses API itself (:meth:`send_responses`).
    native_responses: bool = False

    def __init__(self, config: ProviderConfig) -> None:
        self.config = config
        self.name = config.name
        for secret in self.secrets():
            redact.register(secret)

    async def send(
        self, model: ModelConfig, body: dict[str, Any], *, stream: bool, headers: Mapping[str, str] | None = None
    ) -> UpstreamResponse:
        """Send ``body`` (already in this provider's format, model already rewritten).

        :param headers: inbound headers the translation forwards (``anthropic-beta``...);
            they override the provider's defaults but never its credentials.
        :raises UpstreamError: on any failure; a non-2xx answer is :class:`UpstreamStatusError`.
        """
        raise NotImplementedError

    async def send_responses(
        self, model: ModelConfig, body: dict[str, Any], *, stream: bool, headers: Mapping[str, str] | None = None
    ) -> UpstreamResponse:
        """Send a Responses ``body`` (model already rewritten) to the provider's own Responses
        API; only where :attr:`native_responses` is set.

        :raises UpstreamError: as :meth:`send` does.
        """
        raise NotImplementedError

    async def embed(self, model: ModelConfig, body: dict[str, Any]) -> UpstreamResponse:
        """Send an embeddings ``body`` (already in this provider's format).

        :raises UpstreamError: as :meth:`send` does.
        """
        raise NotImplementedError

    def secrets(self) -> tuple[str, ...]:
        """Values that must never reach a caller or a log line."""
        key = self.config.api_key
        return (key.get(),) if key is not None and key.get() else ()

    def scrub(self, text: str) -> str:
        return redact.scrub(text)

    async def aclose(self) -> None:
        return None


class HttpProvider(Provider):
    """A provider reached over HTTP with the relay's shared, pooled client."""

    #: What a streamed answer must be (every provider family streams server-sent events).
    stream_content_type = "text/event-stream"

    def __init__(self, config: ProviderConfig, client: UpstreamHttp, timeouts: Timeouts) -> None:
        super().__init__(config)
        self.client = client
        #: An OAuth token fetched and refreshed off the request path (``auth = "entra"`` / ``"google"``).
        self.token = self.token_source()
        #: Whether each request needs :meth:`authorize` (a token, a signature); static keys do not.
        self.per_request_auth = self.token is not None
        self.base_headers = (
            self.default_headers | {"content-type": "application/json"} | dict(config.headers) | self.auth_headers()
        )

    def token_source(self) -> TokenSource | None:
        """The token source ``providers.NAME.auth`` asks for, if any.

        :raises ConfigurationError: when its library is missing or its credential cannot load.
        """
        cloud = self.config.cloud
        key = f"providers.{self.name}.credential"
        if cloud.auth == "entra":
            return TokenSource(self.name, azure_fetcher(cloud.credential, cloud.scope, key))
        if cloud.auth == "google":
            return TokenSource(self.name, google_fetcher(cloud.credential, cloud.scope, key))
        return None

    async def authorize(self, url: str, headers: Mapping[str, str], body: bytes) -> Mapping[str, str]:
        """``headers`` with what this one request needs to authenticate (a token, a signature).

        :raises UpstreamConnectError: when a token cannot be had.
        """
        if self.token is None:
            return headers
        return {**headers, "authorization": f"Bearer {await self.token.get()}"}

    def prepare(self, body: dict[str, Any], stream: bool) -> dict[str, Any]:
        """The body as this endpoint wants it, once translated (quirks, fields in the URL)."""
        return body

    async def aclose(self) -> None:
        if self.token is not None:
            await self.token.aclose()

    @property
    def default_headers(self) -> dict[str, str]:
        """Headers this API wants on every request, which configuration may override."""
        return {}

    def auth_headers(self) -> dict[str, str]:
        key = self.config.api_key
        return {"authorization": f"Bearer {key.get()}"} if key is not None else {}

    def url(self, model: ModelConfig, stream: bool) -> str:
        raise NotImplementedError

    def embeddings_url(self, model: ModelConfig) -> str:
        raise NotImplementedError

    async def embed(self, model: ModelConfig, body: dict[str, Any]) -> UpstreamResponse:
        return await self.post(self.embeddings_url(model), model, body, stream=False)

    def error_message(self, payload: Any, raw: bytes) -> tuple[str, str | None]:
        """The message and code inside a provider's error body (formats differ)."""
        error = payload.get("error") if isinstance(payload, dict) else None
        if isinstance(error, dict):
            code = error.get("code") or error.get("type") or error.get("status")
            return str(error.get("message") or raw[:500].decode("utf-8", "replace")), str(code) if code else None
        if isinstance(error, str):
            return error, None
        return raw[:500].decode("utf-8", "replace") or "no message", None

    def send(  # type: ignore[override]
        self, model: ModelConfig, body: dict[str, Any], *, stream: bool, headers: Mapping[str, str] | None = None
    ) -> Awaitable[UpstreamResponse]:
        # The post's coroutine itself: one frame less on every resumption of an upstream call.
        return self.post(self.url(model, stream), model, self.prepare(body, stream), stream=stream, headers=headers)

    async def post(
        self, url: str, model: ModelConfig, body: dict[str, Any], *, stream: bool, headers: Mapping[str, str] | None = None
    ) -> UpstreamResponse:
        """POST ``body`` to ``url`` with this provider's headers (credentials always last).

        :raises UpstreamError: on any failure and for every answer that is not a 2xx (see
            :meth:`raise_for_status`), or a stream that is not ``text/event-stream``.
        """
        sent: Mapping[str, str] = self.base_headers
        if model.headers or headers:
            sent = {**sent, **(headers or {}), **model.headers, **self.auth_headers()}
        data = orjson.dumps(body)
        if self.per_request_auth:
            sent = await self.authorize(url, sent, data)
        reply = await self.client.post(self.name, url, sent, data, stream=stream)
        if not 200 <= reply.status < 300:
            try:
                raw = await reply.read()
            finally:
                await reply.aclose()
            self.raise_for_status(reply.status, reply.headers, raw)
        if stream and not self._streams(reply.headers):
            await reply.aclose()
            kind = redact.scrub(str(reply.headers.get("content-type") or "none"))[:100]
            raise UpstreamProtocolError(
                f"Provider {self.name!r} answered a stream request with content-type {kind!r}, not {self.stream_content_type}."
            )
        return reply

    def _streams(self, headers: Mapping[str, str]) -> bool:
        kind = headers.get("content-type") or ""
        return kind.partition(";")[0].strip().lower() == self.stream_content_type

    def raise_for_status(self, status: int, headers: Mapping[str, str], raw: bytes) -> None:
        """:raises UpstreamRedirect: for a 3xx (never followed).
        :raises UpstreamStatusError: for a 4xx or 5xx (the caller sees what it may, scrubbed).
        :raises UpstreamProtocolError: for a status that is none of these.
        """
        if 300 <= status < 400:
            location = redact.scrub(str(headers.get("location") or "nowhere"))[:300]
            raise UpstreamRedirect(
                f"Provider {self.name!r} answered {status}, a redirect to {location}: redirects are not followed; "
                f"check providers.{self.name}.base_url."
            )
        if not 400 <= status <= 599:
            raise UpstreamProtocolError(f"Provider {self.name!r} answered status {status}, which HTTP does not define.")
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError:
            payload = None
        message, code = self.error_message(payload, raw)
        raise UpstreamStatusError(
            f"Provider {self.name!r} answered {status}: {redact.scrub(message)}",
            upstream_status=status,
            upstream_code=redact.scrub(code),
            retry_after=parse_retry_after(headers),
        )
