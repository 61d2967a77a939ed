"""Upstream providers, one class per wire format, chosen by the config's ``kind``."""

from __future__ import annotations

from collections.abc import Callable

from ..config import ProviderConfig, Timeouts
from ..errors import ConfigurationError
from ..transport import UpstreamHttp
from .base import HttpProvider, Provider, UpstreamResponse
from .mock import MockProvider
from .openai import OpenAIProvider

__all__ = ["HttpProvider", "MockProvider", "OpenAIProvider", "Provider", "UpstreamResponse", "build_provider"]

HTTP_PROVIDERS: dict[str, Callable[[ProviderConfig, UpstreamHttp, Timeouts], HttpProvider]] = {
    "openai": OpenAIProvider,
    "openai_compatible": OpenAIProvider,
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
