"""The first attempt's reservation taken in the admission's script call (:mod:`asgi_ai_relay.stages.joint_reserve`).

Rate limits, the budget and the shared caps on one private redis-server. A request the cache
cannot answer waits for one script call before it is sent (counted by Redis itself as the
request leaves for the provider); a reservation that does not fit at admission leaves the
attempt to reserve (and wait) as it always did; one taken and not used (every breaker open, a
fallback to another provider, a budget refusal) is given back, its buckets' charge included; a
request the cache may answer takes nothing upstream, so a full cap neither refuses nor delays
its hit.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import orjson
import pytest
import redis.asyncio as aioredis

from asgi_ai_relay import Relay
from asgi_ai_relay.breaker import BreakerPass
from tests.conftest import make_config
from tests.relay_calls import chat, pieces, relays, until  # noqa: F401 - relays: the fixture
from tests.test_redis_roundtrips import BODY, KEY, settled, shared_config
from tests.workers.fixtures import private_redis  # noqa: F401 - the fixture

DEPLOYMENT = "up/gpt-4o-mini"
BIG = 10**9
#: The caller's buckets as in ``shared_config``, the model's slow enough that a charge not given
#: back stays visible for seconds (a request costs 6 s of the bucket, a token 60 ms).
SLOW_MODEL = {"global": {"rpm": BIG, "tpm": BIG}, "caller": {"rpm": BIG, "tpm": BIG},
              "models": {"test-model": {"rpm": 10, "tpm": 1000}}}


async def evalsha_calls(client: aioredis.Redis) -> int:
    """Top-level script calls Redis has answered (each one a round trip)."""
    stats = await client.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("evalsha", "eval"))


class Watching(httpx.AsyncBaseTransport):
    """A real HTTP transport that runs ``look`` as each request leaves for the provider."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.look: Callable[[], Awaitable[Any]] | None = None
        self.seen: list[Any] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.look is not None:
            self.seen.append(await self.look())
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.fixture
async def redis_client(private_redis):  # noqa: F811
    client = aioredis.Redis.from_url(private_redis.url)
    yield client
    await client.aclose()


def _prefix() -> str:
    return f"fr-{uuid.uuid4().hex[:8]}"


def _key(prefix: str, name: str) -> str:
    return "{" + prefix + "}:" + name


async def _upstream_holds_nothing(relay: Relay, client: aioredis.Redis, prefix: str, caps: tuple[str, ...] = ("all", "provider:up")) -> None:
    await settled(relay)
    gate = relay.traffic.gate
    assert (gate.in_flight, gate.waiting, gate.by_provider) == (0, 0, {})
    for cap in caps:
        assert await client.zcard(_key(prefix, "lease:" + cap)) == 0


async def test_a_request_sent_upstream_has_waited_for_one_script_call(upstream, private_redis, redis_client, relays):  # noqa: F811
    prefix = _prefix()
    transport = Watching()
    relay = relays(shared_config(upstream, private_redis.url, prefix), transport=transport)
    for _ in range(2):  # connections made, scripts loaded, budget counters seeded
        assert (await chat(relay, BODY, key=KEY)).status == 200
    await settled(relay)
    client = redis_client

    async def look() -> tuple[int, int, dict[str, int]]:
        return await evalsha_calls(client), await client.zcard(_key(prefix, "lease:provider:up")), dict(relay.traffic.gate.by_provider)

    transport.look = look
    before = await evalsha_calls(client)
    answer = await chat(relay, BODY, key=KEY)
    assert answer.status == 200 and "x-ratelimit-remaining-requests" in answer.headers
    await settled(relay)
    # As it left: one call (the caller's buckets, the budget hold, the model's buckets and both
    # leases), the lease and this process's slot held; then one call at the end.
    assert transport.seen == [(before + 1, 1, {"up": 1})]
    assert await evalsha_calls(client) - before == 2
    await _upstream_holds_nothing(relay, client, prefix)


