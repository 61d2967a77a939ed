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
