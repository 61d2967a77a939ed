"""``django_ai_relay.signals.spend_alert`` is sent once per budget threshold."""

from __future__ import annotations

import json
import time

import pytest

from tests.conftest import make_config

BODY = {"model": "test-model", "messages": [{"role": "user", "content": "spend it"}]}


@pytest.mark.django_db
def test_spend_alert_signal(settings, upstream, tmp_path, client):
    from django_ai_relay.signals import spend_alert

    settings.AI_RELAY = make_config(
        upstream, api_keys=[{"key": "key-a", "caller": "a"}], storage={"ledger": f"sqlite:///{tmp_path}/u.db"},
        budgets={"default": {"daily": "0.0002"}, "soft_threshold": "0.5"},
    )
    received = []

    def on_alert(sender, alert, **kwargs):
        received.append(alert)

    spend_alert.connect(on_alert)
    try:
        statuses = [client.post("/ai/v1/chat/completions", data=json.dumps(BODY), content_type="application/json",
                                HTTP_AUTHORIZATION="Bearer key-a").status_code for _ in range(8)]
        deadline = time.monotonic() + 10  # the sink runs in the relay's background, bounded wait
        while len(received) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        spend_alert.disconnect(on_alert)
    assert statuses[0] == 200 and statuses[-1] == 429
    assert sorted((a.caller, str(a.threshold), a.budget) for a in received) == [("a", "0.5", "daily"), ("a", "1", "daily")]
