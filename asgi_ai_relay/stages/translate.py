"""The translate stage: pick the translation between the caller's format and the provider's.

A :class:`Translation` turns the caller's body into the provider's, and the provider's answer
(whole, or streamed chunk by chunk) back into the caller's format, reading usage on the way.
When both formats are the same the fast path forwards the body with only the model rewritten.
Otherwise the request goes through OpenAI Chat Completions (the hub): caller format -> OpenAI
-> provider format, and back (see :mod:`asgi_ai_relay.protocol.hub`); what each pair maps,
drops and refuses is written in the docstrings of the ``protocol`` modules. The fast paths
live in :mod:`.passthrough`, with the guard that makes every failure to read an upstream's
answer (whole or streamed) an :class:`~asgi_ai_relay.errors.UpstreamProtocolError`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import orjson

from ..config import ModelConfig
from ..errors import InvalidRequest
from ..protocol import anthropic_request, anthropic_response, bedrock, gemini, gemini_answer, gemini_inbound, openai, responses, responses_output
from ..protocol.anthropic_stream import AnthropicDecoder, AnthropicEncoder
from ..protocol.bedrock_stream import ConverseStreamDecoder
from ..protocol.gemini_stream import GeminiDecoder, GeminiEncoder
from ..protocol.openai_stream import Decoder, Encoder, OpenAIDecoder, OpenAIEncoder
from ..protocol.responses_stream import ResponsesEncoder
from ..types import Usage
from .passthrough import AnthropicPassThrough, GeminiPassThrough, OpenAIPassThrough, StreamTranslator, load, reading

__all__ = [
    "AnthropicPassThrough",
    "GeminiPassThrough",
    "Inbound",
    "OpenAIPassThrough",
    "Outbound",
    "StreamTranslator",
    "TRANSLATIONS",
    "Translation",
    "Translated",
    "pick",
]


class Translation(Protocol):
    #: Inbound headers sent on to the provider (never credentials).
    forward_headers: tuple[str, ...]

    def request(self, body: dict[str, Any], model: ModelConfig, stream: bool) -> dict[str, Any]: ...

    def response(self, raw: bytes) -> tuple[bytes, Usage | None]: ...

    def stream(self, body: dict[str, Any]) -> StreamTranslator: ...


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


class _HubStream(StreamTranslator):
    """Decoder (provider -> hub chunks) then encoder (hub chunks -> caller). The caller's ending
    goes out with the provider's terminal event, so the request is complete (and recorded) then."""

    __slots__ = ("_done", "decoder", "encoder")

    def __init__(self, decoder: Decoder, encoder: Encoder) -> None:
        self.decoder = decoder
        self.encoder = encoder
        self._done = False

    @property
    def usage(self) -> Usage | None:
        return self.decoder.usage

    @property
    def done(self) -> bool:
        return self._done

    def _feed(self, chunk: bytes) -> bytes:
        out = b"".join(self.encoder.encode(c) for c in self.decoder.feed(chunk))
        return out + self._finish() if self.decoder.done else out

    def _close(self) -> bytes:
        return b"".join(self.encoder.encode(c) for c in self.decoder.close()) + self._finish()

    def _finish(self) -> bytes:
        if self._done:
            return b""
        self._done = True
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
        with reading():
            completion, usage = self.outbound.parse(load(raw))
            return orjson.dumps(self.inbound.render(completion, usage)), usage

    def stream(self, body: dict[str, Any]) -> StreamTranslator:
        return _HubStream(self.outbound.decoder(), self.inbound.encoder(body))


def _openai_from_hub(hub: dict[str, Any], model: ModelConfig, stream: bool) -> dict[str, Any]:
    return OpenAIPassThrough().request(hub, model, stream)


def _openai_parse(payload: Any) -> tuple[dict[str, Any], Usage | None]:
    return payload, openai.usage_of(payload)


def _openai_render(completion: dict[str, Any], usage: Usage | None) -> dict[str, Any]:
    if usage is not None:
        completion["usage"] = openai.usage_to_openai(usage)
    return completion


OPENAI_IN = Inbound(lambda body, provider, fmt: body, _openai_render, lambda body: OpenAIEncoder(openai.include_usage(body)))
ANTHROPIC_IN = Inbound(
    anthropic_request.to_openai, anthropic_response.message_from_completion, lambda body: AnthropicEncoder()
)
RESPONSES_IN = Inbound(responses.to_chat, responses_output.from_completion, lambda body: ResponsesEncoder())
GEMINI_IN = Inbound(gemini_inbound.to_chat, gemini_answer.from_completion, lambda body: GeminiEncoder())
OPENAI_OUT = Outbound(_openai_from_hub, _openai_parse, OpenAIDecoder)
ANTHROPIC_OUT = Outbound(anthropic_request.from_openai, anthropic_response.completion_from_message, AnthropicDecoder)
GEMINI_OUT = Outbound(gemini.from_openai, gemini.completion_from_response, GeminiDecoder)
BEDROCK_OUT = Outbound(bedrock.from_openai, bedrock.completion_from_response, ConverseStreamDecoder)


#: (caller format, provider format) -> translation. Translations hold no per-request state;
#: per-stream state lives in the object ``stream()`` returns.
TRANSLATIONS: dict[tuple[str, str], Callable[[], Translation]] = {
    ("openai", "openai"): OpenAIPassThrough,
    ("anthropic", "anthropic"): AnthropicPassThrough,
    ("openai", "anthropic"): lambda: Translated(OPENAI_IN, ANTHROPIC_OUT, "anthropic"),
    ("openai", "gemini"): lambda: Translated(OPENAI_IN, GEMINI_OUT, "gemini"),
    ("anthropic", "openai"): lambda: Translated(ANTHROPIC_IN, OPENAI_OUT, "openai"),
    ("anthropic", "gemini"): lambda: Translated(ANTHROPIC_IN, GEMINI_OUT, "gemini"),
    ("responses", "openai"): lambda: Translated(RESPONSES_IN, OPENAI_OUT, "openai"),
    ("responses", "anthropic"): lambda: Translated(RESPONSES_IN, ANTHROPIC_OUT, "anthropic"),
    ("responses", "gemini"): lambda: Translated(RESPONSES_IN, GEMINI_OUT, "gemini"),
    ("openai", "bedrock"): lambda: Translated(OPENAI_IN, BEDROCK_OUT, "bedrock"),
    ("anthropic", "bedrock"): lambda: Translated(ANTHROPIC_IN, BEDROCK_OUT, "bedrock"),
    ("responses", "bedrock"): lambda: Translated(RESPONSES_IN, BEDROCK_OUT, "bedrock"),
    ("gemini", "gemini"): GeminiPassThrough,
    ("gemini", "openai"): lambda: Translated(GEMINI_IN, OPENAI_OUT, "openai"),
    ("gemini", "anthropic"): lambda: Translated(GEMINI_IN, ANTHROPIC_OUT, "anthropic"),
    ("gemini", "bedrock"): lambda: Translated(GEMINI_IN, BEDROCK_OUT, "bedrock"),
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
