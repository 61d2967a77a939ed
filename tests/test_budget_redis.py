"""Budgets on Redis: one spend for every relay on the server, exact, re-seeded from the ledger."""

from __future__ import annotations

import asyncio
import math
import uuid
from decimal import Decimal

import pytest

from asgi_ai_relay.storage.budgets import Window
from asgi_ai_relay.storage.redis_budgets import RedisBudgets, from_pico, to_pico
from tests.conftest import make_config
from tests.relay_calls import GatedTransport, chat, relays, until  # noqa: F401 - relays: the fixture
from tests.test_budget import KEYS, actual_cost, estimate

pytestmark = pytest.mark.redis

#: No max_tokens: the estimate (prompt only) is below the real cost, the case the bound is about.
UNDER = {"model": "test-model", "messages": [{"role": "user", "content": "spend some money please"}]}
#: With max_tokens: the estimate is above the real cost.
OVER = {**UNDER, "max_tokens": 50}


def budget_config(upstream, uri, limit, **extra):
    return make_config(upstream, api_keys=KEYS, storage={"budgets": uri, **extra.pop("storage", {})},
                       budgets={"callers": {"a": {"monthly": str(limit)}}}, **extra)


async def cleanup(redis_url, prefix):
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_url)
    keys = await client.keys("{" + prefix + "*")
    if keys:
        await client.delete(*keys)
    await client.aclose()


async def counter(redis_url, key):
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_url)
    try:
        return from_pico(await client.hget(key, "usd"))
    finally:
        await client.aclose()


async def test_two_relays_share_one_budget_and_overspend_only_by_the_in_flight(upstream, redis_url, relays):
    """Every upstream call is held until all 30 requests have been admitted or refused: the
    budget runs out with every admitted request in flight, the worst case of the bound."""
    prefix = f"t-{uuid.uuid4().hex}"
    uri = f"{redis_url}?prefix={prefix}&timeout=2"  # exact counts: no fail-open on a slow machine
    probe = relays(make_config(upstream))
    cost, held = actual_cost(UNDER), estimate(probe, UNDER)
    assert held < cost
    limit = 7 * held + held / 2
    gates = [GatedTransport(), GatedTransport()]
    pair = [relays(budget_config(upstream, uri, limit), transport=gate) for gate in gates]
    try:
        tasks = [asyncio.ensure_future(chat(pair[i % 2], UNDER, key="key-a")) for i in range(30)]
        await until(lambda: gates[0].arrived + gates[1].arrived + sum(t.done() for t in tasks) == 30)
        admitted = gates[0].arrived + gates[1].arrived
        assert admitted == math.floor(limit / held) == 7  # holds are atomic across both relays
        for gate in gates:
            gate.gate.set()
        answers = await asyncio.gather(*tasks)
        for relay in pair:
            await asyncio.gather(*relay.background)
        assert sorted(a.status for a in answers) == [200] * 7 + [429] * 23
        spent = sum(r.cost_usd for relay in pair for r in relay.ledger.rows())
        assert spent == 7 * cost
        assert limit < spent <= limit + admitted * (cost - held)  # the documented bound, reached
        # The counter is exact: the sum of the ledger's costs, to the picodollar.
        day = pair[0].spend.window("a", pair[0].ledger.rows()[0].ts).day
        assert await counter(redis_url, "{" + f"{prefix}:budget:a" + "}:" + day) == spent
        assert (await chat(pair[1], UNDER, key="key-a")).status == 429
    finally:
        await cleanup(redis_url, prefix)


async def test_per_process_budgets_let_each_relay_spend_the_whole_limit(upstream, relays):
    """What the shared store fixes: two relays with memory budgets spend the limit twice."""
    limit = 3 * actual_cost(UNDER)
    pair = [relays(budget_config(upstream, "memory://", limit)) for _ in range(2)]
    statuses = [(await chat(relay, UNDER, key="key-a")).status for relay in pair for _ in range(4)]
    assert statuses == [200, 200, 200, 429] * 2
    assert sum(r.cost_usd for relay in pair for r in relay.ledger.rows()) == 2 * limit


