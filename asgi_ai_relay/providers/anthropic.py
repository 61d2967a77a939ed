"""Anthropic's Messages API."""

from __future__ import annotations

from typing import Any

from ..config import ModelConfig
from .base import HttpProvider, UpstreamResponse

__all__ = ["AnthropicProvider"]


class AnthropicProvider(HttpProvider):
    """``POST {base_url}/messages`` with ``x-api-key`` and ``anthropic-version``
    (``providers.NAME.anthropic_version``; a caller's own header wins on the fast path)."""

    format = "anthropic"

    def auth_headers(self) -> dict[str, str]:
        key = self.config.api_key
        return {"x-api-key": key.get()} if key is not None else {}

    @property
    def default_headers(self) -> dict[str, str]:
        return {"anthropic-version": self.config.anthropic_version}

    def url(self, model: ModelConfig, stream: bool) -> str:
        return f"{self.config.base_url}/messages"

    async def count_tokens(self, model: ModelConfig, body: dict[str, Any], headers: dict[str, str]) -> UpstreamResponse:
        """``POST {base_url}/messages/count_tokens``.

        :raises UpstreamError: as :meth:`send`.
        """
        return await self.post(f"{self.config.base_url}/messages/count_tokens", model, body, stream=False, headers=headers)
