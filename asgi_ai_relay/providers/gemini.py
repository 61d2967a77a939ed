"""Google's Gemini API (``generateContent`` / ``streamGenerateContent?alt=sse``, ``batchEmbedContents``)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from ..config import ModelConfig
from .base import HttpProvider

__all__ = ["GeminiProvider"]


class GeminiProvider(HttpProvider):
    """The key goes in the ``x-goog-api-key`` header, never in the URL (URLs end up in logs)."""

    format = "gemini"
    embeds = True

    def auth_headers(self) -> dict[str, str]:
        key = self.config.api_key
        return {"x-goog-api-key": key.get()} if key is not None else {}

    def url(self, model: ModelConfig, stream: bool) -> str:
        name = quote(model.upstream.removeprefix("models/"), safe="-._")
        if stream:
            return f"{self.config.base_url}/models/{name}:streamGenerateContent?alt=sse"
        return f"{self.config.base_url}/models/{name}:generateContent"

    def embeddings_url(self, model: ModelConfig) -> str:
        name = quote(model.upstream.removeprefix("models/"), safe="-._")
        return f"{self.config.base_url}/models/{name}:batchEmbedContents"

    def error_message(self, payload: Any, raw: bytes) -> tuple[str, str | None]:
        error = payload.get("error") if isinstance(payload, dict) else None
        if isinstance(error, dict) and error.get("status"):
            return str(error.get("message") or error["status"]), str(error["status"])
        return super().error_message(payload, raw)

    def count_url(self, model: ModelConfig) -> str:
        name = quote(model.upstream.removeprefix("models/"), safe="-._")
        return f"{self.config.base_url}/models/{name}:countTokens"
