"""Budget alerts with 2 uvicorn workers sharing a budget on a private redis-server: the webhook
receiver gets exactly one signed alert per threshold per period, whichever worker passed it
(the claim is a ``SET NX`` on the budget store's Redis)."""

from __future__ import annotations

import uuid
from decimal import Decimal

import orjson
import pytest

from asgi_ai_relay.alerts import SIGNATURE_HEADER, verify
from tests.webhook_receiver import WebhookReceiver
from tests.workers.fixtures import burst, host_config, key_env, pids, private_redis  # noqa: F401
from tests.workers.servers import Host

pytestmark = [pytest.mark.redis, pytest.mark.timeout(180)]

SECRET = "whsec-workers-0123456789"
#: The budget, in requests of the fixed size every request of the test has.
BUDGET_REQUESTS = 12


def test_one_alert_per_threshold_with_two_workers(upstream, private_redis, tmp_path):
    probe = host_config(upstream, callers=("alerted",), storage={"ledger": "memory://"})
    with Host("uvicorn-fastapi", workers=1, config=probe, tmp=tmp_path, env=key_env(("alerted",))) as host:
        one = burst(host, "alerted", 1, prefix="probe000")[0]
        assert one.status_code == 200
        cost = Decimal(one.headers["x-relay-cost-usd"])
    limit = cost * BUDGET_REQUESTS
    prefix = f"al-{uuid.uuid4().hex[:8]}"
    with WebhookReceiver() as hook:
        config = host_config(
            upstream, callers=("alerted",),
            storage={"ledger": f"sqlite:///{tmp_path}/ledger.db", "budgets": f"{private_redis.url}?prefix={prefix}&timeout=2"},
            budgets={"callers": {"alerted": {"daily": str(limit)}}, "soft_threshold": "0.5"},
            alerts={"webhook": {"url": hook.url, "secret": SECRET, "backoff": 0.05}},
        )
        with Host("uvicorn-fastapi", workers=2, config=config, tmp=tmp_path, env=key_env(("alerted",))) as host:
            answers = burst(host, "alerted", 3 * BUDGET_REQUESTS, concurrency=6, prefix="alert000")
            assert len(pids(answers)) == 2  # both workers spent from the budget
            assert {a.status_code for a in answers} == {200, 429}
        # The host has stopped: each worker's shutdown waited for its deliveries.
        posts = list(hook.posts)
    alerts = []
    for headers, body in posts:
        assert verify(SECRET, body, headers[SIGNATURE_HEADER.lower()])
        alerts.append(orjson.loads(body))
    assert sorted(a["threshold"] for a in alerts) == ["0.5", "1"], alerts
    assert {(a["caller"], a["budget"], a["limit_usd"]) for a in alerts} == {("alerted", "daily", str(limit))}
    claims = private_redis.cli("--scan", "--pattern", f"{prefix}:alert:*").split()
    assert len(claims) == 2
    ttl = int(private_redis.cli("pttl", claims[0]).strip())
    assert ttl > 86_400_000  # past the period's end (a day of grace)
