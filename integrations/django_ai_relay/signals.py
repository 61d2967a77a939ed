"""Signals of the relay, for receivers in the Django site.

    from django.dispatch import receiver
    from django_ai_relay.signals import spend_alert

    @receiver(spend_alert)
    def page_someone(sender, alert, **kwargs):   # alert: asgi_ai_relay.alerts.Alert
        ...

``spend_alert`` is sent once per caller, budget period and threshold (``budgets.soft_threshold``
and 100 %), across every worker (see ``asgi_ai_relay.alerts``), from a worker thread of the
relay, never from a request's own thread; the sender is :class:`~asgi_ai_relay.alerts.Alert`.
"""

from __future__ import annotations

from django.dispatch import Signal

from asgi_ai_relay.alerts import Alert

__all__ = ["send_spend_alert", "spend_alert"]

spend_alert = Signal()


def send_spend_alert(alert: Alert) -> None:
    """The relay's sink for ``spend_alert`` (a failing receiver is logged by the relay)."""
    spend_alert.send(sender=Alert, alert=alert)
