"""Claude on AWS Bedrock in Anthropic's own format: ``InvokeModel`` (``POST {base_url}/model/
{modelId}/invoke``) and ``InvokeModelWithResponseStream`` (``/invoke-with-response-stream``).

The body is an Anthropic Messages body without ``model`` and ``stream``, with
``anthropic_version: bedrock-2023-05-31`` and ``anthropic-beta`` headers moved into
``anthropic_beta``; so Anthropic callers keep what only Anthropic's format carries
(``cache_control``, ``thinking``...). A stream comes in AWS's event stream framing, each
``chunk`` message holding one Anthropic event as base64 JSON; it is handed on as Anthropic's
server-sent events. Signed with SigV4 or sent with a Bedrock API key, as :mod:`.bedrock`.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson

from ..config import ModelConfig, ProviderConfig, Timeouts
from ..errors import InvalidRequest, UpstreamProtocolError
from ..protocol.eventstream import EventStreamDecoder
from ..protocol.sse import encode_event
from ..reply import UpstreamHttp
from .anthropic import AnthropicProvider
from .base import UpstreamResponse
from .bedrock import bedrock_error, model_url, signer_for

__all__ = ["BEDROCK_ANTHROPIC_VERSION", "BedrockAnthropicProvider", "sse_from_invoke_stream"]

BEDROCK_ANTHROPIC_VERSION = "bedrock-2023-05-31"
#: Bedrock's stream exceptions as Anthropic's error types (which carry their status).
_ERROR_TYPES = {
    "throttlingException": "rate_limit_error",
    "serviceUnavailableException": "overloaded_error",
    "modelTimeoutException": "timeout_error",
    "validationException": "invalid_request_error",
}


class BedrockAnthropicProvider(AnthropicProvider):
    stream_content_type = "application/vnd.amazon.eventstream"

    def __init__(self, config: ProviderConfig, client: UpstreamHttp, timeouts: Timeouts) -> None:
        super().__init__(config, client, timeouts)
        self.signer = signer_for(self)
        self.per_request_auth = self.per_request_auth or self.signer is not None

    def auth_headers(self) -> dict[str, str]:
        key = self.config.api_key
        return {"authorization": f"Bearer {key.get()}"} if key is not None else {}

    @property
    def default_headers(self) -> dict[str, str]:
        return {"accept": "application/json"}

    def url(self, model: ModelConfig, stream: bool) -> str:
        return model_url(self.config.base_url, model, "invoke-with-response-stream" if stream else "invoke")

    def prepare(self, body: dict[str, Any], stream: bool) -> dict[str, Any]:
        out = {k: v for k, v in body.items() if k not in ("model", "stream")}
        if not str(out.get("anthropic_version", "")).startswith("bedrock-"):
            out["anthropic_version"] = BEDROCK_ANTHROPIC_VERSION
        return out

    async def authorize(self, url: str, headers: Mapping[str, str], body: bytes) -> Mapping[str, str]:
        if self.signer is None:
            return await super().authorize(url, headers, body)
        return await self.signer.sign(url, headers, body)

    async def send(
        self, model: ModelConfig, body: dict[str, Any], *, stream: bool, headers: Mapping[str, str] | None = None
    ) -> UpstreamResponse:
        beta = (headers or {}).get("anthropic-beta")
        if beta:
            body = {**body, "anthropic_beta": [b.strip() for b in beta.split(",") if b.strip()]}
        reply = await super().send(model, body, stream=stream)
        if reply.chunks is not None:
            reply.chunks = sse_from_invoke_stream(reply.chunks)
        return reply

    async def count_tokens(self, model: ModelConfig, body: dict[str, Any], headers: dict[str, str]) -> UpstreamResponse:
        """:raises InvalidRequest: Bedrock's InvokeModel has no Anthropic token counting."""
        raise InvalidRequest(
            f"Token counting is not available for model '{model.alias}' on provider {self.name!r} (Bedrock InvokeModel).",
            param="model",
            code="unsupported_endpoint",
        )

    def error_message(self, payload: Any, raw: bytes) -> tuple[str, str | None]:
        message = bedrock_error(payload)
        return (message, None) if message is not None else super().error_message(payload, raw)


async def sse_from_invoke_stream(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """InvokeModelWithResponseStream frames -> Anthropic server-sent events; an exception
    message becomes Anthropic's ``error`` event.

    :raises UpstreamProtocolError: for broken framing or a chunk that is not base64 JSON.
    """
    frames = EventStreamDecoder()
    async for piece in chunks:
        out = []
        for message in frames.feed(piece):
            try:
                payload = orjson.loads(message.payload)
                if message.message_type != "event":
                    kind = _ERROR_TYPES.get(message.event_type, "api_error")
                    error = {"type": "error", "error": {"type": kind, "message": str(payload.get("message"))}}
                    out.append(encode_event(orjson.dumps(error), "error"))
                    continue
                event = orjson.loads(base64.b64decode(payload["bytes"], validate=True))
                kind = event["type"]
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise UpstreamProtocolError("The provider sent a stream chunk that is not a base64 JSON event.") from exc
            out.append(encode_event(orjson.dumps(event), str(kind)))  # one line, whatever the spacing
        if out:
            yield b"".join(out)
    if frames.pending:
        raise UpstreamProtocolError("The provider's event stream ended inside a message.")
