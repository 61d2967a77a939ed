"""OpenAI and every OpenAI-compatible service (DeepSeek, HolySheep, OpenRouter, vLLM, Ollama)."""

from __future__ import annotations

from ..config import ModelConfig
from .base import HttpProvider

__all__ = ["OpenAIProvider"]


class OpenAIProvider(HttpProvider):
    """``POST {base_url}/chat/completions`` (and ``/embeddings``) with ``Authorization: Bearer``.

    Extra headers come from the provider's and the model's ``headers`` (HolySheep routes on
    ``X-Provider``; OpenRouter reads ``HTTP-Referer`` and ``X-Title``).
    """

    format = "openai"
    embeds = True

    def url(self, model: ModelConfig, stream: bool) -> str:
        return f"{self.config.base_url}/chat/completions"

    def embeddings_url(self, model: ModelConfig) -> str:
        return f"{self.config.base_url}/embeddings"
