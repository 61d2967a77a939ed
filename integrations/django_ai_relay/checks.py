"""System checks (``manage.py check``): configuration mistakes reported by key at start-up.

``E001`` ``AI_RELAY`` is not valid (the message names the dotted key)
``E002`` ``AI_RELAY_PERMISSION`` is not ``"app_label.codename"`` or ``None``
``E003`` ``AI_RELAY_CALLER`` is not a callable or the import path of one
``E004`` ``AIRelayMiddleware`` comes before ``AuthenticationMiddleware`` (no ``request.user`` yet)
``W001`` ``AIRelayMiddleware`` is not in ``MIDDLEWARE``: the relay routes are not served
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning

from asgi_ai_relay import ConfigurationError

from .conf import conf

__all__ = ["check_middleware", "check_settings"]

MIDDLEWARE_PATH = "django_ai_relay.middleware.AIRelayMiddleware"
AUTH_MIDDLEWARE = "django.contrib.auth.middleware.AuthenticationMiddleware"


def check_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    try:
        conf.relay_config()
    except ConfigurationError as exc:
        errors.append(Error(f"AI_RELAY: {exc}", hint="See asgi_ai_relay.config for the schema.", id="django_ai_relay.E001"))
    permission = conf.AI_RELAY_PERMISSION
    if permission is not None and (not isinstance(permission, str) or permission.count(".") != 1):
        errors.append(
            Error(
                f"AI_RELAY_PERMISSION: expected 'app_label.codename' or None, got {permission!r}",
                id="django_ai_relay.E002",
            )
        )
    try:
        conf.caller_function()
    except (ImportError, TypeError) as exc:
        errors.append(Error(f"AI_RELAY_CALLER: {exc}", id="django_ai_relay.E003"))
    return errors


def check_middleware(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    middleware = list(getattr(settings, "MIDDLEWARE", None) or [])
    if MIDDLEWARE_PATH not in middleware:
        return [
            Warning(
                f"MIDDLEWARE: {MIDDLEWARE_PATH} is not listed, so the relay routes are not served.",
                id="django_ai_relay.W001",
            )
        ]
    if AUTH_MIDDLEWARE in middleware and middleware.index(AUTH_MIDDLEWARE) > middleware.index(MIDDLEWARE_PATH):
        return [
            Error(
                f"MIDDLEWARE: {MIDDLEWARE_PATH} must come after {AUTH_MIDDLEWARE}, which sets request.user.",
                id="django_ai_relay.E004",
            )
        ]
    return []
