"""OpenAI and every OpenAI-compatible service (DeepSeek, HolySheep, OpenRouter, vLLM, Ollama,
Mistral, Groq, Together, Fireworks, xAI: see ``PRESETS`` in :mod:`asgi_ai_relay.config.cloud`)."""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from typing import Any

from ..config import ModelConfig, ProviderConfig, Timeouts
from ..reply import UpstreamHttp
from .base import HttpProvider, UpstreamResponse
from .quirks import adapt_stream, prepare_body, touches_body, touches_stream

__all__ = ["OpenAIProvider"]


class OpenAIProvider(HttpProvider):
    """``POST {base_url}/chat/completions`` (and ``/embeddings``) with ``Authorization: Bearer``.

    Extra headers come from the provider's and the model's ``headers`` (HolySheep routes on
    ``X-Provider``; OpenRouter reads ``HTTP-Referer`` and ``X-Title``). A preset's quirks
    (``providers.NAME.quirks``) shape the body and the stream. Where the service serves the
    Responses API itself (``responses = true``; kind ``openai`` by default), Responses requests
    go to ``{base_url}/responses`` as the caller sent them, quirks not applied.
    """

    format = "openai"
    embeds = True

    def __init__(self, config: ProviderConfig, client: UpstreamHttp, timeouts: Timeouts) -> None:
        super().__init__(config, client, timeouts)
        declared = config.cloud.responses
        self.native_responses = declared if declared is not None else config.kind == "openai"
        self._adapts_stream = touches_stream(config.cloud.quirks)
        # Where no quirk touches the body or the stream and the chat URL is this class's own,
        # ``send`` posts the caller's body to that URL, worked out once, with nothing in between.
        cls = type(self)
        direct = cls.url is OpenAIProvider.url and cls.prepare is OpenAIProvider.prepare
        self._direct_url = (
            f"{config.base_url}/chat/completions"
            if direct and not self._adapts_stream and not touches_body(config.cloud.quirks) else None
        )

    def responses_url(self, model: ModelConfig) -> str:
        return f"{self.config.base_url}/responses"

    async def send_responses(
        self, model: ModelConfig, body: dict[str, Any], *, stream: bool, headers: Mapping[str, str] | None = None
    ) -> UpstreamResponse:
        return await self.post(self.responses_url(model), model, body, stream=stream, headers=headers)

    def url(self, model: ModelConfig, stream: bool) -> str:
        return f"{self.config.base_url}/chat/completions"

    def embeddings_url(self, model: ModelConfig) -> str:
        return f"{self.config.base_url}/embeddings"

    def prepare(self, body: dict[str, Any], stream: bool) -> dict[str, Any]:
        return prepare_body(self.config.cloud.quirks, body)

    def send(  # type: ignore[override]
        self, model: ModelConfig, body: dict[str, Any], *, stream: bool, headers: Mapping[str, str] | None = None
    ) -> Awaitable[UpstreamResponse]:
        # The post's own coroutine when no quirk touches the stream (no frame of its own around it).
        if self._direct_url is not None:
            return self.post(self._direct_url, model, body, stream=stream, headers=headers)
        if self._adapts_stream:
            return self._send_adapted(model, body, stream=stream, headers=headers)
        return super().send(model, body, stream=stream, headers=headers)

    async def _send_adapted(
        self, model: ModelConfig, body: dict[str, Any], *, stream: bool, headers: Mapping[str, str] | None = None
    ) -> UpstreamResponse:
        reply = await super().send(model, body, stream=stream, headers=headers)
        if reply.chunks is not None:
            reply.chunks = adapt_stream(self.config.cloud.quirks, reply.chunks)
        return reply
