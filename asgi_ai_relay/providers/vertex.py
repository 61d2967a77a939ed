"""Google Vertex AI: Gemini (``:generateContent``, ``:streamGenerateContent?alt=sse``) and
Claude (``:rawPredict``, ``:streamRawPredict``), regional or ``global``.

URLs are ``{base_url}/projects/{project}/locations/{region}/publishers/{google|anthropic}/
models/{model}:{method}``, ``base_url`` defaulting to ``https://{region}-aiplatform.googleapis.com/v1``
(``https://aiplatform.googleapis.com/v1`` for ``global``). Requests carry an OAuth access token
from google-auth (a service-account file or application default credentials), refreshed off
the request path; ``api_key`` (Vertex AI express mode) is sent as ``x-goog-api-key`` instead.
Gemini bodies are the Gemini API's own; Claude bodies are Anthropic Messages without ``model``
and with ``anthropic_version: vertex-2023-10-16``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from ..config import ModelConfig
from .anthropic import AnthropicProvider
from .base import UpstreamResponse
from .credentials import GOOGLE_SCOPE, TokenSource, google_fetcher
from .gemini import GeminiProvider

__all__ = ["VERTEX_ANTHROPIC_VERSION", "VertexAnthropicProvider", "VertexGeminiProvider"]

VERTEX_ANTHROPIC_VERSION = "vertex-2023-10-16"


class _Vertex:
    """What both Vertex providers share: where a model lives and how to get a token."""

    publisher = "google"

    def _model_url(self: Any, model: ModelConfig, method: str) -> str:
        cloud = self.config.cloud
        name = quote(model.upstream.removeprefix("models/"), safe="-._@")
        return (
            f"{self.config.base_url}/projects/{quote(cloud.project, safe='-._')}/locations/{quote(cloud.region, safe='-._')}"
            f"/publishers/{self.publisher}/models/{name}:{method}"
        )

    def _google_token(self: Any) -> TokenSource | None:
        cloud = self.config.cloud
        if cloud.auth in ("google", "key") and self.config.api_key is None:
            key = f"providers.{self.name}.credential"
            return TokenSource(self.name, google_fetcher(cloud.credential, cloud.scope or GOOGLE_SCOPE, key))
        return None


class VertexGeminiProvider(_Vertex, GeminiProvider):
    embeds = False

    def token_source(self) -> TokenSource | None:
        return super().token_source() or self._google_token()

    def url(self, model: ModelConfig, stream: bool) -> str:
        return self._model_url(model, "streamGenerateContent") + "?alt=sse" if stream else self._model_url(model, "generateContent")

    def count_url(self, model: ModelConfig) -> str:
        return self._model_url(model, "countTokens")


class VertexAnthropicProvider(_Vertex, AnthropicProvider):
    publisher = "anthropic"

    def token_source(self) -> TokenSource | None:
        return super().token_source() or self._google_token()

    def auth_headers(self) -> dict[str, str]:
        key = self.config.api_key
        return {"x-goog-api-key": key.get()} if key is not None else {}

    @property
    def default_headers(self) -> dict[str, str]:
        return {}

    def url(self, model: ModelConfig, stream: bool) -> str:
        return self._model_url(model, "streamRawPredict" if stream else "rawPredict")

    def prepare(self, body: dict[str, Any], stream: bool) -> dict[str, Any]:
        out = {k: v for k, v in body.items() if k != "model"}
        if str(out.get("anthropic_version", "")).startswith("vertex-") is False:
            out["anthropic_version"] = VERTEX_ANTHROPIC_VERSION
        return out

    async def count_tokens(self, model: ModelConfig, body: dict[str, Any], headers: dict[str, str]) -> UpstreamResponse:
        """Vertex's ``count-tokens:rawPredict`` (the model goes in the body).

        :raises UpstreamError: as :meth:`send`.
        """
        url = self._model_url(ModelConfig(model.alias, model.provider, "count-tokens"), "rawPredict")
        return await self.post(url, model, {**body, "anthropic_version": VERTEX_ANTHROPIC_VERSION}, stream=False, headers=headers)