async def test_a_cache_hit_takes_nothing_upstream_and_a_full_cap_does_not_hold_it_up(upstream, private_redis, redis_client, relays):  # noqa: F811
    prefix = _prefix()
    transport = Watching()
    relay = relays(shared_config(upstream, private_redis.url, prefix, cache={"mode": "deterministic"},
                                 queue={"max_in_flight": 8, "per_provider": 1, "max_wait": 0.2}), transport=transport)
    cacheable = {**BODY, "temperature": 0}
    miss = await chat(relay, cacheable, key=KEY)
    assert miss.status == 200 and miss.headers["x-relay-cache"] == "miss"
    await settled(relay)
    leases = relay.traffic.joint.leases  # type: ignore[union-attr]
    assert await leases.acquire("provider:up", 1, "someone else", 60)  # the provider is saturated
    sent = len(upstream.requests)
    hit = await chat(relay, cacheable, key=KEY)
    assert hit.status == 200 and hit.headers["x-relay-cache"] == "hit"
    await settled(relay)
    assert await leases.holders("provider:up") == 1  # only the other holder's
    assert relay.traffic.gate.by_provider == {}
    assert len(upstream.requests) == sent  # the provider was not asked
    await leases.release("provider:up", "someone else")
    # A streamed hit is open until its last piece: it holds no slot, no lease all that time.
    streamed = {**cacheable, "stream": True}
    assert [p async for p in (await chat(relay, streamed, key=KEY)).stream]  # type: ignore[union-attr]
    await settled(relay)
    replay = await chat(relay, streamed, key=KEY)
    assert replay.headers["x-relay-cache"] == "hit" and replay.stream is not None
    await settled(relay)
    assert relay.traffic.gate.by_provider == {} and await leases.holders("provider:up") == 0
    assert await pieces(replay)
    assert await leases.acquire("provider:up", 1, "someone else", 60)
    # What the cache cannot answer needs the provider: it waits for the cap, here past max_wait.
    refused = await chat(relay, {**BODY, "temperature": 1}, key=KEY)
    assert refused.status == 503 and orjson.loads(refused.body)["error"]["code"] == "queue_timeout"
    await leases.release("provider:up", "someone else")
    await _upstream_holds_nothing(relay, redis_client, prefix)


async def test_a_full_cap_at_admission_admits_and_the_attempt_waits_for_it_as_before(upstream, private_redis, redis_client, relays):  # noqa: F811
    prefix = _prefix()
    relay = relays(shared_config(upstream, private_redis.url, prefix, queue={"max_in_flight": 8, "per_provider": 1}))
    assert (await chat(relay, BODY, key=KEY)).status == 200  # budget counters seeded
    await settled(relay)
    leases = relay.traffic.joint.leases  # type: ignore[union-attr]
    assert await leases.acquire("provider:up", 1, "someone else", 60)
    before = await evalsha_calls(redis_client)
    waiting = asyncio.ensure_future(chat(relay, BODY, key=KEY))
    await until(lambda: relay.traffic.gate.by_provider == {"up": 1})  # admitted; the attempt polls the cap
    assert not waiting.done()
    await leases.release("provider:up", "someone else")
    answer = await asyncio.wait_for(waiting, 10)
    assert answer.status == 200
    await settled(relay)
    assert await evalsha_calls(redis_client) - before >= 3  # admission, the attempt's own call(s), the end
    await _upstream_holds_nothing(relay, redis_client, prefix)


async def test_a_model_limit_that_says_wait_at_admission_is_the_attempts_to_enforce(upstream, private_redis, redis_client, relays):  # noqa: F811
    prefix = _prefix()
    relay = relays(shared_config(upstream, private_redis.url, prefix, queue={
        "max_in_flight": 8, "per_provider": 4, "on_limit": "reject"}, limits={**SLOW_MODEL, "models": {"test-model": {"rpm": 1}}}))
    assert (await chat(relay, BODY, key=KEY)).status == 200
    refused = await chat(relay, BODY, key=KEY)
    error = orjson.loads(refused.body)["error"]
    assert refused.status == 429 and error["code"] != "budget_exceeded" and "retry-after" in refused.headers
    assert relay.ledger.rows()[-1].attempts == 0  # type: ignore[attr-defined]
    await _upstream_holds_nothing(relay, redis_client, prefix)


