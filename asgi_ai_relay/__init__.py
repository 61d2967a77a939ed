"""asgi-ai-relay: an AI API relay that lives inside your Python web app."""

from __future__ import annotations

from .body import read_body
from .config import ModelConfig, Price, ProviderConfig, RelayConfig, Secret, load_config
from .errors import (
    AuthenticationError,
    ConfigurationError,
    InvalidRequest,
    ModelNotFound,
    PermissionDenied,
    RelayError,
    UpstreamError,
)
from .middleware import RelayMiddleware, scope_user_caller
from .paths import REFUSED, relay_subpath
from .relay import Relay
from .stages.auth import host_caller
from .sync import SyncRelay
from .types import Caller, RelayRequest, RelayResponse, Usage
from .wsgi import ClientSocket, client_socket

from ._version import __version__

__all__ = [
    "REFUSED",
    "AuthenticationError",
    "Caller",
    "ClientSocket",
    "ConfigurationError",
    "InvalidRequest",
    "ModelConfig",
    "ModelNotFound",
    "PermissionDenied",
    "Price",
    "ProviderConfig",
    "Relay",
    "RelayConfig",
    "RelayError",
    "RelayMiddleware",
    "RelayRequest",
    "RelayResponse",
    "Secret",
    "SyncRelay",
    "UpstreamError",
    "Usage",
    "__version__",
    "client_socket",
    "host_caller",
    "load_config",
    "read_body",
    "relay_subpath",
    "scope_user_caller",
]
