"""Config of the routing keys, load balancing over deployments, virtual models, retry rules."""

from __future__ import annotations

import asyncio
import random

import pytest

from asgi_ai_relay.config import RetrySettings, load_config
from asgi_ai_relay.errors import (
    ConfigurationError,
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeout,
)
from asgi_ai_relay.retry import Verdict, backoff, classify, wait_before_retry
from asgi_ai_relay.routing import Router
from tests.fake_upstream import Fault
from tests.resilience_helpers import _second_server, _shutdown_relays, build_relay, chat, client, second  # noqa: F401


def status(code, message="x", code_name=None, retry_after=None):
    return UpstreamStatusError(message, upstream_status=code, upstream_code=code_name, retry_after=retry_after)


@pytest.mark.parametrize(
    ("error", "verdict"),
    [
        (status(429), Verdict.RETRY),
        (status(500), Verdict.RETRY),
        (status(503), Verdict.RETRY),
        (status(408), Verdict.RETRY),
        (UpstreamConnectError("x"), Verdict.RETRY),
        (UpstreamTimeout("x"), Verdict.RETRY),
        (UpstreamProtocolError("x"), Verdict.RETRY),
        (status(401), Verdict.NEXT),
        (status(403), Verdict.NEXT),
        (status(404), Verdict.NEXT),
        (status(400), Verdict.FATAL),
        (status(422), Verdict.FATAL),
        (status(400, code_name="context_length_exceeded"), Verdict.CONTEXT),
        (status(400, "prompt is too long: 250000 tokens > 200000 maximum"), Verdict.CONTEXT),
    ],
)
def test_classify(error, verdict):
    assert classify(error) is verdict


def test_waits():
    settings = RetrySettings(base_delay=1, max_delay=5)
    rng = random.Random(3)
    waits = [backoff(settings, n, rng) for n in (1, 2, 3, 4, 5, 6)]
    assert all(0 <= w <= min(5, 2 ** (n - 1)) for n, w in zip((1, 2, 3, 4, 5, 6), waits, strict=True))
    assert wait_before_retry(status(429, retry_after=7), settings, 1, remaining=10) == 7
    assert wait_before_retry(status(429, retry_after=7), settings, 1, remaining=6) is None


def test_routing_config_example():
    config = load_config({
        "providers": {"a": {"base_url": "http://127.0.0.1:1/v1"}, "b": {"base_url": "http://127.0.0.1:2/v1"}},
        "retry": {"max_attempts": 4, "deadline": 20},
        "breaker": {"failure_threshold": 2, "failure_rate": 0.5, "cooldown": 5},
        "timeouts": {"first_byte": 3},
        "storage": {"breakers": "redis://127.0.0.1:6379/0?prefix=app:"},
        "models": {
            "m": {
                "deployments": [{"provider": "a", "upstream": "x", "weight": 3}, {"provider": "b", "name": "bee"}],
                "strategy": "least-busy", "retry": {"max_attempts": 1}, "tier": 2,
                "capabilities": ["tools"], "context_window": 128000, "context_fallbacks": ["gpt-4.1"],
            },
        },
        "routing": {"virtual": {"auto": {"models": ["m", "gpt-4.1"], "min_tier": 2, "needs": ["tools"]}}},
    })
    m = config.models["m"]
    assert (m.provider, m.upstream) == ("a", "x")
    assert [(d.name, d.provider, d.upstream, d.weight) for d in m.deployments] == [("a/x", "a", "x", 3.0), ("bee", "b", "m", 1.0)]
    assert m.retry == RetrySettings(max_attempts=1, base_delay=0.5, max_delay=8.0, deadline=20)
    assert config.retry.max_attempts == 4 and config.breaker.failure_rate == 0.5 and config.timeouts.first_byte == 3
    assert config.routing.virtual["auto"].needs == frozenset({"tools"})


