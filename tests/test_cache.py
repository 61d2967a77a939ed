"""The response cache: byte-identical hits, stream replay, per-request controls, single-flight,
the memory LRU and the real Redis."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal

import httpx
import openai
import orjson
import pytest

from asgi_ai_relay import Relay, RelayMiddleware
from asgi_ai_relay.storage import MemoryCache
from tests.conftest import make_config
from tests.fake_upstream import Fault, plan_reply
from tests.live import LiveServer
from tests.relay_calls import relays, GatedTransport, chat, pieces, until

MESSAGES = [{"role": "user", "content": "What is the cache for?"}]
BODY = {"model": "test-model", "messages": MESSAGES, "temperature": 0}


def cost(body):
    plan = plan_reply(body, "openai")
    return Decimal(plan.prompt_tokens) * Decimal("2.5") / 10**6 + Decimal(plan.completion_tokens) * 10 / 10**6


async def test_hit_is_byte_identical_and_free(upstream, relays):
    relay = relays(make_config(upstream))
    first = await chat(relay, BODY)
    second = await chat(relay, {**BODY, "user": "someone-else", "metadata": {"trace": "1"}})
    assert first.headers["x-relay-cache"] == "miss" and second.headers["x-relay-cache"] == "hit"
    assert second.body == first.body and second.status == 200
    assert second.headers["content-type"] == "application/json"
    assert second.headers["x-request-id"] != first.headers["x-request-id"]
    assert len(upstream.requests) == 1
    miss, hit = relay.ledger.rows()
    assert (miss.cache_hit, miss.cost_usd, miss.cache_saved_usd) == (False, cost(BODY), 0)
    assert (hit.cache_hit, hit.cost_usd, hit.cache_saved_usd) == (True, 0, cost(BODY))
    assert (hit.prompt_tokens, hit.completion_tokens, hit.provider) == (miss.prompt_tokens, miss.completion_tokens, "up")


async def test_stream_replay_equals_original_piece_by_piece(upstream, relays):
    relay = relays(make_config(upstream))
    body = {**BODY, "stream": True, "stream_options": {"include_usage": True}}
    original = await pieces(await chat(relay, body))
    replay_response = await chat(relay, body)
    assert replay_response.headers["x-relay-cache"] == "hit"
    assert replay_response.headers["content-type"].startswith("text/event-stream")
    assert await pieces(replay_response) == original
    assert original[-1].endswith(b"data: [DONE]\n\n")
    # whole and streamed answers, and streams with and without usage, are different entries
    assert (await chat(relay, BODY)).headers["x-relay-cache"] == "miss"
    no_usage = await chat(relay, {**BODY, "stream": True})
    assert no_usage.headers["x-relay-cache"] == "miss" and await pieces(no_usage) != original
    await relay.shutdown()
    assert len(upstream.requests) == 3
    rows = relay.ledger.rows()
    assert [r.cache_hit for r in rows] == [False, True, False, False]
    assert rows[1].completion_tokens == rows[0].completion_tokens > 0 and rows[1].status == 200


def test_stream_replay_through_the_openai_sdk(upstream):
    relay = Relay(make_config(upstream))
    with LiveServer(RelayMiddleware(relay=relay)) as server:
        client = openai.OpenAI(base_url=f"{server.url}/ai/v1", api_key="x", max_retries=0)

        def raw_stream():
            with httpx.stream("POST", f"{server.url}/ai/v1/chat/completions", json={**BODY, "stream": True}) as r:
                return r.headers["x-relay-cache"], r.read()

        sdk_chunks = list(client.chat.completions.create(model="test-model", messages=MESSAGES, temperature=0, stream=True))
        cache, replayed = raw_stream()
    assert cache == "hit" and len(upstream.requests) == 1
    text = "".join(c.choices[0].delta.content or "" for c in sdk_chunks)
    events = [line[6:] for line in replayed.split(b"\n") if line.startswith(b"data: ")]
    assert events[-1] == b"[DONE]" and len(events) == len(sdk_chunks) + 1  # every chunk, then [DONE]
    replayed_chunks = [orjson.loads(e) for e in events[:-1]]
    assert text and "".join(c["choices"][0]["delta"].get("content") or "" for c in replayed_chunks) == text
    assert [c["id"] for c in replayed_chunks] == [c.id for c in sdk_chunks]


@pytest.mark.parametrize(
    ("body", "headers", "expected"),
    [
        ({"temperature": 0.7}, {}, "bypass"),  # not deterministic
        ({}, {}, "bypass"),  # temperature defaults to 1 upstream
        ({"temperature": 0.7, "seed": 7}, {}, "miss"),  # a seed makes it deterministic
        ({"temperature": 0.7, "use_cache": True}, {}, "miss"),
        ({"temperature": 0, "use_cache": False}, {}, "bypass"),
        ({"temperature": 0}, {"cache-control": "no-store, no-cache"}, "bypass"),
    ],
)
async def test_policy(upstream, body, headers, expected, relays):
    relay = relays(make_config(upstream))
    response = await chat(relay, {"model": "test-model", "messages": MESSAGES, **body}, headers)
    assert response.headers["x-relay-cache"] == expected
    assert "use_cache" not in upstream.last_request.json  # relay-only, never forwarded
    again = await chat(relay, {"model": "test-model", "messages": MESSAGES, **body}, headers)
    assert again.headers["x-relay-cache"] == ("hit" if expected == "miss" else "bypass")


async def test_no_cache_refreshes_and_no_store_does_not_store(upstream, relays):
    relay = relays(make_config(upstream))
    await chat(relay, BODY)
    upstream.script(Fault.reply("fresh answer"))
    refreshed = await chat(relay, BODY, {"cache-control": "no-cache"})
    assert refreshed.headers["x-relay-cache"] == "miss" and b"fresh answer" in refreshed.body
    assert (await chat(relay, BODY)).body == refreshed.body  # the refresh replaced the entry
    other = {**BODY, "seed": 1}
    assert (await chat(relay, other, {"cache-control": "no-store"})).headers["x-relay-cache"] == "miss"
    assert (await chat(relay, other)).headers["x-relay-cache"] == "miss"
    assert len(upstream.requests) == 4


async def test_ttl_override_and_its_validation(upstream, relays):
    relay = relays(make_config(upstream, storage={"cache": "memory://?ttl=3600"}))
    clock = [0.0]
    relay._cache = MemoryCache(ttl=3600, clock=lambda: clock[0])
    await chat(relay, BODY, {"x-relay-cache-ttl": "10"})
    await asyncio.gather(*relay.background)  # the write has landed at clock 0
    clock[0] = 9.0
    assert (await chat(relay, BODY)).headers["x-relay-cache"] == "hit"
    clock[0] = 10.0
    assert (await chat(relay, BODY)).headers["x-relay-cache"] == "miss"
    bad = await chat(relay, BODY, {"x-relay-cache-ttl": "soon"})
    assert bad.status == 400 and b"x-relay-cache-ttl" in bad.body
    bad = await chat(relay, {**BODY, "use_cache": "yes"})
    assert bad.status == 400 and b"use_cache" in bad.body


async def test_errors_are_not_cached(upstream, relays):
    relay = relays(make_config(upstream, retry={"max_attempts": 1}))  # the 500 must reach the caller
    upstream.script(Fault.status(500))
    assert (await chat(relay, BODY)).status == 500
    upstream.script(Fault.stream_error(after_chunks=2))
    assert b"error" in b"".join(await pieces(await chat(relay, {**BODY, "stream": True})))
    assert (await chat(relay, BODY)).headers["x-relay-cache"] == "miss"
    assert (await chat(relay, {**BODY, "stream": True})).headers["x-relay-cache"] == "miss"


async def test_per_caller_scope(upstream, relays):
    keys = [{"key": "key-a", "caller": "a"}, {"key": "key-b", "caller": "b"}]
    relay = relays(make_config(upstream, api_keys=keys, cache={"scope": "caller"}))
    assert (await chat(relay, BODY, key="key-a")).headers["x-relay-cache"] == "miss"
    assert (await chat(relay, BODY, key="key-b")).headers["x-relay-cache"] == "miss"
    assert (await chat(relay, BODY, key="key-a")).headers["x-relay-cache"] == "hit"
    shared = relays(make_config(upstream, api_keys=keys))
    await chat(shared, BODY, key="key-a")
    assert (await chat(shared, BODY, key="key-b")).headers["x-relay-cache"] == "hit"


async def test_identical_concurrent_requests_cost_one_upstream_call(upstream, relays):
    gate = GatedTransport()
    relay = relays(make_config(upstream), transport=gate)
    body = BODY

    async def one():
        response = await chat(relay, body)
        return response, [response.body]

    tasks = [asyncio.create_task(one()) for _ in range(20)]
    await until(lambda: gate.arrived == 1 and sum(1 for t in tasks if not t.done()) == 20 and _waiting(relay) == 19)
    gate.gate.set()
    results = await asyncio.gather(*tasks)
    await relay.shutdown()
    assert len(upstream.requests) == 1
    bodies = {b"".join(out) for _, out in results}
    assert len(bodies) == 1
    assert sorted(r.headers["x-relay-cache"] for r, _ in results) == ["hit"] * 19 + ["miss"]
    rows = relay.ledger.rows()
    assert len(rows) == 20 and sum(r.cost_usd for r in rows) == cost(BODY)
    assert sum(r.cache_saved_usd for r in rows) == 19 * cost(BODY)
    assert relay.flights == {}


def _waiting(relay):
    """Requests waiting on a flight (the future's callbacks: one per waiter)."""
    return sum(len(getattr(f, "_callbacks", None) or ()) for f in relay.flights.values())


async def test_identical_streams_are_not_held_behind_one_in_flight(upstream, relays):
    """A stream's followers would get their first byte at the leader's last: each goes upstream
    at once instead (all 5 reach the provider while the first is still held), and a complete
    one is stored for the streams that come after."""
    gate = GatedTransport()
    relay = relays(make_config(upstream), transport=gate)
    body = {**BODY, "stream": True}

    async def one():
        return await pieces(await chat(relay, body))

    tasks = [asyncio.create_task(one()) for _ in range(5)]
    await until(lambda: gate.arrived == 5)
    gate.gate.set()
    results = await asyncio.gather(*tasks)
    assert all(r[-1].endswith(b"data: [DONE]\n\n") for r in results) and relay.flights == {}
    replay = await chat(relay, body)
    assert replay.headers["x-relay-cache"] == "hit" and await pieces(replay) in results
    assert len(upstream.requests) == 5


async def test_a_failed_leader_hands_the_lead_to_one_follower(upstream, relays):
    gate = GatedTransport()
    relay = relays(make_config(upstream, retry={"max_attempts": 1}), transport=gate)  # the leader's 500 stands
    upstream.script(Fault.status(500))
    tasks = [asyncio.create_task(chat(relay, BODY)) for _ in range(3)]
    await until(lambda: gate.arrived == 1 and _waiting(relay) == 2)
    gate.gate.set()
    responses = await asyncio.gather(*tasks)
    assert sorted(r.status for r in responses) == [200, 200, 500]
    assert sorted(r.headers["x-relay-cache"] for r in responses) == ["hit", "miss", "miss"]
    assert len(upstream.requests) == 2  # the next leader's answer served the last follower


async def test_memory_lru_by_entries_bytes_and_ttl(relays):
    clock = [0.0]
    cache = MemoryCache(maxsize=3, max_bytes=100, ttl=60, clock=lambda: clock[0])
    for name in "abc":
        await cache.set(name, b"x" * 10, 60)
    assert await cache.get("a") == b"x" * 10  # a is now the most recent
    await cache.set("d", b"y" * 10, 60)
    assert await cache.get("b") is None and len(cache) == 3  # b was least recently used
    await cache.set("e", b"z" * 80, 60)  # over 100 bytes: evict from the old end
    assert cache.bytes <= 100 and await cache.get("e") == b"z" * 80 and await cache.get("c") is None
    await cache.set("huge", b"h" * 101, 60)
    assert await cache.get("huge") is None
    clock[0] = 60.0
    assert await cache.get("e") is None and cache.bytes < 100


@pytest.mark.redis
async def test_redis_cache_shared_between_relays(upstream, redis_url, relays):
    import redis.asyncio as aioredis

    prefix = f"test:{uuid.uuid4().hex}:"
    uri = f"{redis_url}?ttl=120&prefix={prefix}"
    first = relays(make_config(upstream, storage={"cache": uri}))
    second = relays(make_config(upstream, storage={"cache": uri}))
    client = aioredis.Redis.from_url(redis_url)
    try:
        body = {**BODY, "stream": True}
        whole = await chat(first, BODY)
        streamed = await pieces(await chat(first, body))
        await asyncio.gather(*first.background)
        hit = await chat(second, BODY)  # another worker, the same Redis
        assert hit.headers["x-relay-cache"] == "hit" and hit.body == whole.body
        replay = await chat(second, body)
        assert replay.headers["x-relay-cache"] == "hit" and await pieces(replay) == streamed
        keys = [k async for k in client.scan_iter(match=f"{prefix}*")]
        assert len(keys) == 2 and 0 < await client.ttl(keys[0]) <= 120
        await chat(first, BODY, {"x-relay-cache-ttl": "5", "cache-control": "no-cache"})
        await asyncio.gather(*first.background)
        assert 0 < min([await client.ttl(k) for k in keys]) <= 5
    finally:
        async for key in client.scan_iter(match=f"{prefix}*"):
            await client.delete(key)
        await client.aclose()
        await first.shutdown()
        await second.shutdown()
    assert len(upstream.requests) == 3


async def test_redis_outage_answers_without_cache(upstream, relays):
    relay = relays(make_config(upstream, storage={"cache": "redis://127.0.0.1:1/0?prefix=x:"}))
    first = await chat(relay, BODY)
    await asyncio.gather(*relay.background)
    second = await chat(relay, BODY)
    await relay.shutdown()
    assert first.status == second.status == 200
    assert len(upstream.requests) == 2