async def _model_buckets(client: aioredis.Redis, prefix: str) -> int:
    return int(await client.exists(_key(prefix, "model:test-model:r"), _key(prefix, "model:test-model:t")))


async def test_every_breaker_open_gives_the_reservation_back(upstream, private_redis, redis_client, relays):  # noqa: F811
    prefix = _prefix()
    relay = relays(shared_config(upstream, private_redis.url, prefix, limits=SLOW_MODEL,
                                 breaker={"failure_threshold": 1, "cooldown": 600}))
    assert (await chat(relay, BODY, key=KEY)).status == 200
    await settled(relay)
    assert await _model_buckets(redis_client, prefix) == 2  # a served request stays charged
    await redis_client.delete(_key(prefix, "model:test-model:r"), _key(prefix, "model:test-model:t"))
    await relay.router.breakers.record(BreakerPass(DEPLOYMENT), False, relay.router.clock())
    refused = await chat(relay, BODY, key=KEY)
    assert refused.status == 503 and orjson.loads(refused.body)["error"]["code"] == "circuit_open"
    await _upstream_holds_nothing(relay, redis_client, prefix)
    assert await _model_buckets(redis_client, prefix) == 0  # the reservation's charge given back whole


async def test_a_fallback_to_another_provider_gives_the_reservation_back_before_calling_it(
        upstream, private_redis, redis_client, relays):  # noqa: F811
    prefix = _prefix()
    transport = Watching()
    base = f"{upstream.url}/v1"
    relay = relays(shared_config(
        upstream, private_redis.url, prefix, limits=SLOW_MODEL, breaker={"failure_threshold": 1, "cooldown": 600},
        providers={"up": {"kind": "openai_compatible", "base_url": base, "api_key": "env:TEST_UPSTREAM_KEY"},
                   "up2": {"kind": "openai_compatible", "base_url": base, "api_key": "env:TEST_UPSTREAM_KEY"}},
        models={"test-model": {"provider": "up", "upstream": "gpt-4o-mini", "price": {"input": 2.5, "output": 10},
                               "fallbacks": ["backup"]},
                "backup": {"provider": "up2", "upstream": "gpt-4o", "price": {"input": 5, "output": 15}}},
    ), transport=transport)
    assert (await chat(relay, BODY, key=KEY)).status == 200  # budget counters seeded
    await settled(relay)
    await redis_client.delete(_key(prefix, "model:test-model:r"), _key(prefix, "model:test-model:t"))
    await relay.router.breakers.record(BreakerPass(DEPLOYMENT), False, relay.router.clock())
    client = redis_client

    async def look() -> tuple[int, dict[str, int]]:
        return await client.zcard(_key(prefix, "lease:provider:up2")), dict(relay.traffic.gate.by_provider)

    transport.look = look
    answer = await chat(relay, BODY, key=KEY)
    assert answer.status == 200 and answer.headers.get("x-relay-model") == "backup"
    # As up2 was called: this process's slot for up was back already (up's lease went back in
    # the give-back call of that turn of the loop, beside up2's reservation).
    assert transport.seen == [(1, {"up2": 1})]
    await _upstream_holds_nothing(relay, client, prefix, ("all", "provider:up", "provider:up2"))
    assert await _model_buckets(client, prefix) == 0


async def test_a_budget_refusal_takes_no_reservation(upstream, private_redis, redis_client, relays):  # noqa: F811
    prefix = _prefix()
    relay = relays(shared_config(upstream, private_redis.url, prefix, limits=SLOW_MODEL,
                                 budgets={"default": {"daily": "0.000001"}}))
    refused = await chat(relay, BODY, key=KEY)
    assert refused.status == 429 and orjson.loads(refused.body)["error"]["code"] == "budget_exceeded"
    await _upstream_holds_nothing(relay, redis_client, prefix)
    assert await _model_buckets(redis_client, prefix) == 0


