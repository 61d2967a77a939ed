"""GCRA rate limits on both backends: exact counts, all-or-nothing, reconciliation."""

from __future__ import annotations

import asyncio
import math
import uuid

import pytest

from asgi_ai_relay.errors import ConfigurationError
from asgi_ai_relay.limits import Bucket, Rate, format_reset
from asgi_ai_relay.storage import MemoryRateLimits, limits_from_uri


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def store(request):
    if request.param == "memory":
        yield MemoryRateLimits(clock=Clock())
        return
    url = request.getfixturevalue("redis_url")
    backend = limits_from_uri(f"{url}?prefix=test-{uuid.uuid4().hex}")
    yield backend
    await backend.aclose()


def requests_bucket(key, rpm, burst=0):
    return Bucket(key, Rate(rpm, 60.0, burst), "requests")


async def test_n_per_minute_with_3n_concurrent_admits_exactly_n(store):
    n = 7
    bucket = requests_bucket("caller:alice:r", n)
    decisions = await asyncio.gather(*(store.acquire([bucket], [1]) for _ in range(3 * n)))
    allowed = [d for d in decisions if d.allowed]
    refused = [d for d in decisions if not d.allowed]
    assert len(allowed) == n
    assert sorted(d.states[0].remaining for d in allowed) == list(range(n))
    # Capacity returns one unit every 60/n seconds: that is how long the refused must wait.
    assert all(0 < d.retry_after <= 60 / n + 1e-3 for d in refused)
    assert all(d.states[0].remaining == 0 for d in refused)


async def test_capacity_returns_exactly_when_announced():
    clock = Clock()
    store = MemoryRateLimits(clock=clock)
    bucket = requests_bucket("k", 6)  # one every 10 s
    for _ in range(6):
        assert (await store.acquire([bucket], [1])).allowed
    refused = await store.acquire([bucket], [1])
    assert refused.retry_after == pytest.approx(10.0)
    clock.now += 9.99
    assert not (await store.acquire([bucket], [1])).allowed
    clock.now += 0.01
    decision = await store.acquire([bucket], [1])
    assert decision.allowed and decision.states[0].remaining == 0
    assert decision.states[0].reset == pytest.approx(60.0)


async def test_one_refusing_bucket_charges_none(store):
    small = requests_bucket("model:m:r", 1)
    large = Bucket("global:all:t", Rate(1000), "tokens")
    assert (await store.acquire([small, large], [1, 100])).allowed
    refused = await store.acquire([small, large], [1, 100])
    assert not refused.allowed
    # The token bucket was not charged by the refused request: 900 left.
    decision = await store.acquire([large], [900])
    assert decision.allowed and decision.states[0].remaining == 0


async def test_cost_over_the_burst_can_never_pass(store):
    bucket = Bucket("caller:x:t", Rate(100, burst=50), "tokens")
    decision = await store.acquire([bucket], [51])
    assert not decision.allowed and math.isinf(decision.retry_after)
    assert (await store.acquire([bucket], [50])).allowed


async def test_adjust_charges_and_refunds(store):
    bucket = Bucket("caller:y:t", Rate(1000), "tokens")
    assert (await store.acquire([bucket], [600])).allowed
    await store.adjust([bucket], [-500])  # used 100, not 600
    decision = await store.acquire([bucket], [900])
    assert decision.allowed and decision.states[0].remaining == 0
    await store.adjust([bucket], [300])  # the call used more than estimated: into debt
    refused = await store.acquire([bucket], [1])
    assert not refused.allowed
    assert refused.retry_after == pytest.approx(301 * 0.06, abs=0.05)


def test_reset_spelling():
    assert format_reset(0.02) == "20ms"
    assert format_reset(1.5) == "1.5s"
    assert format_reset(360) == "6m0s"


def test_unknown_scheme_and_bad_redis_option():
    with pytest.raises(ConfigurationError, match="storage.limits"):
        limits_from_uri("memcached://x")
    with pytest.raises(ConfigurationError, match="unknown option"):
        limits_from_uri("redis://127.0.0.1:6379/0?colour=blue")


def test_limits_and_queue_config():
    from asgi_ai_relay.config import LimitConfig, load_config

    config = load_config({
        "limits": {"global": {"rpm": 100, "tpm": 50_000, "burst": 10}, "caller": {"rpm": 5},
                   "callers": {"batch-job": {"rpm": 1}}, "models": {"gpt-4.1": {"tpm": 1000, "token_burst": 200}}},
        "queue": {"max_in_flight": 32, "per_provider": 8, "max_queue": 100, "max_wait": 2.5,
                  "on_limit": "reject", "fail_mode": "closed", "priority_header": True},
    })
    assert config.limits.everyone == LimitConfig(rpm=100, tpm=50_000, burst=10)
    assert config.limits.callers["batch-job"].rpm == 1
    assert config.limits.models["gpt-4.1"] == LimitConfig(tpm=1000, token_burst=200)
    assert (config.queue.max_in_flight, config.queue.on_limit, config.queue.fail_mode) == (32, "reject", "closed")


@pytest.mark.parametrize(("data", "message"), [
    ({"limits": {"caller": {"rps": 1}}}, "limits.caller.rps: unknown key"),
    ({"limits": {"global": {"rpm": -1}}}, "limits.global.rpm: must be at least 0"),
    ({"limits": {"models": {"nope": {"rpm": 1}}}}, "limits.models.nope: unknown model"),
    ({"queue": {"on_limit": "drop"}}, "queue.on_limit: one of queue, reject"),
    ({"queue": {"fail_mode": "maybe"}}, "queue.fail_mode: one of open, closed"),
    ({"storage": {"limits": "memcached://x"}}, "storage.limits: unknown scheme"),
])
def test_bad_traffic_config_names_the_key(data, message):
    from asgi_ai_relay import Relay

    with pytest.raises(ConfigurationError, match=message):
        Relay(data)
