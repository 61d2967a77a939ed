"""Readers of ``[dashboard]`` and ``[alerts]`` (the settings are in :mod:`.spend`)."""

from __future__ import annotations

from ..errors import ConfigurationError
from .spend import AlertSettings, DashboardSettings, WebhookSettings
from .table import _Table


class _SpendReader(_Table):
    """Mixin of :class:`~.reader._Reader`: ``[dashboard]`` and ``[alerts]``."""

    def dashboard(self) -> DashboardSettings:
        self.only("enabled", "days")
        return DashboardSettings(enabled=self.get("enabled", bool, False), days=self.integer("days", 14))

    def alerts(self) -> AlertSettings:
        self.only("log", "webhook", "webhooks")
        entries = list(self.get("webhooks", list, []))
        if "webhook" in self.data:
            entries.insert(0, self.get("webhook", dict, {}))
        hooks = []
        for i, entry in enumerate(entries):
            name = "webhook" if "webhook" in self.data and i == 0 else f"webhooks[{i - ('webhook' in self.data)}]"
            hooks.append(type(self)(entry, self.key(name)).webhook())
        return AlertSettings(log=self.get("log", bool, True), webhooks=tuple(hooks))

    def webhook(self) -> WebhookSettings:
        self.only("url", "secret", "max_attempts", "backoff", "timeout")
        url = self.get("url", str, "")
        if not url.startswith(("http://", "https://")):
            raise ConfigurationError(f"{self.key('url')}: required, an http(s) URL")
        return WebhookSettings(
            url=url, secret=self.secret("secret"), max_attempts=self.integer("max_attempts", 5),
            backoff=self.number("backoff", 0.5), timeout=self.number("timeout", 5.0),
        )
