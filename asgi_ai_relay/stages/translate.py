"""Stage 6: pick the translation between the caller's format and the provider's.

A :class:`Translation` turns the caller's body into the provider's, and the provider's answer
(whole, or streamed chunk by chunk) back into the caller's format, reading usage on the way.
When both formats are the same the fast path forwards the body with only the model rewritten.
Otherwise the request goes through OpenAI Chat Completions (the hub): caller format -> OpenAI
-> provider format, and back (see :mod:`asgi_ai_relay.protocol.hub`); what each pair maps,
drops and refuses is written in the docstrings of the ``protocol`` modules.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import orjson

from ..config import ModelConfig
from ..errors import InvalidRequest, UpstreamProtocolError
from ..protocol import anthropic, anthropic_request, anthropic_response, gemini, openai
from ..protocol.anthropic_stream import AnthropicDecoder, AnthropicEncoder
from ..protocol.gemini_stream import GeminiDecoder
from ..protocol.openai_stream import Decoder, Encoder, OpenAIDecoder, OpenAIEncoder
from ..protocol.sse import SSESplitter
from ..types import Usage

__all__ = [
    "AnthropicPassThrough",
    "Inbound",
    "OpenAIPassThrough",
    "Outbound",
    "StreamTranslator",
    "TRANSLATIONS",
    "Translation",
    "Translated",
    "pick",
]


class StreamTranslator(Protocol):
    # Translators may also set ``failed: bool`` when the provider reported an error inside the
    # stream (the caller has seen it); it is optional, so it is read with ``getattr``.

    @property
    def usage(self) -> Usage | None:
        """The usage the provider reported so far (``None`` until it does)."""

    @property
    def done(self) -> bool:
        """Set once the provider's terminal event has gone through (the stream is complete)."""

    def feed(self, chunk: bytes) -> bytes:
        """Provider bytes in, caller bytes out (possibly empty until an event completes)."""

    def close(self) -> bytes:
        """Whatever the caller still needs once the provider's stream has ended."""


class Translation(Protocol):
    #: Inbound headers sent on to the provider (never credentials).
    forward_headers: tuple[str, ...]

    def request(self, body: dict[str, Any], model: ModelConfig, stream: bool) -> dict[str, Any]: ...

    def response(self, raw: bytes) -> tuple[bytes, Usage | None]: ...

    def stream(self, body: dict[str, Any]) -> StreamTranslator: ...


class _OpenAIStream:
    """Forwards OpenAI SSE events as they complete, reading usage from the final chunk.

    The relay always asks the provider for usage; if the caller did not, the usage-only chunk
    is left out so the caller sees exactly what it asked for.
    """

    __slots__ = ("done", "failed", "include_usage", "splitter", "usage")

    def __init__(self, include_usage: bool) -> None:
        self.include_usage = include_usage
        self.splitter = SSESplitter()
        self.usage: Usage | None = None
        self.done = False
        self.failed = False

    def feed(self, chunk: bytes) -> bytes:
        out = []
        for event in self.splitter.feed(chunk):
            if event.data == b"[DONE]":
                self.done = True
            elif b'"usage":{' in event.data or b'"usage": {' in event.data:
                if not self._take_usage(event.data):
                    continue
            elif event.data.startswith(b'{"error"'):
                self.failed = True
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


def _load(raw: bytes) -> dict[str, Any]:
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise UpstreamProtocolError("The provider's answer is not valid JSON.") from exc
    if not isinstance(payload, dict):
        raise UpstreamProtocolError("The provider's answer is not a JSON object.")
    return payload


class OpenAIPassThrough:
    """OpenAI in, OpenAI out: only the model name changes on the way up."""

    forward_headers: tuple[str, ...] = ()

    def request(self, body: dict[str, Any], model: ModelConfig, stream: bool) -> dict[str, Any]:
        upstream = dict(body)
        upstream["model"] = model.upstream
        if stream:
            options = body.get("stream_options")
            upstream["stream_options"] = {**options, "include_usage": True} if isinstance(options, dict) else {"include_usage": True}
        return upstream

    def response(self, raw: bytes) -> tuple[bytes, Usage | None]:
        return raw, openai.usage_from_body(_load(raw).get("usage"))

    def stream(self, body: dict[str, Any]) -> StreamTranslator:
        options = body.get("stream_options")
        return _OpenAIStream(bool(isinstance(options, dict) and options.get("include_usage")))




class _AnthropicStream:
    """Forwards Anthropic events untouched, reading usage from ``message_start`` and
    ``message_delta``; an ``error`` event becomes the relay's own (recorded) error."""

    __slots__ = ("decoder",)

    def __init__(self) -> None:
        self.decoder = AnthropicDecoder()

    @property
    def usage(self) -> Usage | None:
        return self.decoder.usage

    @property
    def done(self) -> bool:
        return self.decoder.done

    def feed(self, chunk: bytes) -> bytes:
        out = []
        for event in self.decoder.splitter.feed(chunk):
            if event.event in ("message_start", "message_delta", "message_stop", "error"):
                self.decoder.read(event)
            out.append(event.raw)
        return b"".join(out)

    def close(self) -> bytes:
        return b"".join(event.raw for event in self.decoder.splitter.flush())


