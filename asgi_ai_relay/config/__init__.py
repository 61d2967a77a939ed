"""One configuration schema for every host, validated once at start-up.

Django reads it from ``settings.AI_RELAY``, Flask from ``app.config["AI_RELAY"]``, ASGI apps pass
a mapping or a TOML file. :func:`load_config` turns any of them into a frozen :class:`RelayConfig`
and raises :class:`ConfigurationError` naming the bad key (``models.gpt-4.1.price.input``).

Secrets are written ``"env:NAME"`` and read from the environment here, once; they are kept in
:class:`Secret`, whose ``repr`` never shows the value.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError
from .egress import EgressSettings
from .reader import _Reader
from .schema import (
    CAPABILITIES,
    DEFAULT_CACHE_WRITE,
    DEFAULT_EMBEDDINGS,
    DEFAULT_MODELS,
    KNOWN_PROVIDERS,
    PROVIDER_KINDS,
    STRATEGIES,
    ApiKey,
    BreakerSettings,
    Deployment,
    HttpSettings,
    ModelConfig,
    ProviderConfig,
    RelayConfig,
    RetrySettings,
    RoutingConfig,
    Secret,
    StorageConfig,
    Timeouts,
    VirtualModel,
)
from .settings import (
    Budget,
    BudgetSettings,
    CacheSettings,
    LimitConfig,
    LimitsConfig,
    MetricsSettings,
    Price,
    PricingSettings,
    UsageCheck,
    QueueConfig,
)

__all__ = [
    "CAPABILITIES",
    "DEFAULT_CACHE_WRITE",
    "DEFAULT_EMBEDDINGS",
    "DEFAULT_MODELS",
    "KNOWN_PROVIDERS",
    "PROVIDER_KINDS",
    "STRATEGIES",
    "ApiKey",
    "BreakerSettings",
    "Budget",
    "BudgetSettings",
    "CacheSettings",
    "Deployment",
    "EgressSettings",
    "HttpSettings",
    "LimitConfig",
    "LimitsConfig",
    "MetricsSettings",
    "ModelConfig",
    "Price",
    "PricingSettings",
    "UsageCheck",
    "ProviderConfig",
    "QueueConfig",
    "RelayConfig",
    "RetrySettings",
    "RoutingConfig",
    "Secret",
    "StorageConfig",
    "Timeouts",
    "VirtualModel",
    "load_config",
]


def load_config(source: RelayConfig | Mapping[str, Any] | str | Path | None = None) -> RelayConfig:
    """Build a validated :class:`RelayConfig`.

    :param source: a ``RelayConfig`` (returned as is), a mapping, a path to a TOML file, or
        ``None`` for the defaults (the shipped model catalog served by the offline mock).
    :raises ConfigurationError: naming the first bad key.
    """
    if isinstance(source, RelayConfig):
        return source
    if source is None:
        data: Mapping[str, Any] = {}
    elif isinstance(source, (str, Path)):
        try:
            data = tomllib.loads(Path(source).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigurationError(f"cannot read relay config {source}: {exc}") from exc
    elif isinstance(source, Mapping):
        data = source
    else:
        raise ConfigurationError(f"relay config must be a mapping or a TOML path, not {type(source).__name__}")
    return _Reader(data, "").relay()

