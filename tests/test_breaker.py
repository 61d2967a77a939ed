"""The breaker state machine, the same against the in-process store and the real Redis."""

from __future__ import annotations

import logging
import uuid

import pytest

from asgi_ai_relay.breaker import BreakerState, CircuitOpen, MemoryBreakers, breakers_from_uri
from asgi_ai_relay.config import BreakerSettings
from asgi_ai_relay.errors import ConfigurationError

SETTINGS = BreakerSettings(failure_threshold=3, window=60, cooldown=30, half_open_probes=2)


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def store_factory(request):
    made = []

    def make(settings=SETTINGS):
        if request.param == "memory":
            store = MemoryBreakers(settings)
        else:
            url = request.getfixturevalue("redis_url")
            store = breakers_from_uri(f"{url}?prefix=test-breaker-{uuid.uuid4().hex}:", settings)
        made.append(store)
        return store

    yield make
    for store in made:
        if request.param == "redis":
            keys = await store.redis.keys(f"{store.prefix}*")
            if keys:
                await store.redis.delete(*keys)
        await store.aclose()


async def fail(store, name, now, times=1):
    for _ in range(times):
        await store.record(await store.allow(name, now), False, now)


async def test_opens_after_threshold_failures_in_window(store_factory):
    store = store_factory()
    await fail(store, "a", 100, 2)
    await store.record(await store.allow("a", 101), True, 101)
    assert (await store.view("a", 101)).state is BreakerState.CLOSED
    await fail(store, "a", 102)
    view = await store.view("a", 102)
    assert view.state is BreakerState.OPEN and view.retry_in == 30 and (view.requests, view.failures) == (4, 3)
    with pytest.raises(CircuitOpen) as info:
        await store.allow("a", 112)
    assert info.value.breaker == "a" and info.value.seconds_left == pytest.approx(20)
    assert "'a'" in info.value.message and "20.0s" in info.value.message
    assert (await store.view("b", 112)).state is BreakerState.CLOSED  # breakers are per name


async def test_old_failures_leave_the_window(store_factory):
    store = store_factory()
    await fail(store, "a", 100, 2)
    await fail(store, "a", 200)  # the first two are more than a window ago
    assert (await store.view("a", 200)).state is BreakerState.CLOSED
    assert (await store.view("a", 200)).failures == 1


async def test_half_open_admits_bounded_probes_and_success_closes(store_factory):
    store = store_factory()
    await fail(store, "a", 0, 3)
    assert (await store.view("a", 29.9)).state is BreakerState.OPEN
    assert (await store.view("a", 30)).state is BreakerState.HALF_OPEN
    first, second = await store.allow("a", 30), await store.allow("a", 30)
    assert first.probe and second.probe
    with pytest.raises(CircuitOpen) as info:
        await store.allow("a", 30)
    assert "half-open" in info.value.message
    await store.release(second)  # a cancelled probe gives its slot back
    third = await store.allow("a", 31)
    assert third.probe
    await store.record(first, True, 32)
    view = await store.view("a", 32)
    assert view.state is BreakerState.CLOSED and view.failures == 0
    assert not (await store.allow("a", 32)).probe


async def test_failed_probe_reopens_for_a_full_cooldown(store_factory):
    store = store_factory()
    await fail(store, "a", 0, 3)
    probe = await store.allow("a", 40)
    await store.record(probe, False, 40)
    view = await store.view("a", 41)
    assert view.state is BreakerState.OPEN and view.retry_in == pytest.approx(29)
    assert (await store.view("a", 70)).state is BreakerState.HALF_OPEN


async def test_failure_rate_mode(store_factory):
    store = store_factory(BreakerSettings(failure_threshold=100, failure_rate=0.5, min_requests=4, window=60))
    await fail(store, "a", 10, 1)
    await store.record(await store.allow("a", 10), True, 10)
    await fail(store, "a", 10, 1)
    assert (await store.view("a", 10)).state is BreakerState.CLOSED  # 3 requests: below min_requests
    await fail(store, "a", 11, 1)
    assert (await store.view("a", 11)).state is BreakerState.OPEN  # 3 of 4 failed


async def test_late_results_of_calls_started_before_opening_do_not_close_it(store_factory):
    store = store_factory()
    early = await store.allow("a", 0)
    await fail(store, "a", 1, 3)
    await store.record(early, True, 2)
    assert (await store.view("a", 2)).state is BreakerState.OPEN


def test_unknown_scheme_is_a_configuration_error():
    with pytest.raises(ConfigurationError, match="storage.breakers: unknown scheme 'memcached'"):
        breakers_from_uri("memcached://x", SETTINGS)


@pytest.mark.redis
async def test_redis_breakers_are_shared_between_workers(redis_url):
    uri = f"{redis_url}?prefix=test-breaker-{uuid.uuid4().hex}:"
    one, two = breakers_from_uri(uri, SETTINGS), breakers_from_uri(uri, SETTINGS)
    try:
        await fail(one, "shared", 5, 3)
        with pytest.raises(CircuitOpen):
            await two.allow("shared", 6)
        assert (await two.allow("shared", 35)).probe
        assert (await one.allow("shared", 35)).probe
        with pytest.raises(CircuitOpen):  # both probe slots are taken, whichever worker asks
            await two.allow("shared", 35)
    finally:
        keys = await one.redis.keys(f"{one.prefix}*")
        if keys:
            await one.redis.delete(*keys)
        await one.aclose()
        await two.aclose()


async def test_unreachable_redis_fails_open(caplog):
    store = breakers_from_uri("redis://127.0.0.1:1/0?prefix=x:", SETTINGS)
    try:
        with caplog.at_level(logging.WARNING, logger="asgi_ai_relay"):
            ticket = await store.allow("a", 0)
            assert not ticket.probe
            await store.record(ticket, False, 0)
            assert (await store.view("a", 0)).state is BreakerState.CLOSED
    finally:
        await store.aclose()
    # One line for the server going down, not one per call (the relay's lines: an earlier test's
    # client collected meanwhile may log its own).
    assert [r.getMessage().split(":")[0] for r in caplog.records if r.name == "asgi_ai_relay"] == ["breakers"]
    assert "Redis at redis://127.0.0.1:1/0 is unavailable" in caplog.text


async def test_a_lost_probe_frees_its_slot_after_one_cooldown(store_factory):
    """A probe that never reports (its request was cancelled before record or release) must not
    keep the breaker half-open for good: its slot is free again after one cool-down."""
    store = store_factory(BreakerSettings(failure_threshold=1, window=60, cooldown=30, half_open_probes=1))
    await fail(store, "a", 0)
    lost = await store.allow("a", 30)
    assert lost.probe
    with pytest.raises(CircuitOpen):
        await store.allow("a", 59)  # the lost probe still holds the only slot
    again = await store.allow("a", 60)  # one cool-down later it is free
    assert again.probe
    await store.record(again, True, 61)
    assert (await store.view("a", 61)).state is BreakerState.CLOSED


def test_breaker_pass_keeps_its_former_name():
    from asgi_ai_relay.breaker import BreakerPass, Ticket

    assert Ticket is BreakerPass


def test_breaker_modules_import_no_cycle():
    """The Redis store needs only the shared types, never the memory store's module."""
    import ast
    import pathlib

    import asgi_ai_relay

    source = pathlib.Path(asgi_ai_relay.__file__).parent / "storage" / "redis_breakers.py"
    imported = {node.module for node in ast.walk(ast.parse(source.read_text())) if isinstance(node, ast.ImportFrom)}
    assert "breaker" not in imported and "breaker_state" in imported
