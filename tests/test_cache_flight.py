"""Single-flight: a failed leader hands the lead to one follower at a time, the lead is released
however the leader leaves (cancellation at any of its awaits included), and with the Redis cache
identical requests in different relays make one upstream call."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import orjson
import pytest

from tests.conftest import make_config
from tests.fake_upstream import Fault
from tests.relay_calls import GatedTransport, chat, relays, until  # noqa: F401 - fixture

BODY = {"model": "test-model", "messages": [{"role": "user", "content": "Only one of us should ask."}], "temperature": 0}


class CountingTransport(GatedTransport):
    """Holds every request until ``gate`` is set, and keeps the most requests in flight at once."""

    def __init__(self) -> None:
        super().__init__()
        self.in_flight = 0
        self.most = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            response = await super().handle_async_request(request)
            raw = b"".join([piece async for piece in response.aiter_raw()])  # read while counted
            await response.aclose()
            return httpx.Response(response.status_code, headers=response.headers, stream=httpx.ByteStream(raw))
        finally:
            self.in_flight -= 1


def waiting(relay):
    """Requests waiting on a flight of this relay (one callback per follower)."""
    return sum(len(getattr(f, "_callbacks", None) or ()) for f in relay.flights.values())


async def test_a_deterministic_failure_is_sent_one_request_at_a_time(upstream, relays):
    transport = CountingTransport()
    relay = relays(make_config(upstream, retry={"max_attempts": 1}), transport=transport)
    upstream.script(*[Fault.status(400)] * 20)
    tasks = [asyncio.create_task(chat(relay, BODY)) for _ in range(20)]
    await until(lambda: transport.arrived == 1 and waiting(relay) == 19)
    transport.gate.set()
    answers = await asyncio.gather(*tasks)
    assert [a.status for a in answers] == [400] * 20
    assert transport.most == 1  # each follower took the lead in turn, never two at once
    assert len(upstream.requests) == 20 and relay.flights == {}
    assert len(relay.ledger.rows()) == 20


def _await_point(task):
    """Where a suspended task waits: the chain of frames from its coroutine down."""
    point, coro = [], task.get_coro()
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is None:
            break
        point.append((frame.f_code.co_filename, frame.f_lineno))
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return tuple(point)


async def _cancel_at(relay, body, step):
    """Cancel a request at the ``step``-th await it reaches (1 = the first): ``"done"`` when it
    answered before, ``"cancelled"``, or ``"answered"`` when the cancellation was lost below
    the relay (Python 3.11's ``wait_for`` can swallow one that races its inner future; the
    Redis cache re-raises those, a client library elsewhere might not): the request then went
    on and answered, which must leave nothing held either."""
    task = asyncio.create_task(chat(relay, body))
    seen, last = 0, None
    while True:
        await asyncio.sleep(0)
        if task.done():
            return "done"
        point = _await_point(task)
        if point != last:
            seen, last = seen + 1, point
            if seen == step:
                break
    task.cancel()
    try:
        answer = await task
    except asyncio.CancelledError:
        return "cancelled"
    assert answer.status == 200
    return "answered"


@pytest.mark.parametrize("cache", ["memory", "redis"])
async def test_cancelling_the_leader_at_each_await_leaves_nothing_held(upstream, relays, cache, request):
    """The leader is cancelled at its first await, then its second, ... (the cache lookup, the
    lock, the provider call, ...), until it answers first. After each:
    no flight, no lock, one 499 row; and the next identical request leads and is answered."""
    uri = "memory://"
    if cache == "redis":
        prefix = f"test:{uuid.uuid4().hex}:"
        uri = f"{request.getfixturevalue('redis_url')}?prefix={prefix}"
    relay = relays(make_config(upstream, storage={"cache": uri}))
    if cache == "redis":
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(uri.split("?")[0])
    outcomes = []
    step = 1
    while True:
        body = {**BODY, "messages": [{"role": "user", "content": f"cancelled at turn {step}"}]}
        outcome = await _cancel_at(relay, body, step)
        await asyncio.gather(*relay.background)
        assert relay.flights == {}, step
        if cache == "redis":
            locks = [k async for k in client.scan_iter(match=f"{prefix}*:lock")]
            assert locks == [], step
        if outcome == "done":
            break
        outcomes.append(outcome)
        assert relay.ledger.rows()[-1].status == (499 if outcome == "cancelled" else 200), step
        after = await chat(relay, body)
        assert after.status == 200, step
        assert after.headers["x-relay-cache"] == ("miss" if outcome == "cancelled" else "hit"), step
        step += 1
    # the sweep went through the leader's awaits: the provider call; with Redis also the entry
    # lookup and the lock (a connection set-up may add more)
    assert len(outcomes) >= (3 if cache == "redis" else 1) and "cancelled" in outcomes, outcomes
    assert len(relay.ledger.rows()) == 2 * step - 1  # one row per request, cancelled ones included
    if cache == "redis":
        keys = [k async for k in client.scan_iter(match=f"{prefix}*")]
        await client.delete(*keys)
        await client.aclose()


@pytest.mark.redis
async def test_identical_requests_in_two_relays_on_one_redis_make_one_upstream_call(upstream, redis_url, relays):
    prefix = f"test:{uuid.uuid4().hex}:"
    uri = f"{redis_url}?prefix={prefix}&timeout=2"  # exact counts: no fail-open on a slow machine
    gate = asyncio.Event()
    transports = [CountingTransport(), CountingTransport()]
    for t in transports:
        t.gate = gate
    first, second = (relays(make_config(upstream, storage={"cache": uri}), transport=t) for t in transports)
    tasks = [asyncio.create_task(chat(relay, BODY)) for relay in (first, second) for _ in range(10)]
    # One leader upstream; in its relay 9 wait on it; in the other one request polls Redis for
    # the entry and 9 wait on that request.
    await until(lambda: sum(t.arrived for t in transports) == 1 and waiting(first) + waiting(second) == 18
                and len(first.flights) == len(second.flights) == 1)
    gate.set()
    answers = await asyncio.gather(*tasks)
    await asyncio.gather(*first.background, *second.background)
    assert len(upstream.requests) == 1
    assert [a.status for a in answers] == [200] * 20 and len({a.body for a in answers}) == 1
    assert sorted(a.headers["x-relay-cache"] for a in answers) == ["hit"] * 19 + ["miss"]
    assert first.flights == second.flights == {}
    client = first.cache._redis
    keys = [k async for k in client.scan_iter(match=f"{prefix}*")]
    assert len(keys) == 1 and not keys[0].endswith(b":lock")  # the entry; the lock is gone
    await client.delete(*keys)


async def test_a_cancelled_leader_hands_its_lead_to_one_follower(upstream, relays):
    transport = CountingTransport()
    relay = relays(make_config(upstream), transport=transport)
    leader = asyncio.create_task(chat(relay, BODY))
    await until(lambda: transport.arrived == 1)
    followers = [asyncio.create_task(chat(relay, BODY)) for _ in range(3)]
    await until(lambda: waiting(relay) == 3)
    leader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leader
    await until(lambda: transport.arrived == 2 and waiting(relay) == 2)  # one took the lead
    transport.gate.set()
    answers = await asyncio.gather(*followers)
    assert sorted(a.headers["x-relay-cache"] for a in answers) == ["hit", "hit", "miss"]
    assert transport.arrived == 2 and transport.most == 1 and relay.flights == {}
    assert sorted(r.status for r in relay.ledger.rows()) == [200, 200, 200, 499]


async def _key_of(upstream, relays, body):
    """The cache key of ``body``, read off a relay whose request is held before the provider."""
    probe = relays(make_config(upstream), transport=GatedTransport())
    task = asyncio.create_task(chat(probe, body))
    await until(lambda: len(probe.flights) == 1)
    key = next(iter(probe.flights))
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return key


@pytest.mark.redis
async def test_a_process_holding_the_lock_answers_the_waiting_ones(upstream, redis_url, relays):
    """Another worker holds the key's lock: this relay waits for its entry (one poller, the rest
    behind it), and leads once a lock whose holder died has expired."""
    key = await _key_of(upstream, relays, BODY)
    prefix = f"test:{uuid.uuid4().hex}:"
    relay = relays(make_config(upstream, storage={"cache": f"{redis_url}?prefix={prefix}"}))
    cache = relay.cache
    try:
        assert await cache.claim(key, "other-worker", 30) == (True, None)
        tasks = [asyncio.create_task(chat(relay, BODY)) for _ in range(3)]
        await until(lambda: len(relay.flights) == 1 and waiting(relay) == 2)
        entry = {"model": "test-model", "provider": "up", "usage": [5, 2, 0, False], "kind": "whole", "body": '{"from":"other"}'}
        await cache.publish(key, orjson.dumps(entry), 60, "other-worker")
        answers = await asyncio.gather(*tasks)
        assert [a.body for a in answers] == [b'{"from":"other"}'] * 3
        assert [a.headers["x-relay-cache"] for a in answers] == ["hit"] * 3
        assert len(upstream.requests) == 0 and relay.flights == {}
        assert await cache._redis.exists(cache._entry(key) + ":lock") == 0  # published with its release

        await cache._redis.delete(cache._entry(key))
        assert await cache.claim(key, "crashed-worker", 0.3) == (True, None)  # and never freed
        answer = await chat(relay, BODY)
        assert answer.status == 200 and answer.headers["x-relay-cache"] == "miss"
        await asyncio.gather(*relay.background)
        assert len(upstream.requests) == 1 and relay.flights == {}
        assert (await chat(relay, BODY)).headers["x-relay-cache"] == "hit"
    finally:
        keys = [k async for k in cache._redis.scan_iter(match=f"{prefix}*")]
        if keys:
            await cache._redis.delete(*keys)


@pytest.mark.redis
async def test_cancelling_a_leader_that_waits_on_another_process_hands_on_its_lead(upstream, redis_url, relays):
    key = await _key_of(upstream, relays, BODY)
    prefix = f"test:{uuid.uuid4().hex}:"
    relay = relays(make_config(upstream, storage={"cache": f"{redis_url}?prefix={prefix}"}))
    cache = relay.cache
    try:
        assert await cache.claim(key, "other-worker", 30) == (True, None)
        leader = asyncio.create_task(chat(relay, BODY))
        await until(lambda: len(relay.flights) == 1)
        first = relay.flights[key]
        follower = asyncio.create_task(chat(relay, BODY))
        await until(lambda: waiting(relay) == 1)
        leader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await leader
        # the follower leads now (and polls in its turn)
        await until(lambda: key in relay.flights and relay.flights[key] is not first)
        entry = {"model": "test-model", "provider": "up", "usage": [5, 2, 0, False], "kind": "whole", "body": '{"from":"other"}'}
        await cache.publish(key, orjson.dumps(entry), 60, "other-worker")
        answer = await follower
        assert answer.body == b'{"from":"other"}' and answer.headers["x-relay-cache"] == "hit"
        assert relay.flights == {} and len(upstream.requests) == 0
        assert [r.status for r in relay.ledger.rows()][-2:] == [499, 200]
    finally:
        keys = [k async for k in cache._redis.scan_iter(match=f"{prefix}*")]
        if keys:
            await cache._redis.delete(*keys)


@pytest.mark.redis
async def test_a_leader_in_flight_longer_than_the_lock_ttl_keeps_its_lock(upstream, redis_url, relays):
    prefix = f"test:{uuid.uuid4().hex}:"
    uri = f"{redis_url}?prefix={prefix}&lock_ttl=0.3"
    gate = asyncio.Event()
    transports = [CountingTransport(), CountingTransport()]
    for t in transports:
        t.gate = gate
    first, second = (relays(make_config(upstream, storage={"cache": uri}), transport=t) for t in transports)
    leader = asyncio.create_task(chat(first, BODY))
    await until(lambda: transports[0].arrived == 1)
    waiter = asyncio.create_task(chat(second, BODY))
    await until(lambda: len(second.flights) == 1)
    lock = first.cache._entry(next(iter(first.flights))) + ":lock"
    renewed, last = 0, None
    for _ in range(250):  # watch the lock live through several of its TTLs (bounded: 5 s)
        ttl = await first.cache._redis.pttl(lock)
        assert ttl > 0  # never expired, never freed
        if last is not None and ttl > last:
            renewed += 1
            if renewed == 3:
                break
        last = ttl
        await asyncio.sleep(0.02)
    assert renewed == 3 and transports[1].arrived == 0 and not waiter.done()
    gate.set()
    answers = await asyncio.gather(leader, waiter)
    await asyncio.gather(*first.background)
    assert [a.headers["x-relay-cache"] for a in answers] == ["miss", "hit"] and len(upstream.requests) == 1
    assert await first.cache._redis.exists(lock) == 0
    keys = [k async for k in first.cache._redis.scan_iter(match=f"{prefix}*")]
    await first.cache._redis.delete(*keys)


@pytest.mark.redis
async def test_a_lock_held_past_the_deadline_is_not_waited_for(upstream, redis_url, relays):
    key = await _key_of(upstream, relays, BODY)
    prefix = f"test:{uuid.uuid4().hex}:"
    relay = relays(make_config(upstream, retry={"deadline": 0.3}, storage={"cache": f"{redis_url}?prefix={prefix}"}))
    cache = relay.cache
    try:
        assert await cache.claim(key, "stuck-worker", 30) == (True, None)
        answer = await chat(relay, BODY)
        assert answer.status == 200 and answer.headers["x-relay-cache"] == "miss"
        await asyncio.gather(*relay.background)
        assert len(upstream.requests) == 1 and relay.flights == {}
        assert await cache._redis.get(cache._entry(key) + ":lock") == b"stuck-worker"  # not ours to free
    finally:
        keys = [k async for k in cache._redis.scan_iter(match=f"{prefix}*")]
        if keys:
            await cache._redis.delete(*keys)


@pytest.mark.parametrize("query", ["lock_ttl=0", "lock_ttl=-1", "lock_ttl=inf", "lock_ttl=soon", "ttl=nan"])
def test_redis_cache_durations_are_checked(query):
    from asgi_ai_relay.errors import ConfigurationError
    from asgi_ai_relay.storage.redis_cache import RedisCache

    with pytest.raises(ConfigurationError, match=query.split("=")[0]):
        RedisCache(f"redis://127.0.0.1:6379/0?{query}")
    assert RedisCache("redis://127.0.0.1:6379/0?ttl=0&lock_ttl=0.5").lock_ttl == 0.5


@pytest.mark.redis
async def test_a_cancellation_lost_inside_the_redis_driver_is_raised_again(redis_url):
    """Cancelled at every turn of the loop during its Redis calls, the cache's read always ends
    in CancelledError, never in an answer (the driver's own ``wait_for`` may drop one)."""
    from asgi_ai_relay.storage.redis_cache import RedisCache

    cache = RedisCache(f"{redis_url}?prefix=test:{uuid.uuid4().hex}:")
    try:
        for step in range(1, 60):
            cache._redis.connection_pool.reset()  # a fresh connection each time: its set-up is where it was lost
            task = asyncio.create_task(cache.claim("k", "token", 1))
            for _ in range(step):
                await asyncio.sleep(0)
            if task.done():
                await cache.unclaim("k", "token")
                break
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await cache.unclaim("k", "token")
        assert step > 5
    finally:
        await cache.aclose()
