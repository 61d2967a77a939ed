"""OpenAI Chat Completions streams as the hub sees them: provider SSE -> chunk dicts (decoder),
and chunk dicts -> the caller's SSE (encoder)."""

from __future__ import annotations

import time
from typing import Any, Protocol

import orjson

from .. import redact
from ..errors import UpstreamProtocolError, UpstreamStatusError
from ..types import Usage
from .openai import usage_from_body, usage_to_openai
from .sse import SSEEvent, SSESplitter, encode_event

__all__ = ["Decoder", "Encoder", "OpenAIDecoder", "OpenAIEncoder", "load_event", "stream_failure"]

_DONE = b"data: [DONE]\n\n"


class Decoder(Protocol):
    """Provider stream bytes -> OpenAI chunk dicts (without usage-only chunks)."""

    @property
    def usage(self) -> Usage | None:
        """The usage the provider reported so far (``None`` until it does)."""

    @property
    def done(self) -> bool:
        """Set once the provider's terminal event has arrived."""

    def feed(self, chunk: bytes) -> list[dict[str, Any]]: ...

    def close(self) -> list[dict[str, Any]]: ...


class Encoder(Protocol):
    """OpenAI chunk dicts -> the caller's stream bytes; ``finish`` writes the ending."""

    def encode(self, chunk: dict[str, Any]) -> bytes: ...

    def finish(self, usage: Usage | None) -> bytes: ...


def load_event(event: SSEEvent) -> Any:
    """The JSON of one event.

    :raises UpstreamProtocolError: when it is not JSON.
    """
    try:
        return orjson.loads(event.data)
    except orjson.JSONDecodeError as exc:
        raise UpstreamProtocolError("The provider sent a stream event that is not valid JSON.") from exc


def stream_failure(error: Any, status: Any = 502) -> UpstreamStatusError:
    """The relay error for an error event inside a provider's stream (its strings scrubbed of
    upstream keys; a status that is not an error status is 502)."""
    message = error.get("message") if isinstance(error, dict) else error
    code = error.get("type") or error.get("status") or error.get("code") if isinstance(error, dict) else None
    if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
        status = 502
    return UpstreamStatusError(
        f"The provider failed mid-stream: {redact.scrub(str(message))}",
        upstream_status=status,
        upstream_code=redact.scrub(str(code)) if code else None,
    )


class OpenAIDecoder:
    __slots__ = ("done", "splitter", "usage")

    def __init__(self) -> None:
        self.splitter = SSESplitter()
        self.usage: Usage | None = None
        self.done = False

    def feed(self, chunk: bytes) -> list[dict[str, Any]]:
        return [c for event in self.splitter.feed(chunk) if (c := self._chunk(event)) is not None]

    def close(self) -> list[dict[str, Any]]:
        return [c for event in self.splitter.flush() if (c := self._chunk(event)) is not None]

    def _chunk(self, event: SSEEvent) -> dict[str, Any] | None:
        if event.data.strip() == b"[DONE]":
            self.done = True
            return None
        if not event.data.strip():
            return None
        payload = load_event(event)
        if not isinstance(payload, dict):
            raise UpstreamProtocolError("The provider sent a stream event that is not an object.")
        if "error" in payload:
            raise stream_failure(payload["error"])
        usage = payload.pop("usage", None)
        if usage:
            self.usage = usage_from_body(usage, payload.get("service_tier"))
        return payload if payload.get("choices") else None


class OpenAIEncoder:
    __slots__ = ("created", "id", "include_usage", "model")

    def __init__(self, include_usage: bool) -> None:
        self.include_usage = include_usage
        self.id = ""
        self.model: Any = None
        self.created = int(time.time())

    def encode(self, chunk: dict[str, Any]) -> bytes:
        self.id = chunk.get("id") or self.id
        self.model = chunk.get("model") or self.model
        chunk.setdefault("object", "chat.completion.chunk")
        chunk.setdefault("created", self.created)
        return encode_event(orjson.dumps(chunk))

    def finish(self, usage: Usage | None) -> bytes:
        if not self.include_usage or usage is None:
            return _DONE
        final = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": usage_to_openai(usage),
        }
        return encode_event(orjson.dumps(final)) + _DONE
