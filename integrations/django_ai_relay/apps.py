"""The app config: registers the system checks."""

from __future__ import annotations

from django.apps import AppConfig
from django.core import checks

__all__ = ["DjangoAIRelayConfig"]


class DjangoAIRelayConfig(AppConfig):
    name = "django_ai_relay"
    label = "django_ai_relay"
    verbose_name = "AI relay"
    default_auto_field = "django.db.models.AutoField"

    def ready(self) -> None:
        from . import checks as relay_checks
        from . import conf, keys

        checks.register(relay_checks.check_settings, checks.Tags.compatibility)
        checks.register(relay_checks.check_middleware, checks.Tags.compatibility)
        conf.connect_signals()
        keys.connect_signals(self)
