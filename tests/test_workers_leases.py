"""Redis leases (shared concurrency caps) on a private redis-server: exact caps across clients,
slots that come back after their lease when the holder never gives them back (a SIGKILLed
process included), bounded outages."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest
import redis.asyncio as aioredis

from asgi_ai_relay.errors import StorageError
from asgi_ai_relay.storage.redis_leases import RedisLeases
from tests.workers.fixtures import need_binary
from tests.workers.servers import ROOT, RedisServer

pytestmark = [pytest.mark.timeout(60)]

#: Leases that must outlive the few calls a test makes before it checks them, on a loaded machine.
TTL = 2.0
#: The client's call bound: generous, since the machine running the suite is shared.
TIMEOUT = "timeout=2"


@pytest.fixture(scope="module")
def lease_redis(tmp_path_factory):
    need_binary("redis-server")
    with RedisServer(tmp_path_factory.mktemp("leases")) as server:
        yield server


@pytest.fixture
async def leases(lease_redis):
    store = RedisLeases(f"{lease_redis.url}?prefix=t-{uuid.uuid4().hex[:8]}&{TIMEOUT}")
    yield store
    await store.aclose()


async def redis_ms(url):
    client = aioredis.Redis.from_url(url)
    try:
        seconds, micros = await client.time()
        return seconds * 1000 + micros // 1000
    finally:
        await client.aclose()


async def lease_expiry(url, leases, name, holder):
    """The Redis time (ms) at which ``holder``'s lease on ``name`` runs out: its score, set by the
    script on Redis's clock when the lease was taken (later than any time read before the call)."""
    client = aioredis.Redis.from_url(url)
    try:
        score = await client.zscore("{" + leases.prefix + "}:lease:" + name, holder)
        assert score is not None
        return int(score)
    finally:
        await client.aclose()


async def until_redis_passes(url, deadline_ms):
    """Waits (bounded) until Redis's own clock is past ``deadline_ms``."""
    give_up = time.monotonic() + 10
    while await redis_ms(url) <= deadline_ms:
        assert time.monotonic() < give_up
        await asyncio.sleep(0.02)


async def test_a_cap_admits_exactly_limit_holders(leases):
    assert [await leases.acquire("cap", 2, h, 30) for h in ("a", "b", "c")] == [True, True, False]
    assert await leases.holders("cap") == 2
    assert await leases.release("cap", "a") is True
    assert await leases.release("cap", "a") is False  # twice is harmless
    assert await leases.acquire("cap", 2, "c", 30) is True
    assert await leases.acquire("cap", 2, "d", 30) is False


async def test_a_holder_asking_again_keeps_its_one_slot(leases):
    assert await leases.acquire("cap", 2, "a", 30)
    assert await leases.acquire("cap", 2, "a", 30)  # renewed, not a second slot
    assert await leases.holders("cap") == 1
    assert await leases.acquire("cap", 2, "b", 30)


async def test_many_clients_at_once_never_exceed_the_cap(lease_redis):
    prefix = f"t-{uuid.uuid4().hex[:8]}"
    stores = [RedisLeases(f"{lease_redis.url}?prefix={prefix}&{TIMEOUT}") for _ in range(4)]  # as 4 processes
    try:
        taken = await asyncio.gather(*(stores[i % 4].acquire("cap", 5, f"h{i}", 30) for i in range(60)))
        assert sum(taken) == 5
        assert await stores[0].holders("cap") == 5
    finally:
        for store in stores:
            await store.aclose()


async def test_a_slot_never_released_comes_back_after_its_ttl(leases, lease_redis):
    assert await leases.acquire("cap", 1, "forgetful", TTL)
    assert await leases.acquire("cap", 1, "next", 30) is False
    await until_redis_passes(lease_redis.url, await lease_expiry(lease_redis.url, leases, "cap", "forgetful"))
    assert await leases.acquire("cap", 1, "next", 30) is True
    assert await leases.refresh("cap", "forgetful", 30) is False  # its lease is gone for good


async def test_refresh_keeps_a_long_call_in_its_slot(leases, lease_redis):
    assert await leases.acquire("cap", 1, "long", TTL)
    first_expiry = await lease_expiry(lease_redis.url, leases, "cap", "long")
    assert await leases.refresh("cap", "long", 30) is True
    await until_redis_passes(lease_redis.url, first_expiry)
    assert await leases.acquire("cap", 1, "next", 30) is False
    assert await leases.holders("cap") == 1


async def test_the_key_is_hash_tagged_and_expires_with_its_last_lease(leases, lease_redis):
    assert await leases.acquire("provider:up", 3, "a", 5)
    assert await leases.acquire("provider:up", 3, "b", 20)
    client = aioredis.Redis.from_url(lease_redis.url)
    try:
        key = "{" + leases.prefix + "}:lease:provider:up"
        assert await client.exists(key) == 1
        assert 5_000 < await client.pttl(key) <= 20_000  # the longest lease, not the first
    finally:
        await client.aclose()


HOLD_AND_WAIT = """
import asyncio, sys
from asgi_ai_relay.storage.redis_leases import RedisLeases
async def main():
    leases = RedisLeases(sys.argv[1])
    assert await leases.acquire("cap", 1, "doomed", 2.0)
    print("held", flush=True)
    await asyncio.sleep(60)
asyncio.run(main())
"""


async def test_the_slots_of_a_sigkilled_process_come_back(leases, lease_redis):
    uri = f"{lease_redis.url}?prefix={leases.prefix}&{TIMEOUT}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    holder = subprocess.Popen([sys.executable, "-c", HOLD_AND_WAIT, uri], stdout=subprocess.PIPE, env=env)
    try:
        assert holder.stdout.readline().strip() == b"held"
        taken_by = await redis_ms(lease_redis.url)
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
        assert await leases.acquire("cap", 1, "survivor", 30) is False  # still held: no release ran
        await until_redis_passes(lease_redis.url, taken_by + 2000)
        assert await leases.acquire("cap", 1, "survivor", 30) is True
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(timeout=10)


async def test_redis_down_fails_fast_with_one_log_line(tmp_path, caplog):
    need_binary("redis-server")
    caplog.set_level(logging.WARNING, logger="asgi_ai_relay")
    with RedisServer(tmp_path) as server:
        leases = RedisLeases(f"{server.url}?prefix=t&timeout=0.2&retry_interval=30")
        assert await leases.acquire("cap", 1, "a", 30)
    try:
        for _ in range(3):
            started = time.monotonic()
            with pytest.raises(StorageError):
                await leases.acquire("cap", 1, "b", 30)
            assert time.monotonic() - started < 5  # bounded: never a hang
        down = [r for r in caplog.records if "leases: Redis" in r.getMessage()]
        assert len(down) == 1 and "is unavailable" in down[0].getMessage()
    finally:
        await leases.aclose()
