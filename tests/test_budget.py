"""Budgets: checked before the call, the crossing request refused, seeded from the ledger."""

from __future__ import annotations

import logging
import time
from decimal import Decimal

import openai
import orjson

from asgi_ai_relay import Relay, RelayMiddleware
from asgi_ai_relay.pricing import model_cost
from asgi_ai_relay.stages.budget import estimate_request_usage
from tests.conftest import make_config
from tests.fake_upstream import plan_reply
from tests.live import LiveServer
from tests.relay_calls import relays, chat

KEYS = [{"key": "key-a", "caller": "a"}, {"key": "key-b", "caller": "b"}]
BODY = {"model": "test-model", "messages": [{"role": "user", "content": "spend some money please"}], "max_tokens": 50}


def actual_cost(body):
    plan = plan_reply(body, "openai")
    return (Decimal(plan.prompt_tokens) * Decimal("2.5") + plan.completion_tokens * 10) / 10**6


def estimate(relay, body):
    return model_cost(relay.config, relay.config.models["test-model"], estimate_request_usage(body))


async def test_budget_blocks_the_request_that_would_cross(upstream, caplog, tmp_path, relays):
    probe = relays(make_config(upstream))
    cost, held = actual_cost(BODY), estimate(probe, BODY)
    # room for exactly three requests: the fourth's estimate would cross the limit
    limit = 3 * cost + held - Decimal("0.000000001")
    assert 3 * cost + held > limit >= 2 * cost + held
    config = make_config(
        upstream, api_keys=KEYS, storage={"ledger": f"sqlite:///{tmp_path}/u.db"},
        # warn once spend passes 2.5 requests' worth: after the third
        budgets={"callers": {"a": {"daily": str(limit)}}, "soft_threshold": str(Decimal("2.5") * cost / limit)},
    )
    relay = relays(config)
    await relay.startup()
    with caplog.at_level(logging.WARNING, logger="asgi_ai_relay"):
        statuses = [(await chat(relay, BODY, key="key-a")).status for _ in range(3)]
    refused = await chat(relay, BODY, key="key-a")
    assert statuses == [200, 200, 200]
    assert refused.status == 429
    error = orjson.loads(refused.body)["error"]
    assert error["code"] == "budget_exceeded" and error["type"] == "insufficient_quota"
    assert 0 < int(refused.headers["retry-after"]) <= 86400
    assert (await chat(relay, BODY, key="key-b")).status == 200  # another caller is not affected
    assert len(upstream.requests) == 4
    await relay.shutdown()  # the alert's log line is written in the background, awaited here
    assert sum("budget: caller a has used" in r.getMessage() for r in caplog.records) == 1
    rows = relay.ledger.rows()
    assert sum(r.cost_usd for r in rows if r.caller == "a") == 3 * cost <= limit
    assert [r.status for r in rows if r.caller == "a"] == [200, 200, 200, 429]

    restarted = relays(config)  # spend is seeded from the ledger: still over budget
    await restarted.startup()
    assert (await chat(restarted, BODY, key="key-a")).status == 429
    await restarted.shutdown()


async def test_concurrent_requests_cannot_share_the_last_room(upstream, relays):
    import asyncio

    probe = relays(make_config(upstream))
    held = estimate(probe, BODY)
    relay = relays(make_config(upstream, api_keys=KEYS, budgets={"default": {"monthly": str(held * 2)}}))
    responses = await asyncio.gather(*(chat(relay, BODY, key="key-b") for _ in range(5)))
    assert sorted(r.status for r in responses) == [200, 200, 429, 429, 429]


def test_budget_error_reaches_the_openai_sdk(upstream):
    relay = Relay(make_config(upstream, api_keys=KEYS, budgets={"default": {"daily": 0}}))
    with LiveServer(RelayMiddleware(relay=relay)) as server:
        client = openai.OpenAI(base_url=f"{server.url}/ai/v1", api_key="key-a", max_retries=0)
        try:
            client.chat.completions.create(model="test-model", messages=BODY["messages"])
        except openai.RateLimitError as error:
            assert error.body["code"] == "budget_exceeded"
        else:
            raise AssertionError("the budget did not refuse the request")
    assert upstream.requests == []


async def test_unreachable_budget_store_fails_open_or_closed(upstream, relays):
    import pytest

    for mode, expected in (("open", 200), ("closed", 503)):
        relay = relays(make_config(upstream, api_keys=KEYS, queue={"fail_mode": mode},
                                   storage={"budgets": "redis://127.0.0.1:1/0?prefix=x"},
                                   budgets={"default": {"daily": 1}}))
        answer = await chat(relay, BODY, key="key-a")
        assert answer.status == expected, mode
        if expected == 503:
            assert answer.headers["retry-after"] == "1"
        await relay.shutdown()
    with pytest.raises(Exception, match="storage.budgets"):
        Relay(make_config(upstream, storage={"budgets": "memcached://x"}))


async def test_a_cancelled_request_gives_its_hold_back(upstream, relays):
    import asyncio

    from tests.relay_calls import GatedTransport, until

    gate = GatedTransport()
    relay = relays(make_config(upstream, api_keys=KEYS, budgets={"default": {"monthly": 1}}), transport=gate)
    task = asyncio.ensure_future(chat(relay, BODY, key="key-a"))
    await until(lambda: gate.arrived == 1)
    month = relay.spend.window("a", time.time()).month
    assert relay.spend.spent("a", month) == estimate(relay, BODY)  # held while in flight
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert relay.spend.spent("a", month) == 0
    assert [r.status for r in relay.ledger.rows()] == [499]
