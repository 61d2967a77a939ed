"""A frozen Redis (SIGSTOP) under a stream of requests, on a private server the test starts.

Limits, breakers and the cache all sit on that one server. While it is frozen no request waits
more than the Redis timeout per call, fail-open serves, fail-closed answers 503, and the log
says once that the server is down; after SIGCONT everything works again, and says so once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
import uuid

import pytest

from asgi_ai_relay import Relay
from asgi_ai_relay.storage.redis_client import RedisDown, close_client, health_of, redis_client
from tests.conftest import make_config
from tests.relay_calls import chat
from tests.test_ratelimit_live import own_redis  # noqa: F401 - the fixture

TIMEOUT = 0.25
#: Redis calls on one request's path: limits, cache lookup, breaker allow and record.
CALLS = 4


def relay_on(upstream, port, fail_mode):
    uri = f"redis://127.0.0.1:{port}/0?timeout={TIMEOUT}&retry_interval=0.5"
    prefix = uuid.uuid4().hex
    return Relay(make_config(
        upstream,
        storage={"limits": f"{uri}&prefix=l-{prefix}", "breakers": f"{uri}&prefix=b-{prefix}:",
                 "cache": f"{uri}&prefix=c-{prefix}:"},
        limits={"caller": {"rpm": 10_000}},
        queue={"fail_mode": fail_mode},
    ))


def body(text):
    return {"model": "test-model", "temperature": 0, "messages": [{"role": "user", "content": text}]}


async def timed(relay, text):
    started = time.perf_counter()
    answer = await chat(relay, body(text))
    return answer, time.perf_counter() - started


async def stream(relay, count, tag):
    """``count`` requests, at most 4 at once, paced over about a second and a half."""
    gate = asyncio.Semaphore(4)

    async def one(i):
        async with gate:
            return await timed(relay, f"{tag} {i}")

    tasks = []
    for i in range(count):
        tasks.append(asyncio.ensure_future(one(i)))
        await asyncio.sleep(0.05)
    return await asyncio.gather(*tasks)


@pytest.mark.redis
@pytest.mark.parametrize("fail_mode", ["open", "closed"])
async def test_frozen_redis_costs_each_call_at_most_its_timeout(upstream, own_redis, fail_mode, caplog):  # noqa: F811
    relay = relay_on(upstream, own_redis.port, fail_mode)
    idle = relay_on(upstream, own_redis.port, fail_mode)  # holds pooled connections, shut down frozen
    caplog.set_level(logging.WARNING, logger="asgi_ai_relay")
    try:
        for i in range(3):
            answer, _ = await timed(relay, f"warm {i}")
            assert answer.status == 200 and answer.headers["x-relay-cache"] == "miss"
            assert "x-ratelimit-remaining-requests" in answer.headers
        assert (await timed(idle, "warm idle"))[0].status == 200
        await asyncio.gather(*relay.background, *idle.background)
        assert [r for r in caplog.records if r.name == "asgi_ai_relay"] == []

        os.kill(own_redis.process.pid, signal.SIGSTOP)
        try:
            during = await stream(relay, 30, "frozen")
            closing = time.perf_counter()
            await asyncio.wait_for(idle.shutdown(), 10)
            shutdown_s = time.perf_counter() - closing
            await asyncio.wait_for(asyncio.gather(*relay.background), 10)
        finally:
            os.kill(own_redis.process.pid, signal.SIGCONT)

        expected = 200 if fail_mode == "open" else 503
        assert [a.status for a, _ in during] == [expected] * len(during)
        slowest = max(s for _, s in during)
        # Before: 2 s per breaker call and no bound at all on the cache (redis-py's 30 s).
        assert slowest < CALLS * TIMEOUT + 1.5, f"a request waited {slowest:.2f}s on a frozen Redis"
        assert shutdown_s < 2 * TIMEOUT + 1.5
        lines = [r.getMessage() for r in caplog.records if r.name == "asgi_ai_relay" and r.levelno >= logging.WARNING]
        # One line for the outage, whichever store saw it first; none per request.
        assert len(lines) == 1 and f"Redis at redis://127.0.0.1:{own_redis.port}/0 is unavailable" in lines[0], lines

        deadline = asyncio.get_running_loop().time() + 10
        while "x-ratelimit-remaining-requests" not in (answer := (await timed(relay, "back"))[0]).headers:
            assert asyncio.get_running_loop().time() < deadline, "the relay did not find Redis again"
            await asyncio.sleep(0.05)
        assert answer.status == 200
        await asyncio.gather(*relay.background)
        again, _ = await timed(relay, "back")
        assert again.status == 200 and again.headers["x-relay-cache"] == "hit"  # the cache works again
        lines = [r.getMessage() for r in caplog.records if r.name == "asgi_ai_relay" and r.levelno >= logging.WARNING]
        assert len(lines) == 2 and lines[1].endswith(f"Redis at redis://127.0.0.1:{own_redis.port}/0 is available again")
    finally:
        await relay.shutdown()
        await idle.shutdown()


@pytest.mark.redis
async def test_one_probe_at_a_time_while_down(own_redis):  # noqa: F811
    """While the server is down, calls fail at once; after ``retry_interval`` one call probes."""
    # A call bound long enough that "failed at once" (three calls in less than one bound) is not
    # mistaken for "waited" when a loaded machine stalls the test for a fraction of a second.
    bound = 2.0
    client = redis_client(f"redis://127.0.0.1:{own_redis.port}/0?timeout={bound}&retry_interval=30", "test")
    other = redis_client(f"redis://127.0.0.1:{own_redis.port}/1?timeout={bound}", "other")
    try:
        assert await client.ping()
        os.kill(own_redis.process.pid, signal.SIGSTOP)
        try:
            with pytest.raises(Exception) as first:
                await client.ping()
            assert not isinstance(first.value, RedisDown)  # this one waited its timeout
            started = time.perf_counter()
            for probe in (client.ping(), other.ping(), client.get("x")):
                with pytest.raises(RedisDown):  # every client of the server fails fast
                    await probe
            assert time.perf_counter() - started < bound  # none of the three waited its bound
        finally:
            os.kill(own_redis.process.pid, signal.SIGCONT)
        health = health_of(f"redis://127.0.0.1:{own_redis.port}")
        assert health.down
        health.retry_at = 0.0  # the interval has passed: the next call probes
        assert await other.ping() and not health.down
        assert await client.ping()
    finally:
        await close_client(client)
        await close_client(other)


def test_uri_selects_the_client():
    from redis.asyncio.cluster import RedisCluster
    from redis.asyncio.connection import SSLConnection

    from asgi_ai_relay.errors import ConfigurationError

    tls = redis_client("rediss://127.0.0.1:6390/0?timeout=0.1", "test")
    assert tls.connection_pool.connection_class is SSLConnection
    assert tls.connection_pool.connection_kwargs["socket_timeout"] == 0.1
    plain = redis_client("redis://127.0.0.1:6390/0", "test")
    assert plain.connection_pool.connection_kwargs["socket_connect_timeout"] == 0.25  # the default
    assert isinstance(redis_client("redis+cluster://127.0.0.1:7000", "test"), RedisCluster)
    with pytest.raises(ConfigurationError, match="test: timeout must be greater than 0"):
        redis_client("redis://127.0.0.1:6390/0?timeout=0", "test")