async def test_with_slots_of_this_process_only_the_attempt_takes_its_slot(upstream, private_redis, redis_client, relays):  # noqa: F811
    """The model's buckets are taken with the admission, this process's slot by the attempt: a
    fallback that needs nothing on Redis takes its slot without coming to the joint script, so
    a slot taken early would keep it waiting (one slot for the provider here)."""
    prefix = _prefix()
    transport = Watching()
    uri = f"{private_redis.url}?prefix={prefix}&timeout=2"
    relay = relays(make_config(
        upstream, storage={"ledger": "memory://", "limits": uri}, api_keys=[{"key": KEY, "caller": "rt"}],
        budgets={"default": {"daily": "1000"}}, limits=SLOW_MODEL, breaker={"failure_threshold": 1, "cooldown": 600},
        queue={"max_in_flight": 8, "per_provider": 1, "max_wait": 1},
        models={"test-model": {"provider": "up", "upstream": "gpt-4o-mini", "price": {"input": 2.5, "output": 10},
                               "fallbacks": ["backup"]},
                "backup": {"provider": "up", "upstream": "gpt-4o", "price": {"input": 5, "output": 15}}},
    ), transport=transport)
    assert relay.traffic.shared is None and relay.traffic.upstream_buckets(relay.config.models["backup"]) == ()
    for _ in range(2):  # budget counters seeded
        assert (await chat(relay, BODY, key=KEY)).status == 200
    await settled(relay)
    client = redis_client

    async def look() -> tuple[int, dict[str, int]]:
        return await evalsha_calls(client), dict(relay.traffic.gate.by_provider)

    transport.look = look
    before = await evalsha_calls(client)
    assert (await chat(relay, BODY, key=KEY)).status == 200
    assert transport.seen == [(before + 1, {"up": 1})]  # the model's buckets were in the admission's call
    await settled(relay)
    await client.delete(_key(prefix, "model:test-model:r"), _key(prefix, "model:test-model:t"))
    await relay.router.breakers.record(BreakerPass(DEPLOYMENT), False, relay.router.clock())
    answer = await chat(relay, BODY, key=KEY)
    assert answer.status == 200 and answer.headers.get("x-relay-model") == "backup"
    await _upstream_holds_nothing(relay, client, prefix, ())
    assert await _model_buckets(client, prefix) == 0


@pytest.mark.parametrize(("mode", "extra", "headers", "pretaken"), [
    ("deterministic", {}, {}, True),
    ("deterministic", {"temperature": 0}, {}, False),
    ("deterministic", {"seed": 7}, {}, False),
    ("deterministic", {"use_cache": True}, {}, False),
    ("deterministic", {"temperature": 0, "use_cache": False}, {}, True),
    ("deterministic", {"temperature": 0}, {"cache-control": "no-cache"}, True),
    ("all", {}, {}, False),
    ("off", {"temperature": 0}, {}, True),
], ids=["not-deterministic", "temperature-0", "seed", "use_cache", "use_cache-false", "no-cache", "mode-all", "mode-off"])
async def test_the_reservation_is_taken_early_exactly_when_the_cache_cannot_answer(
        upstream, private_redis, redis_client, relays, mode, extra, headers, pretaken):  # noqa: F811
    prefix = _prefix()
    transport = Watching()
    relay = relays(shared_config(upstream, private_redis.url, prefix, cache={"mode": mode}), transport=transport)
    warm = {"model": "test-model", "messages": [{"role": "user", "content": "warm up"}]}
    assert (await chat(relay, warm, key=KEY)).status == 200  # budget counters seeded
    await settled(relay)
    client = redis_client

    async def look() -> int:
        return await evalsha_calls(client)

    transport.look = look
    body = {**BODY, **extra}
    before = await evalsha_calls(client)
    assert (await chat(relay, body, headers, key=KEY)).status == 200
    assert transport.seen == [before + (1 if pretaken else 2)]
    await settled(relay)
    again = await chat(relay, body, headers, key=KEY)
    assert again.status == 200
    assert (again.headers["x-relay-cache"] == "hit") is not pretaken  # taken early only when no hit could come
    await _upstream_holds_nothing(relay, client, prefix)
