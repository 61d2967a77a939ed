"""Budget alerts: one signed webhook POST (and one log line, one host sink call) per caller,
budget period and threshold, however many requests pass it, across a restart (claims in the
ledger's SQLite file); webhooks retried with backoff."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from decimal import Decimal

import orjson

from asgi_ai_relay.alerts import SIGNATURE_HEADER, verify
from asgi_ai_relay.alerts.webhook import deliver
from asgi_ai_relay.config import load_config
from tests.conftest import make_config
from tests.fake_upstream import plan_reply
from tests.relay_calls import chat, relays  # noqa: F401
from tests.webhook_receiver import WebhookReceiver

SECRET = "whsec-test-0123456789"
KEYS = [{"key": "key-a", "caller": "a"}]
BODY = {"model": "test-model", "messages": [{"role": "user", "content": "spend some money please"}]}


def cost_of(body):
    plan = plan_reply(body, "openai")
    return (Decimal(plan.prompt_tokens) * Decimal("2.5") + plan.completion_tokens * 10) / 10**6


def alert_config(upstream, hook_url, ledger, limit, **extra):
    return make_config(
        upstream, api_keys=KEYS, storage={"ledger": ledger},
        budgets={"callers": {"a": {"daily": str(limit)}}, "soft_threshold": "0.5"},
        alerts={"webhook": {"url": hook_url, "secret": SECRET, "backoff": 0.05}}, **extra,
    )


def signed_alerts(posts):
    """The alerts POSTed, each checked against its signature."""
    out = []
    for headers, body in posts:
        assert headers["content-type"] == "application/json"
        assert verify(SECRET, body, headers[SIGNATURE_HEADER.lower()]), headers
        assert not verify("another secret", body, headers[SIGNATURE_HEADER.lower()])
        out.append(orjson.loads(body))
    return out


async def test_one_signed_alert_per_threshold_and_period(upstream, relays, tmp_path, caplog):
    # Estimates hold only the prompt, so the request admitted last costs more than its hold and
    # the spend ends past 100 %.
    limit = cost_of(BODY) * 10
    sunk = []
    with WebhookReceiver() as hook:
        relay = relays(alert_config(upstream, hook.url, f"sqlite:///{tmp_path}/u.db", limit))
        relay.alerts.sinks.append(sunk.append)
        with caplog.at_level(logging.WARNING, logger="asgi_ai_relay"):
            statuses = [(await chat(relay, BODY, key="key-a")).status for _ in range(14)]
            await relay.shutdown()  # waits for the background deliveries
        assert statuses.count(200) >= 10 and statuses[-1] == 429
        alerts = signed_alerts(hook.posts)
        assert sorted(a["threshold"] for a in alerts) == ["0.5", "1"]
        today = datetime.now(UTC).strftime("%Y-%m-%d")
        for alert in alerts:
            assert (alert["caller"], alert["budget"], alert["period"], alert["limit_usd"]) == ("a", "daily", today, str(limit))
            assert Decimal(alert["spent_usd"]) >= Decimal(alert["threshold"]) * limit
        assert {a["kind"] for a in alerts} == {"soft", "exceeded"} and len({a["id"] for a in alerts}) == 2
        assert sorted(str(a.threshold) for a in sunk) == ["0.5", "1"]
        assert sum("budget: caller a has used" in r.getMessage() for r in caplog.records) == 2

        # Another process on the same ledger (a restart, a second worker): the claims in the
        # ledger's SQLite file say both were sent this period.
        again = relays(alert_config(upstream, hook.url, f"sqlite:///{tmp_path}/u.db", limit))
        assert (await chat(again, BODY, key="key-a")).status == 429
        await again.shutdown()
        assert len(hook.posts) == 2


async def test_no_alert_below_the_threshold(upstream, relays, tmp_path):
    with WebhookReceiver() as hook:
        relay = relays(alert_config(upstream, hook.url, f"sqlite:///{tmp_path}/u.db", cost_of(BODY) * 10))
        for _ in range(3):
            assert (await chat(relay, BODY, key="key-a")).status == 200
        await relay.shutdown()
    assert hook.posts == []


async def test_webhook_is_retried_with_backoff_until_taken():
    hook_settings = load_config({"alerts": {"webhook": {"url": "http://127.0.0.1:1/x", "secret": SECRET}}}).alerts.webhooks[0]
    with WebhookReceiver(statuses=(503, 500, 200)) as hook:
        settings = type(hook_settings)(url=hook.url, secret=hook_settings.secret, max_attempts=5, backoff=0.05, timeout=5)
        started = time.monotonic()
        assert await deliver(settings, {"id": "x1", "caller": "a"}) is True
        waited = time.monotonic() - started
    assert len(hook.posts) == 3 and len({body for _, body in hook.posts}) == 1
    assert signed_alerts(hook.posts)[0]["id"] == "x1" and hook.posts[0][0]["x-relay-alert-id"] == "x1"
    assert waited >= 0.05 + 0.1  # the two waits between the three tries
    with WebhookReceiver(statuses=(400,)) as refusing:
        settings = type(hook_settings)(url=refusing.url, secret=hook_settings.secret, max_attempts=5, backoff=0.05)
        assert await deliver(settings, {"id": "x2"}) is False
    assert len(refusing.posts) == 1  # a 4xx is not tried again


async def test_sqlite_claims_are_once_per_ttl(tmp_path):
    from asgi_ai_relay.alerts.claims import SQLiteClaims

    first, second = SQLiteClaims(str(tmp_path / "l.db")), SQLiteClaims(str(tmp_path / "l.db"))
    assert await first.claim("a|2026-12-01|0.8", 60) is True
    assert await second.claim("a|2026-12-01|0.8", 60) is False
    assert await second.claim("a|2026-12-01|1", 60) is True
    assert await first.claim("b|2026-12|0.8", 0.0001) is True
    time.sleep(0.01)  # past that claim's ttl (a clock, not a race)
    assert await second.claim("b|2026-12|0.8", 60) is True


async def test_postgres_claims_are_once_per_ttl(postgres_url):
    import uuid

    import psycopg

    from asgi_ai_relay.alerts.claims import PostgresClaims

    table = f"relay_alerts_{uuid.uuid4().hex[:12]}"
    try:
        first, second = PostgresClaims(postgres_url, table), PostgresClaims(postgres_url, table)
        assert await first.claim("a|2026-12-01|0.8", 60) is True
        assert await second.claim("a|2026-12-01|0.8", 60) is False
        assert await second.claim("a|2026-12|1", 60) is True
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {table}")
