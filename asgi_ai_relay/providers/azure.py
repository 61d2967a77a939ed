"""Azure OpenAI, in both URL shapes.

* the v1 API: ``{base_url}/chat/completions`` with ``base_url`` ending ``/openai/v1`` and the
  deployment named by the body's ``model`` (the model's ``upstream``);
* classic deployments (``api_version`` set): ``{resource}/openai/deployments/{deployment}/
  chat/completions?api-version=...`` (and ``/embeddings``), the deployment being ``upstream``.

With ``responses = true`` Responses requests go to Azure's own Responses API: ``{base_url}/
responses`` (v1), or ``{resource}/openai/responses?api-version=...`` (classic), the deployment
named by the body's ``model``.

The key goes in the ``api-key`` header; with ``auth = "entra"`` a Microsoft Entra ID token
(azure-identity, refreshed off the request path) goes as ``Authorization: Bearer`` instead.
"""

from __future__ import annotations

from urllib.parse import quote

from ..config import ModelConfig
from .openai import OpenAIProvider

__all__ = ["AzureOpenAIProvider"]


class AzureOpenAIProvider(OpenAIProvider):
    def auth_headers(self) -> dict[str, str]:
        key = self.config.api_key
        return {"api-key": key.get()} if key is not None and self.token is None else {}

    def _deployment_url(self, model: ModelConfig, operation: str) -> str | None:
        version = self.config.cloud.api_version
        if version is None:
            return None
        deployment = quote(model.upstream, safe="-._")
        return f"{self.config.base_url}/openai/deployments/{deployment}/{operation}?api-version={quote(version, safe='-._')}"

    def url(self, model: ModelConfig, stream: bool) -> str:
        return self._deployment_url(model, "chat/completions") or super().url(model, stream)

    def responses_url(self, model: ModelConfig) -> str:
        version = self.config.cloud.api_version
        if version is None:
            return super().responses_url(model)
        return f"{self.config.base_url}/openai/responses?api-version={quote(version, safe='-._')}"

    def embeddings_url(self, model: ModelConfig) -> str:
        return self._deployment_url(model, "embeddings") or super().embeddings_url(model)