@pytest.mark.parametrize(
    ("models", "extra", "message"),
    [
        ({"m": {"provider": "mock", "fallbacks": ["nope"]}}, {}, "models.m.fallbacks: unknown model 'nope'"),
        ({"m": {"provider": "mock", "context_fallbacks": ["nope"]}}, {}, "models.m.context_fallbacks: unknown model"),
        ({"m": {"provider": "mock", "strategy": "random"}}, {}, "models.m.strategy: one of"),
        ({"m": {"deployments": [{"provider": "zzz"}]}}, {}, r"models.m.deployments\[0\].provider"),
        ({"m": {"provider": "mock", "capabilities": ["telepathy"]}}, {}, "unknown capability 'telepathy'"),
        ({"m": {"provider": "mock", "retry": {"tries": 2}}}, {}, "models.m.retry.tries: unknown key"),
        ({}, {"breaker": {"failure_rate": 2}}, "breaker.failure_rate: between 0 and 1"),
        ({}, {"routing": {"virtual": {"gpt-4.1": {}}}}, "routing.virtual.gpt-4.1: a model with this name exists"),
        ({}, {"routing": {"virtual": {"auto": {"models": ["x"]}}}}, "routing.virtual.auto.models: unknown model 'x'"),
    ],
)
def test_bad_routing_config_names_the_key(models, extra, message):
    with pytest.raises(ConfigurationError, match=message):
        load_config({"models": models, **extra})


def test_strategies_order_deployments():
    config = load_config({
        "providers": {"a": {"base_url": "http://127.0.0.1:1/v1"}, "b": {"base_url": "http://127.0.0.1:2/v1"}},
        "models": {
            "w": {"deployments": [{"provider": "a", "weight": 3}, {"provider": "b", "weight": 1}]},
            "busy": {"strategy": "least-busy", "deployments": [{"provider": "a"}, {"provider": "b"}]},
            "fast": {"strategy": "lowest-latency", "deployments": [{"provider": "a"}, {"provider": "b"}]},
        },
    })
    router = Router(config)
    router.rng = random.Random(5)
    firsts = [router.order(config.models["w"])[0].model.provider for _ in range(400)]
    assert 250 < firsts.count("a") < 350  # about three in four
    a, b = router.targets["busy"]
    a.in_flight = 2
    assert [t.model.provider for t in router.order(config.models["busy"])] == ["b", "a"]
    fa, fb = router.targets["fast"]
    fa.observe(10.0)
    assert router.order(config.models["fast"])[0] is fb  # not measured yet: tried first
    fb.observe(50.0)
    assert router.order(config.models["fast"])[0] is fa
    for _ in range(20):
        fa.observe(200.0)
    assert router.order(config.models["fast"])[0] is fb


async def test_deployments_fail_over_within_the_alias(upstream, second):
    deployments = [{"provider": "up", "upstream": "gpt-4o-mini", "weight": 1000}, {"provider": "up2", "upstream": "gpt-4o", "weight": 0.001}]
    relay, _, sleeps = build_relay(upstream, second, retry={"max_attempts": 2}, models={"lb": {"deployments": deployments}})
    upstream.script(Fault.status(503))
    answer = await chat(relay, "lb")
    assert answer.status_code == 200 and answer.headers["x-relay-provider"] == "up2"
    assert answer.headers["x-relay-model"] == "lb" and sleeps.waits == []  # another deployment: no wait


async def test_least_busy_sends_to_the_idle_deployment(upstream, second):
    deployments = [{"provider": "up", "upstream": "gpt-4o-mini"}, {"provider": "up2", "upstream": "gpt-4o"}]
    relay, _, _ = build_relay(upstream, second, models={"lb": {"deployments": deployments, "strategy": "least-busy"}})
    upstream.script(Fault.delay(1.0))
    slow = asyncio.ensure_future(chat(relay, "lb"))
    await asyncio.to_thread(upstream.wait_for_requests, 1, 5)
    quick = await chat(relay, "lb")
    assert quick.headers["x-relay-provider"] == "up2"
    assert (await slow).headers["x-relay-provider"] == "up"


