"""Stage 6: pick the translation between the caller's format and the provider's.

A :class:`Translation` turns the caller's body into the provider's, and the provider's answer
(whole, or streamed chunk by chunk) back into the caller's format, reading usage on the way.
When both formats are the same the fast path forwards the bytes untouched.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import orjson

from ..config import ModelConfig
from ..errors import InvalidRequest, UpstreamProtocolError
from ..protocol import openai
from ..protocol.sse import SSESplitter
from ..types import Usage

__all__ = ["OpenAIPassThrough", "StreamTranslator", "TRANSLATIONS", "Translation", "pick"]


class StreamTranslator(Protocol):
    usage: Usage | None
    #: Set once the provider's terminal event has gone through (the stream is complete).
    done: bool

    def feed(self, chunk: bytes) -> bytes:
        """Provider bytes in, caller bytes out (possibly empty until an event completes)."""

    def close(self) -> bytes:
        """Whatever the caller still needs once the provider's stream has ended."""


class Translation(Protocol):
    def request(self, body: dict[str, Any], model: ModelConfig, stream: bool) -> dict[str, Any]: ...

    def response(self, raw: bytes) -> tuple[bytes, Usage | None]: ...

    def stream(self, body: dict[str, Any]) -> StreamTranslator: ...


class _OpenAIStream:
    """Forwards OpenAI SSE events as they complete, reading usage from the final chunk.

    The relay always asks the provider for usage; if the caller did not, the usage-only chunk
    is left out so the caller sees exactly what it asked for.
    """

    __slots__ = ("done", "include_usage", "splitter", "usage")

    def __init__(self, include_usage: bool) -> None:
        self.include_usage = include_usage
        self.splitter = SSESplitter()
        self.usage: Usage | None = None
        self.done = False

    def feed(self, chunk: bytes) -> bytes:
        out = []
        for event in self.splitter.feed(chunk):
            if event.data == b"[DONE]":
                self.done = True
            elif b'"usage":{' in event.data or b'"usage": {' in event.data:
                if not self._take_usage(event.data):
                    continue
            out.append(event.raw)
        return b"".join(out)

    def _take_usage(self, data: bytes) -> bool:
        """Read the usage; whether the event should still reach the caller."""
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError:
            return True
        self.usage = openai.usage_from_body(payload.get("usage")) or self.usage
        return self.include_usage or bool(payload.get("choices"))

    def close(self) -> bytes:
        return b"".join(event.raw for event in self.splitter.flush())


class OpenAIPassThrough:
    """OpenAI in, OpenAI out: only the model name changes on the way up."""

    def request(self, body: dict[str, Any], model: ModelConfig, stream: bool) -> dict[str, Any]:
        upstream = dict(body)
        upstream["model"] = model.upstream
        if stream:
            options = body.get("stream_options")
            upstream["stream_options"] = {**options, "include_usage": True} if isinstance(options, dict) else {"include_usage": True}
        return upstream

    def response(self, raw: bytes) -> tuple[bytes, Usage | None]:
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise UpstreamProtocolError("The provider's answer is not valid JSON.") from exc
        if not isinstance(payload, dict):
            raise UpstreamProtocolError("The provider's answer is not a JSON object.")
        return raw, openai.usage_from_body(payload.get("usage"))

    def stream(self, body: dict[str, Any]) -> StreamTranslator:
        options = body.get("stream_options")
        return _OpenAIStream(bool(isinstance(options, dict) and options.get("include_usage")))


#: (caller format, provider format) -> translation. Translations hold no per-request state;
#: per-stream state lives in the object ``stream()`` returns.
TRANSLATIONS: dict[tuple[str, str], Callable[[], Translation]] = {
    ("openai", "openai"): OpenAIPassThrough,
}
_INSTANCES: dict[tuple[str, str], Translation] = {}


def pick(inbound: str, provider_format: str, provider_name: str) -> Translation:
    """The translation for this pair.

    :raises InvalidRequest: when no translation exists, naming both formats and the provider.
    """
    key = (inbound, provider_format)
    translation = _INSTANCES.get(key)
    if translation is None:
        factory = TRANSLATIONS.get(key)
        if factory is None:
            raise InvalidRequest(
                f"Requests in {inbound} format cannot be sent to provider {provider_name!r} ({provider_format} format)."
            )
        translation = _INSTANCES[key] = factory()
    return translation
