"""Budget alerts: when a caller's spend passes ``budgets.soft_threshold`` of a daily or monthly
budget, and again when it reaches 100 %, one alert goes to every configured sink, once per
caller, budget period and threshold, however many workers and hosts share the budget. A managed
key's budget and a team's (their counters ``key:<id>`` and ``team:<name>``, see
:func:`~asgi_ai_relay.stages.budget.budgets_of`) alert the same way, once per subject: the
alert names the subject's kind (``caller``, ``key``, ``team``) and id.

    [alerts]
    log = true                                   # one WARNING line on logger "asgi_ai_relay"
    webhook = { url = "https://ops.example/relay-alerts", secret = "env:RELAY_ALERT_SECRET" }

Sinks: the log line, webhooks (:mod:`.webhook`: POSTed JSON signed with HMAC-SHA256, retried
with backoff in the background) and the host's own callables in :attr:`Alerts.sinks` (the
Django adapter sends the ``django_ai_relay.signals.spend_alert`` signal, the Flask extension the
blinker signal ``flask_ai_relay.spend_alert``), run in a thread so they may block.

"Once" is decided by a claim (:mod:`.claims`) in the store every worker shares: ``SET NX`` with
a TTL past the period's end on the Redis budget store, else a row in the ledger's SQLite file or
PostgreSQL database, else this process's memory. Each process also remembers what it raised,
so after a crossing the claim store is asked once per process, not once per request.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from .claims import MemoryClaims, claims_for
from .webhook import SIGNATURE_HEADER, deliver, sign, verify

if TYPE_CHECKING:
    from ..config.spend import AlertSettings
    from ..relay import Relay
    from ..storage.budget_state import Window

__all__ = ["SIGNATURE_HEADER", "Alert", "Alerts", "Sink", "sign", "verify"]

logger = logging.getLogger("asgi_ai_relay")

#: Seconds a claim outlives its period (a late settle of the period still finds it).
_GRACE = 86_400
_ONE = Decimal(1)


@dataclass(frozen=True, slots=True)
class Alert:
    """One subject (a caller, a key, a team) passing one threshold of one budget period;
    ``caller`` is the name of its spend counter."""

    caller: str
    #: ``daily`` or ``monthly``.
    budget: str
    #: The period's name: ``2026-12-01`` (a UTC day) or ``2026-12`` (a UTC month).
    period: str
    #: The fraction passed: ``budgets.soft_threshold``, or 1 (the budget is spent).
    threshold: Decimal
    limit_usd: Decimal
    spent_usd: Decimal
    ts: float

    @property
    def subject(self) -> tuple[str, str]:
        """Whose budget: ``("key", key id)``, ``("team", name)`` or ``("caller", caller id)``."""
        kind, _, name = self.caller.partition(":")
        return (kind, name) if kind in ("key", "team") and name else ("caller", self.caller)

    @property
    def key(self) -> str:
        """What "once" is counted by: the subject (its counter's name), period and threshold."""
        return f"{self.caller}|{self.period}|{self.threshold.normalize()}"

    @property
    def id(self) -> str:
        return hashlib.sha256(self.key.encode("utf-8", "surrogatepass")).hexdigest()[:32]

    def as_dict(self) -> dict[str, Any]:
        """The alert as JSON (the webhook's body, the signals' ``alert``)."""
        kind, name = self.subject
        return {
            "type": "relay.budget_alert", "id": self.id, "caller": self.caller, "subject_kind": kind, "subject_id": name,
            "budget": self.budget,
            "period": self.period, "threshold": str(self.threshold.normalize()),
            "kind": "exceeded" if self.threshold >= _ONE else "soft", "limit_usd": str(self.limit_usd),
            "spent_usd": str(self.spent_usd), "ts": self.ts,
        }


#: A host's sink: called once per alert, in a worker thread.
Sink = Callable[[Alert], None]


class Alerts:
    """The alerts of one relay: which thresholds each caller passed, and the sinks."""

    def __init__(self, settings: AlertSettings, soft_threshold: Decimal) -> None:
        self.settings = settings
        self.thresholds = tuple(sorted({soft_threshold, _ONE}))
        #: The host's sinks (signals), each ``(alert) -> None``.
        self.sinks: list[Sink] = []
        self._raised: set[str] = set()
        self._memory = MemoryClaims()

    def crossed(self, relay: Relay, window: Window, day: Decimal, month: Decimal) -> None:
        """Raise (in the background) what ``day`` and ``month`` spend passes for the first time in
        this process; cheap when nothing new is passed."""
        for name, limit, period, spent, left in (("daily", window.daily, window.day, day, window.day_left),
                                                 ("monthly", window.monthly, window.month, month, window.month_left)):
            if limit is None or not limit:
                continue
            for threshold in self.thresholds:
                if spent < limit * threshold:
                    break
                alert = Alert(window.caller, name, period, threshold, limit, spent, time.time())
                if alert.key in self._raised:
                    continue
                self._raised.add(alert.key)
                relay.spawn(self._raise(relay, alert, left + _GRACE))

    async def _raise(self, relay: Relay, alert: Alert, ttl: float) -> None:
        try:
            first = await claims_for(relay, self._memory).claim(alert.key, ttl)
        except Exception as exc:  # a lost alert is worse than a repeated one
            logger.warning("budget alert %s: the claim store failed (%s); sending it anyway", alert.key, exc)
            first = True
        if first:
            await self.send(relay, alert)

    async def send(self, relay: Relay, alert: Alert) -> None:
        """Send ``alert`` to every sink now (no claim)."""
        if self.settings.log:
            logger.warning(
                "budget: %s %s has used %s of its %s budget of %s USD (%s, threshold %s)",
                *alert.subject, f"{alert.spent_usd:.6f}", alert.budget, alert.limit_usd, alert.period,
                f"{alert.threshold:.0%}",
            )
        if self.settings.webhooks:
            body = alert.as_dict()
            await asyncio.gather(*(deliver(hook, body) for hook in self.settings.webhooks))
        for sink in list(self.sinks):
            try:
                await asyncio.to_thread(sink, alert)
            except Exception:
                logger.exception("budget alert %s: a sink failed", alert.key)