class AnthropicPassThrough:
    """Anthropic in, Anthropic out: only the model name changes (and ``max_tokens`` is filled
    in when missing); unknown fields and the ``anthropic-beta`` / ``anthropic-version``
    headers go through untouched."""

    forward_headers: tuple[str, ...] = ("anthropic-version", "anthropic-beta")

    def request(self, body: dict[str, Any], model: ModelConfig, stream: bool) -> dict[str, Any]:
        upstream = dict(body)
        upstream["model"] = model.upstream
        if "max_tokens" not in upstream:
            upstream["max_tokens"] = model.default_max_tokens
        return upstream

    def response(self, raw: bytes) -> tuple[bytes, Usage | None]:
        return raw, anthropic.usage_from_body(_load(raw).get("usage"))

    def stream(self, body: dict[str, Any]) -> StreamTranslator:
        return _AnthropicStream()


class Inbound:
    """The caller's side of a translation through the hub."""

    def __init__(
        self,
        to_hub: Callable[[dict[str, Any], str, str], dict[str, Any]],
        render: Callable[[dict[str, Any], Usage | None], dict[str, Any]],
        encoder: Callable[[dict[str, Any]], Encoder],
    ) -> None:
        self.to_hub, self.render, self.encoder = to_hub, render, encoder


class Outbound:
    """The provider's side of a translation through the hub."""

    def __init__(
        self,
        from_hub: Callable[[dict[str, Any], ModelConfig, bool], dict[str, Any]],
        parse: Callable[[Any], tuple[dict[str, Any], Usage | None]],
        decoder: Callable[[], Decoder],
    ) -> None:
        self.from_hub, self.parse, self.decoder = from_hub, parse, decoder


class _HubStream:
    """Decoder (provider -> hub chunks) then encoder (hub chunks -> caller). The caller's ending
    goes out with the provider's terminal event, so the request is complete (and recorded) then."""

    __slots__ = ("decoder", "done", "encoder")

    def __init__(self, decoder: Decoder, encoder: Encoder) -> None:
        self.decoder = decoder
        self.encoder = encoder
        self.done = False

    @property
    def usage(self) -> Usage | None:
        return self.decoder.usage

    def feed(self, chunk: bytes) -> bytes:
        out = b"".join(self.encoder.encode(c) for c in self.decoder.feed(chunk))
        return out + self._finish() if self.decoder.done else out

    def close(self) -> bytes:
        return b"".join(self.encoder.encode(c) for c in self.decoder.close()) + self._finish()

    def _finish(self) -> bytes:
        if self.done:
            return b""
        self.done = True
        return self.encoder.finish(self.decoder.usage)


class Translated:
    """Caller format -> OpenAI (the hub) -> provider format, and back."""

    forward_headers: tuple[str, ...] = ()

    def __init__(self, inbound: Inbound, outbound: Outbound, provider_format: str) -> None:
        self.inbound = inbound
        self.outbound = outbound
        self.provider_format = provider_format

    def request(self, body: dict[str, Any], model: ModelConfig, stream: bool) -> dict[str, Any]:
        hub = self.inbound.to_hub(body, model.provider, self.provider_format)
        return self.outbound.from_hub(hub, model, stream)

    def response(self, raw: bytes) -> tuple[bytes, Usage | None]:
        completion, usage = self.outbound.parse(_load(raw))
        return orjson.dumps(self.inbound.render(completion, usage)), usage

    def stream(self, body: dict[str, Any]) -> StreamTranslator:
        return _HubStream(self.outbound.decoder(), self.inbound.encoder(body))


def _openai_from_hub(hub: dict[str, Any], model: ModelConfig, stream: bool) -> dict[str, Any]:
    return OpenAIPassThrough().request(hub, model, stream)


def _openai_parse(payload: Any) -> tuple[dict[str, Any], Usage | None]:
    return payload, openai.usage_from_body(payload.get("usage"))


def _openai_render(completion: dict[str, Any], usage: Usage | None) -> dict[str, Any]:
    if usage is not None:
        completion["usage"] = openai.usage_to_openai(usage)
    return completion


def _include_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return bool(isinstance(options, dict) and options.get("include_usage"))


OPENAI_IN = Inbound(lambda body, provider, fmt: body, _openai_render, lambda body: OpenAIEncoder(_include_usage(body)))
ANTHROPIC_IN = Inbound(
    anthropic_request.to_openai, anthropic_response.message_from_completion, lambda body: AnthropicEncoder()
)
OPENAI_OUT = Outbound(_openai_from_hub, _openai_parse, OpenAIDecoder)
ANTHROPIC_OUT = Outbound(anthropic_request.from_openai, anthropic_response.completion_from_message, AnthropicDecoder)
GEMINI_OUT = Outbound(gemini.from_openai, gemini.completion_from_response, GeminiDecoder)


#: (caller format, provider format) -> translation. Translations hold no per-request state;
#: per-stream state lives in the object ``stream()`` returns.
TRANSLATIONS: dict[tuple[str, str], Callable[[], Translation]] = {
    ("openai", "openai"): OpenAIPassThrough,
    ("anthropic", "anthropic"): AnthropicPassThrough,
    ("openai", "anthropic"): lambda: Translated(OPENAI_IN, ANTHROPIC_OUT, "anthropic"),
    ("openai", "gemini"): lambda: Translated(OPENAI_IN, GEMINI_OUT, "gemini"),
    ("anthropic", "openai"): lambda: Translated(ANTHROPIC_IN, OPENAI_OUT, "openai"),
    ("anthropic", "gemini"): lambda: Translated(ANTHROPIC_IN, GEMINI_OUT, "gemini"),
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
