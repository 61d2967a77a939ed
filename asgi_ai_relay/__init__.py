"""asgi-ai-relay: an AI API relay that lives inside your Python web app."""

from __future__ import annotations

from .config import ModelConfig, Price, ProviderConfig, RelayConfig, Secret, load_config
from .errors import (
    AuthenticationError,
    ConfigurationError,
    InvalidRequest,
    ModelNotFound,
    RelayError,
    UpstreamError,
)
from .middleware import RelayMiddleware, scope_user_caller
from .relay import Relay
from .types import Caller, RelayRequest, RelayResponse, Usage

__version__ = "0.1.0"

__all__ = [
    "AuthenticationError",
    "Caller",
    "ConfigurationError",
    "InvalidRequest",
    "ModelConfig",
    "ModelNotFound",
    "Price",
    "ProviderConfig",
    "Relay",
    "RelayConfig",
    "RelayError",
    "RelayMiddleware",
    "RelayRequest",
    "RelayResponse",
    "Secret",
    "UpstreamError",
    "Usage",
    "__version__",
    "load_config",
    "scope_user_caller",
]
