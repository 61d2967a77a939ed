"""Upstream providers, one class per wire format, chosen by the config's ``kind``."""

from __future__ import annotations

from collections.abc import Callable

from ..config import ProviderConfig, Timeouts
from ..errors import ConfigurationError
from ..transport import UpstreamHttp
from .anthropic import AnthropicProvider
from .azure import AzureOpenAIProvider
from .base import HttpProvider, Provider, UpstreamResponse
from .bedrock import BedrockProvider
from .bedrock_anthropic import BedrockAnthropicProvider
from .gemini import GeminiProvider
from .mock import MockProvider
from .openai import OpenAIProvider
from .vertex import VertexAnthropicProvider, VertexGeminiProvider

__all__ = [
    "AnthropicProvider",
    "AzureOpenAIProvider",
    "BedrockAnthropicProvider",
    "BedrockProvider",
    "GeminiProvider",
    "HttpProvider",
    "MockProvider",
    "OpenAIProvider",
    "Provider",
    "UpstreamResponse",
    "VertexAnthropicProvider",
    "VertexGeminiProvider",
    "build_provider",
]

HTTP_PROVIDERS: dict[str, Callable[[ProviderConfig, UpstreamHttp, Timeouts], HttpProvider]] = {
    "openai": OpenAIProvider,
    "openai_compatible": OpenAIProvider,
    "anthropic": AnthropicProvider,
    "gemini": GeminiProvider,
    "azure_openai": AzureOpenAIProvider,
    "bedrock": BedrockProvider,
    "bedrock_anthropic": BedrockAnthropicProvider,
    "vertex": VertexGeminiProvider,
    "vertex_anthropic": VertexAnthropicProvider,
}


def build_provider(config: ProviderConfig, client: UpstreamHttp, timeouts: Timeouts) -> Provider:
    """The provider for one ``[providers.NAME]`` table.

    :raises ConfigurationError: for a kind this build cannot serve.
    """
    if config.kind == "mock":
        return MockProvider(config)
    factory = HTTP_PROVIDERS.get(config.kind)
    if factory is None:
        raise ConfigurationError(f"providers.{config.name}.kind: {config.kind!r} is not available")
    return factory(config, client, timeouts)