async def test_a_flush_and_a_restart_keep_the_spend(upstream, redis_url, relays, tmp_path):
    prefix = f"t-{uuid.uuid4().hex}"
    uri = f"{redis_url}?prefix={prefix}&timeout=2"  # exact counts: no fail-open on a slow machine
    probe = relays(make_config(upstream))
    cost, held = actual_cost(OVER), estimate(probe, OVER)
    limit = 3 * cost + held - Decimal("0.000000001")  # room for exactly three
    config = budget_config(upstream, uri, limit, storage={"ledger": f"sqlite:///{tmp_path}/u.db"})
    relay = relays(config)
    try:
        statuses = []
        for _ in range(4):
            statuses.append((await chat(relay, OVER, key="key-a")).status)
            await asyncio.gather(*relay.background)  # the settle, spawned when the request ended
        assert statuses == [200, 200, 200, 429]
        await cleanup(redis_url, prefix)  # a flush: the counters are gone
        assert (await chat(relay, OVER, key="key-a")).status == 429  # re-seeded from the ledger
        month = relay.spend.window("a", relay.ledger.rows()[0].ts).month
        assert await counter(redis_url, "{" + f"{prefix}:budget:a" + "}:" + month) == 3 * cost
        await relay.shutdown()

        await cleanup(redis_url, prefix)  # a restart of Redis without persistence, and of the relay
        restarted = relays(config)
        assert (await chat(restarted, OVER, key="key-a")).status == 429
        assert (await chat(restarted, OVER, key="key-b")).status == 200  # caller b has no budget
    finally:
        await cleanup(redis_url, prefix)


async def test_holds_compare_exactly_past_a_double(redis_url):
    """Spend near 9 million USD counted in picodollars is beyond a double's 53 bits: the scripts
    must compare the integers, not Lua numbers."""
    prefix = f"t-{uuid.uuid4().hex}"
    big = Decimal("9000000.000000000001")

    async def seeder(caller, since_month, since_day):
        return big, big

    store = RedisBudgets(f"{redis_url}?prefix={prefix}&timeout=2", seeder)
    window = Window("a", "2026-12-01", "2026-12", None, big + Decimal("0.000000000001"), 0.0, 0.0, 60.0, 60.0)
    pico = Decimal("0.000000000001")
    try:
        first = await store.hold(window, pico)
        assert first.allowed and first.month == big + pico
        second = await store.hold(window, pico)
        assert not second.allowed and second.month == big + pico
        assert await store.settle(window, first, pico, Decimal(0)) == (big, big)
    finally:
        await store.aclose()
        await cleanup(redis_url, prefix)


def test_picodollars_round_up_and_back():
    assert to_pico(Decimal("0.0000675")) == 67_500_000
    assert to_pico(Decimal("1e-13")) == 1  # never below the real cost
    assert from_pico(to_pico(Decimal("12.345678901234"))) == Decimal("12.345678901234")


async def test_a_request_cancelled_while_its_hold_is_on_the_way_leaks_nothing(upstream, redis_url, relays):
    prefix = f"t-{uuid.uuid4().hex}"
    relay = relays(budget_config(upstream, f"{redis_url}?prefix={prefix}&timeout=2", Decimal(1)))
    try:
        assert (await chat(relay, UNDER, key="key-a")).status == 200  # seeds the counters
        await asyncio.gather(*relay.background)
        day = relay.spend.window("a", relay.ledger.rows()[0].ts).day
        key = "{" + f"{prefix}:budget:a" + "}:" + day
        before = await counter(redis_url, key)
        for yields in range(40):  # cancelled at each step in turn, the hold's round trip among them
            task = asyncio.ensure_future(chat(relay, UNDER, key="key-a"))
            for _ in range(yields):
                await asyncio.sleep(0)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        while relay.background:
            await asyncio.gather(*relay.background)
        assert await counter(redis_url, key) == before + sum(r.cost_usd for r in relay.ledger.rows()[1:])
    finally:
        await cleanup(redis_url, prefix)