def virtual_relay(upstream, second, **virtual):
    models = {
        "cheap": {"provider": "up", "upstream": "gpt-4o-mini", "price": {"input": 0.1, "output": 0.4}, "tier": 1, "context_window": 8000},
        "mid": {"provider": "up2", "upstream": "gpt-4o", "price": {"input": 1, "output": 4}, "tier": 2, "capabilities": ["tools"]},
        "top": {"provider": "up2", "upstream": "gpt-4o", "price": {"input": 5, "output": 20}, "tier": 3, "capabilities": ["tools", "vision"]},
    }
    routing = {"virtual": {"auto": {"models": ["top", "mid", "cheap"], **virtual}}}
    return build_relay(upstream, second, models=models, routing=routing, retry={"max_attempts": 1}, breaker={"failure_threshold": 1})


async def test_virtual_model_picks_the_cheapest_fitting_healthy_model(upstream, second):
    relay, _, _ = virtual_relay(upstream, second)
    assert (await chat(relay, "auto")).headers["x-relay-model"] == "cheap"
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    assert (await chat(relay, "auto", tools=[tool])).headers["x-relay-model"] == "mid"
    assert (await chat(relay, "auto", max_tokens=10_000)).headers["x-relay-model"] == "mid"  # too big for cheap
    image = [{"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": "data:,"}}]}]
    async with client(relay) as http:
        answer = await http.post("/ai/v1/chat/completions", json={"model": "auto", "messages": image})
    assert answer.headers["x-relay-model"] == "top"
    rows = relay.ledger.rows()
    assert [r.model for r in rows] == ["cheap", "mid", "mid", "top"]


async def test_virtual_model_skips_an_unhealthy_model_and_falls_over_by_price(upstream, second):
    relay, _, _ = virtual_relay(upstream, second)
    upstream.script(Fault.status(500))
    first = await chat(relay, "auto")
    assert first.headers["x-relay-model"] == "mid"  # cheap failed, the next cheapest answered
    assert (await chat(relay, "auto")).headers["x-relay-model"] == "mid"
    assert len(upstream.requests) == 1  # cheap's breaker is open: not even tried


async def test_virtual_model_with_tier_and_no_fit(upstream, second):
    relay, _, _ = virtual_relay(upstream, second, min_tier=3)
    assert (await chat(relay, "auto")).headers["x-relay-model"] == "top"
    relay, _, _ = virtual_relay(upstream, second, min_tier=3, needs=["tools"])
    answer = await chat(relay, "auto", max_tokens=10_000)
    assert answer.headers["x-relay-model"] == "top"
    relay, _, _ = virtual_relay(upstream, second, min_tier=2)
    answer = await chat(relay, "auto", messages=[{"role": "user", "content": "x"}], max_tokens=10_000)
    assert answer.status_code == 200
    bad = {"routing": {"virtual": {"auto": {"models": ["cheap"], "needs": ["vision"]}}}}
    relay, _, _ = build_relay(upstream, second, models={"cheap": {"provider": "up", "upstream": "gpt-4o-mini"}}, **bad)
    answer = await chat(relay, "auto")
    assert answer.status_code == 400 and "No model behind 'auto' fits" in answer.json()["error"]["message"]
    assert answer.json()["error"]["param"] == "model"


async def test_unknown_model_lists_virtual_names(upstream, second):
    relay, _, _ = virtual_relay(upstream, second)
    answer = await chat(relay, "nope")
    assert answer.status_code == 404 and "auto" in answer.json()["error"]["message"]


async def test_health_reports_latency_and_error_rate(upstream, second):
    relay, _, _ = build_relay(upstream, second, retry={"max_attempts": 1})
    upstream.script(Fault.status(500))
    await chat(relay)
    await chat(relay)
    async with client(relay) as http:
        health = (await http.get("/ai/v1/health")).json()
    primary = health["deployments"]["up/gpt-4o-mini"]
    assert primary["models"] == ["test-model"] and primary["state"] == "closed"
    assert primary["recent_requests"] == 2 and primary["error_rate"] == 0.5
    assert primary["latency_ms"] > 0 and primary["in_flight"] == 0
    assert health["deployments"]["up2/gpt-4o"]["recent_requests"] == 1
