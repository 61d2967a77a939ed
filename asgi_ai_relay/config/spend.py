"""The ``[dashboard]`` and ``[alerts]`` sections: the spend page at ``{prefix}/dashboard`` and
where budget alerts go (see :mod:`asgi_ai_relay.alerts`); read by :mod:`.spend_reader`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .schema import Secret

__all__ = ["AlertSettings", "DashboardSettings", "WebhookSettings"]


@dataclass(frozen=True, slots=True)
class DashboardSettings:
    #: Serve ``{prefix}/dashboard`` to admin callers (off by default).
    enabled: bool = False
    #: Days the page shows unless its ``from`` says otherwise.
    days: int = 14


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    """One URL that budget alerts are POSTed to, as JSON, signed with ``secret``
    (``X-Relay-Signature: sha256=<hex HMAC-SHA256 of the body>``)."""

    url: str
    secret: Secret | None = None
    #: Tries per alert, the first one included; waits double from ``backoff`` seconds.
    max_attempts: int = 5
    backoff: float = 0.5
    #: Seconds one POST may take.
    timeout: float = 5.0


@dataclass(frozen=True, slots=True)
class AlertSettings:
    #: Log one WARNING line per alert on logger ``asgi_ai_relay``.
    log: bool = True
    webhooks: tuple[WebhookSettings, ...] = ()
