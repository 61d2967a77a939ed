"""The settings, read live from ``django.conf.settings``, and the process's one relay.

``AI_RELAY``
    The relay configuration: the schema every host shares (:mod:`asgi_ai_relay.config`).
    ``require_auth`` defaults to ``True`` here, since the relay sits behind the site's login,
    and ``keys.caller_limits`` too, so the budgets of ``RelayKey`` apply.
``AI_RELAY_PERMISSION``
    The permission a user needs, ``"django_ai_relay.use_relay"`` by default; ``None`` lets
    any authenticated user call the relay.
``AI_RELAY_CALLER``
    A callable, or its dotted path, ``(HttpRequest) -> Caller | None`` that decides who is
    calling in place of the default :func:`django_ai_relay.middleware.user_caller`. It may
    raise ``PermissionDenied`` (Django's or the relay's) to refuse with a 403.
"""

from __future__ import annotations

import atexit
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.http import HttpRequest
from django.utils.module_loading import import_string

from asgi_ai_relay import Caller, Relay, RelayConfig, SyncRelay, host_caller, load_config

from .signals import send_spend_alert

__all__ = ["conf", "relay", "reset", "sync_relay"]

DEFAULT_PERMISSION = "django_ai_relay.use_relay"
DEFAULT_CALLER = "django_ai_relay.middleware.user_caller"

CallerFunction = Callable[[HttpRequest], "Caller | None"]

logger = logging.getLogger("asgi_ai_relay")


class Settings:
    """One property per setting, so a test's ``override_settings`` is seen at once."""

    @property
    def AI_RELAY(self) -> Any:
        return getattr(settings, "AI_RELAY", {})

    @property
    def AI_RELAY_PERMISSION(self) -> Any:
        return getattr(settings, "AI_RELAY_PERMISSION", DEFAULT_PERMISSION)

    @property
    def AI_RELAY_CALLER(self) -> Any:
        return getattr(settings, "AI_RELAY_CALLER", DEFAULT_CALLER)

    def relay_config(self) -> RelayConfig:
        """``AI_RELAY`` validated. :raises ConfigurationError: naming the bad key."""
        data = self.AI_RELAY
        if isinstance(data, Mapping) and "require_auth" not in data:
            data = {**data, "require_auth": True}
        keys = data.get("keys") if isinstance(data, Mapping) else None
        if isinstance(data, Mapping) and (keys is None or (isinstance(keys, Mapping) and "caller_limits" not in keys)):
            data = {**data, "keys": {**(keys or {}), "caller_limits": True}}  # RelayKey budgets
        return load_config(data)

    def caller_function(self) -> CallerFunction:
        """:raises ImportError: when ``AI_RELAY_CALLER`` names nothing importable."""
        value = self.AI_RELAY_CALLER
        function = import_string(value) if isinstance(value, str) else value
        if not callable(function):
            raise TypeError(f"AI_RELAY_CALLER must be callable, got {type(function).__name__}")
        return function  # type: ignore[no-any-return]


conf = Settings()

_lock = threading.Lock()
_relay: Relay | None = None
_sync: SyncRelay | None = None
_caller: CallerFunction | None = None


def relay() -> Relay:
    """The process's relay, built from the settings on first use."""
    global _relay
    if _relay is None:
        with _lock:
            if _relay is None:
                built = Relay(conf.relay_config(), auth=host_caller)
                built.alerts.sinks.append(send_spend_alert)
                atexit.register(_flush_ledger, built)
                _relay = built
    return _relay


def _flush_ledger(built: Relay) -> None:
    """Django's ASGI handler runs no lifespan: flush the ledger when the process ends. (The core
    opens it on first use; opening it here, when the site is built, would make a ledger that
    cannot open fail every request of the site, its own pages included.)"""
    try:
        built.flush_ledger()
    except Exception:
        logger.exception("the relay's ledger could not be flushed at exit")


def sync_relay() -> SyncRelay:
    """The same relay, driven through the process's loop thread (WSGI)."""
    global _sync
    current = relay()
    if _sync is None or _sync.relay is not current:
        with _lock:
            if _sync is None or _sync.relay is not current:
                _sync = SyncRelay(current)
    return _sync


def caller_function() -> CallerFunction:
    global _caller
    if _caller is None:
        _caller = conf.caller_function()
    return _caller


def reset(*, setting: str = "AI_RELAY", **kwargs: Any) -> None:
    """Forget the relay built from older settings (a ``setting_changed`` receiver)."""
    global _relay, _sync, _caller
    if setting.startswith("AI_RELAY"):
        with _lock:
            _relay = _sync = _caller = None


def connect_signals() -> None:
    setting_changed.connect(reset, dispatch_uid="django_ai_relay.reset")
