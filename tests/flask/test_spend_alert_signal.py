"""The Flask extension sends the blinker signal ``flask_ai_relay.spend_alert`` once per budget
threshold, with the app as sender."""

from __future__ import annotations

import time

from flask import Flask

from flask_ai_relay import AIRelay, spend_alert
from tests.conftest import make_config

BODY = {"model": "test-model", "messages": [{"role": "user", "content": "spend it"}]}


def test_spend_alert_signal(upstream, tmp_path):
    app = Flask("alerted")
    app.config["AI_RELAY"] = make_config(
        upstream, require_auth=False, storage={"ledger": f"sqlite:///{tmp_path}/u.db"},
        budgets={"default": {"daily": "0.0002"}, "soft_threshold": "0.5"},
    )
    AIRelay(app)
    received = []

    @spend_alert.connect_via(app)
    def on_alert(sender, alert):
        received.append((sender, alert))

    client = app.test_client()
    statuses = [client.post("/ai/v1/chat/completions", json=BODY).status_code for _ in range(8)]
    assert statuses[0] == 200 and statuses[-1] == 429
    deadline = time.monotonic() + 10  # the sink runs in the relay's background, bounded wait
    while len(received) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    AIRelay.relay_for(app)  # the relay is the app's
    assert [sender for sender, _ in received] == [app, app]
    assert sorted(str(alert.threshold) for _, alert in received) == ["0.5", "1"]
    assert {alert.caller for _, alert in received} == {"anonymous"}
