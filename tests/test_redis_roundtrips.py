"""One round trip per admission on Redis (:mod:`asgi_ai_relay.storage.redis_admission`).

Rate limits, the budget and the shared caps on one private redis-server: a request is one script
call to admit it (its first attempt's reservation included, :mod:`asgi_ai_relay.stages.joint_reserve`),
one per further attempt and one at its end, counted by Redis itself (``INFO commandstats``); a
refused request takes nothing; a request cancelled at any await leaves no hold, no lease and no
charge behind; an outage keeps ``fail_mode``.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import signal
import subprocess
import uuid
from decimal import Decimal
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from asgi_ai_relay import Relay
from asgi_ai_relay.breaker import BreakerPass
from asgi_ai_relay.limits import Bucket, Rate
from asgi_ai_relay.storage.redis import RedisRateLimits
from asgi_ai_relay.storage.redis_budgets import from_pico
from asgi_ai_relay.storage.redis_leases import RedisLeases
from tests.conftest import make_config
from tests.fake_upstream import Fault
from tests.relay_calls import chat, relays  # noqa: F401 - relays: the fixture
from tests.resilience_helpers import MESSAGES, _shutdown_relays, build_relay  # noqa: F401 - fixture
from tests.test_every_exit import _drive, _settle, _stepped
from tests.test_ratelimit_live import own_redis  # noqa: F401 - the fixture
from tests.test_redis_cluster import cluster, slot  # noqa: F401 - the fixture
from tests.workers.fixtures import private_redis  # noqa: F401 - the fixture
from tests.workers.servers import RedisServer

BIG = 10**9
KEY = "rt-key"
BODY = {"model": "test-model", "messages": MESSAGES}


def script_calls(redis: RedisServer | int) -> int:
    """Top-level script calls the server (or the one on that port) has answered: each one a
    round trip; what a script runs inside Redis counts under its own command, never as ``evalsha``."""
    port = redis if isinstance(redis, int) else redis.port
    stats = subprocess.run(["redis-cli", "-p", str(port), "info", "commandstats"], capture_output=True, text=True,
                           timeout=10, check=True).stdout
    calls = 0
    for line in stats.splitlines():
        name, _, stats = line.partition(":")
        if name in ("cmdstat_evalsha", "cmdstat_eval"):
            calls += int(stats.split(",")[0].split("=")[1])
    return calls


def shared_config(upstream: Any, url: str, prefix: str, budgets_url: str | None = None, **extra: Any) -> dict[str, Any]:
    uri = f"{url}?prefix={prefix}&timeout=2"
    storage = {"ledger": "memory://", "limits": uri, "slots": uri}
    if budgets_url is not None:
        storage["budgets"] = f"{budgets_url}?prefix={prefix}&timeout=2"
    options: dict[str, Any] = {
        "api_keys": [{"key": KEY, "caller": "rt"}],
        "limits": {"global": {"rpm": BIG, "tpm": BIG}, "caller": {"rpm": BIG, "tpm": BIG}, "model": {"rpm": BIG, "tpm": BIG}},
        "queue": {"max_in_flight": 8, "per_provider": 4},
        "budgets": {"default": {"daily": "1000"}},
    }
    options.update(extra)
    return make_config(upstream, storage=storage, **options)


async def settled(relay: Relay) -> None:
    await asyncio.sleep(0)
    while relay.background:
        await asyncio.gather(*list(relay.background), return_exceptions=True)
    await relay.traffic.settle()


async def trips_per_request(relay: Relay, redis: RedisServer, count: int = 10) -> float:
    for _ in range(2):  # connections made, scripts loaded, budget counters seeded
        assert (await chat(relay, BODY, key=KEY)).status == 200
    await settled(relay)
    before = script_calls(redis)
    for _ in range(count):
        answer = await chat(relay, BODY, key=KEY)
        assert answer.status == 200
        await settled(relay)
    return (script_calls(redis) - before) / count


async def test_a_request_is_one_call_to_admit_and_reserve_and_one_at_the_end(upstream, private_redis, relays):  # noqa: F811
    relay = relays(shared_config(upstream, private_redis.url, f"rt-{uuid.uuid4().hex[:8]}"))
    assert relay.traffic.joint is not None
    # Store by store this was 10: the hold, the caller's buckets, the model's buckets, two
    # leases; then two reconciliations, the settle and two releases. With the attempt's
    # reservation in a call of its own, 3.
    assert await trips_per_request(relay, private_redis) == 2


async def test_a_retry_adds_one_call_for_the_second_attempt_and_one_for_the_first_ones_give_back(upstream, private_redis, relays):  # noqa: F811
    relay = relays(shared_config(upstream, private_redis.url, f"rt-{uuid.uuid4().hex[:8]}",
                                 retry={"max_attempts": 2, "base_delay": 0.001, "max_delay": 0.001}))
    assert (await chat(relay, BODY, key=KEY)).status == 200
    await settled(relay)
    before = script_calls(private_redis)
    upstream.script(Fault.status(500))
    answer = await chat(relay, BODY, key=KEY)
    assert answer.status == 200 and relay.ledger.rows()[-1].attempts == 2  # type: ignore[attr-defined]
    await settled(relay)
    assert script_calls(private_redis) - before == 4


async def test_budgets_on_another_database_keep_their_own_calls(upstream, private_redis, relays):  # noqa: F811
    other = private_redis.url.rsplit("/", 1)[0] + "/1"
    relay = relays(shared_config(upstream, private_redis.url, f"rt-{uuid.uuid4().hex[:8]}", budgets_url=other))
    assert await trips_per_request(relay, private_redis) == 4  # + the hold and the settle


def _day_key(prefix: str, caller: str) -> str:
    day = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
    return "{" + f"{prefix}:budget:{caller}" + "}:" + day


async def test_a_request_the_budget_refuses_charges_no_limit(upstream, private_redis, relays):  # noqa: F811
    prefix = f"rt-{uuid.uuid4().hex[:8]}"
    relay = relays(shared_config(upstream, private_redis.url, prefix, budgets={"default": {"daily": "0.000001"}},
                                 limits={"caller": {"rpm": 5}}))
    refused = await chat(relay, BODY, key=KEY)
    assert refused.status == 429 and orjson.loads(refused.body)["error"]["code"] == "budget_exceeded"
    client = aioredis.Redis.from_url(private_redis.url)
    try:
        assert await client.exists("{" + prefix + "}:caller:rt:r") == 0  # the request charged no bucket
        assert from_pico(await client.hget(_day_key(prefix, "rt"), "usd")) == 0  # and held nothing
    finally:
        await client.aclose()


async def test_a_request_a_limit_refuses_holds_no_budget(upstream, private_redis, relays):  # noqa: F811
    prefix = f"rt-{uuid.uuid4().hex[:8]}"
    relay = relays(shared_config(upstream, private_redis.url, prefix, limits={"caller": {"rpm": 1}},
                                 queue={"on_limit": "reject"}))
    assert (await chat(relay, BODY, key=KEY)).status == 200
    refused = await chat(relay, BODY, key=KEY)
    assert refused.status == 429 and orjson.loads(refused.body)["error"]["code"] != "budget_exceeded"
    await settled(relay)
    rows = relay.ledger.rows()  # type: ignore[attr-defined]
    client = aioredis.Redis.from_url(private_redis.url)
    try:
        spent = from_pico(await client.hget(_day_key(prefix, "rt"), "usd"))
    finally:
        await client.aclose()
    assert rows[0].cost_usd > 0 and spent == sum((r.cost_usd for r in rows), Decimal(0)) == rows[0].cost_usd


async def test_a_full_cap_takes_no_bucket_and_a_late_landing_gives_everything_back(private_redis):  # noqa: F811
    prefix = f"rt-{uuid.uuid4().hex[:8]}"
    limits = RedisRateLimits(f"{private_redis.url}?prefix={prefix}")
    leases = RedisLeases(f"{private_redis.url}?prefix={prefix}")
    joint = limits.admission(leases)
    assert joint is not None and joint.leases is leases
    bucket = [Bucket("caller:x:r", Rate(1, 60.0, 1), "requests")]  # one request a minute
    client = aioredis.Redis.from_url(private_redis.url)
    try:
        assert await leases.acquire("all", 1, "someone", 60)
        full = await joint.take(bucket, [1], (), [("all", 1)], "me", 60_000)
        assert not full.ok and full.full and full.decision is not None and full.decision.allowed
        assert await client.exists("{" + prefix + "}:caller:x:r") == 0  # the bucket is not charged
        await leases.release("all", "someone")

        taking = asyncio.ensure_future(joint.take(bucket, [1], (), [("all", 1)], "me", 60_000))
        await asyncio.sleep(0)  # on its way
        taking.cancel()
        with pytest.raises(asyncio.CancelledError):
            await taking
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        await asyncio.gather(*others, return_exceptions=True)  # it lands, and queues its give-back
        await joint.settled()
        assert await client.exists("{" + prefix + "}:caller:x:r") == 0  # the charge given back
        assert await leases.holders("all") == 0  # and the lease
    finally:
        await client.aclose()
        await joint.settled()
        await limits.aclose()
        await leases.aclose()


async def _redis_holds_nothing(relay: Relay, url: str, prefix: str, untouched: tuple[str, ...] = ()) -> None:
    """Nothing held: no slot, no lease, every budget hold settled, and no charge on the
    ``untouched`` buckets (those of a model never called)."""
    await _settle(relay)
    joint = relay.traffic.joint
    assert joint is not None and not joint._queue and not joint._pending
    gate = relay.traffic.gate
    assert (gate.in_flight, gate.waiting, gate.by_provider, relay.traffic.sleeping) == (0, 0, {}, 0)
    rows = relay.ledger.rows()  # type: ignore[attr-defined]
    client = aioredis.Redis.from_url(url)
    try:
        for cap in ("all", "provider:up", "provider:up2"):
            assert await client.zcard("{" + prefix + "}:lease:" + cap) == 0
        for bucket in untouched:
            assert await client.exists("{" + prefix + "}:" + bucket) == 0, bucket
        raw = await client.hget(_day_key(prefix, "sweeper"), "usd")
    finally:
        await client.aclose()
    assert raw is not None and from_pico(raw) == sum((r.cost_usd for r in rows), Decimal(0))


@pytest.mark.parametrize("case", ["whole", "stream", "fallback"])
async def test_cancel_at_every_await_leaves_nothing_on_redis(upstream, private_redis, case):  # noqa: F811
    """The first attempt's reservation is taken with the admission (nothing here may come from
    the cache); ``fallback``: the model's deployment has its breaker open, so the reservation
    is given back and ``backup``, on another provider, serves."""
    prefix = f"sweep-{uuid.uuid4().hex[:8]}"
    uri = f"{private_redis.url}?prefix={prefix}&timeout=2"
    relay, _, _ = build_relay(
        upstream, upstream if case == "fallback" else None, breaker={"failure_threshold": 1},
        storage={"ledger": "memory://", "limits": uri, "slots": uri},
        api_keys=[{"key": "sweep-key", "caller": "sweeper"}],
        limits={"caller": {"rpm": 100000, "tpm": 10_000_000}, "model": {"rpm": 100000, "tpm": 10_000_000},
                "models": {"test-model": {"rpm": 10, "tpm": 1000}}},  # a charge left stays for seconds
        queue={"max_in_flight": 4, "per_provider": 2}, budgets={"default": {"daily": 1000}},
    )
    assert relay.traffic.joint is not None
    body = {**BODY, "stream": case == "stream"}
    assert await _drive(relay, body) == 200  # seeds the budget counters
    untouched: tuple[str, ...] = ()
    if case == "fallback":
        await relay.router.breakers.record(BreakerPass("up/gpt-4o-mini"), False, relay.router.clock())
        await _settle(relay)
        client = aioredis.Redis.from_url(private_redis.url)
        try:  # the charge of the request that seeded the counters
            await client.delete("{" + prefix + "}:model:test-model:r", "{" + prefix + "}:model:test-model:t")
        finally:
            await client.aclose()
        untouched = ("model:test-model:r", "model:test-model:t")
    await _redis_holds_nothing(relay, private_redis.url, prefix, untouched)
    for cancel_at in range(1, 400):
        task = asyncio.ensure_future(_stepped(_drive(relay, body), cancel_at))
        try:
            status = await asyncio.wait_for(task, 20)
        except asyncio.CancelledError:
            status = None
        await _redis_holds_nothing(relay, private_redis.url, prefix, untouched)
        if status is not None:
            assert status == 200 and cancel_at > 3  # cancelled inside admission and the attempt first
            if case == "fallback":
                assert relay.ledger.rows()[-1].model == "backup"  # type: ignore[attr-defined]
            return
    raise AssertionError("the request never completed")


@pytest.mark.parametrize("fail_mode", ["open", "closed"])
async def test_a_frozen_redis_keeps_fail_mode_on_the_joint_path(upstream, own_redis, fail_mode, relays):  # noqa: F811
    url = f"redis://127.0.0.1:{own_redis.port}/0"
    relay = relays(shared_config(upstream, url, f"rt-{uuid.uuid4().hex[:8]}", queue={
        "max_in_flight": 8, "per_provider": 4, "fail_mode": fail_mode}))
    assert (await chat(relay, BODY, key=KEY)).status == 200
    await settled(relay)
    os.kill(own_redis.process.pid, signal.SIGSTOP)
    try:
        statuses = [(await chat(relay, BODY, key=KEY)).status for _ in range(3)]
        await asyncio.wait_for(settled(relay), 10)
    finally:
        os.kill(own_redis.process.pid, signal.SIGCONT)
    assert statuses == [200 if fail_mode == "open" else 503] * 3


async def test_on_a_cluster_the_buckets_and_leases_share_a_slot_and_the_budget_keeps_its_own(upstream, cluster, relays):  # noqa: F811
    tag = uuid.uuid4().hex[:8]
    shared = f"{cluster}/?prefix=j-{tag}&timeout=1"
    relay = relays(make_config(
        upstream, api_keys=[{"key": KEY, "caller": "rt"}, {"key": "rt-key-2", "caller": "rt2"}],
        storage={"ledger": "memory://", "limits": shared, "slots": shared, "budgets": f"{cluster}/?prefix=b-{tag}&timeout=1"},
        limits={"caller": {"rpm": 3}, "model": {"rpm": 100, "tpm": 100_000}},
        queue={"on_limit": "reject", "max_in_flight": 4, "per_provider": 2}, budgets={"default": {"daily": "1000"}},
    ))
    joint = relay.traffic.joint
    assert joint is not None and joint.cluster and joint.leases is not None
    statuses = [(await chat(relay, BODY, key=KEY)).status for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    await settled(relay)
    assert joint.budgets is None  # another slot per caller: its own hold and settle
    leases = joint.leases
    assert await leases.holders("all") == 0 and await leases.holders("provider:up") == 0
    assert slot(cluster, leases.key("all")) == slot(cluster, joint.key_prefix + "caller:rt:r")
    before = cluster_script_calls(cluster)
    for _ in range(2):
        assert (await chat(relay, BODY, key="rt-key-2")).status == 200
        await settled(relay)
    # Each request: 2 joint calls (admission with the reservation, the end), the hold and the
    # settle; once, rt2's counters missing: the hold says so, the seed, the hold again.
    assert cluster_script_calls(cluster) - before == 2 * 4 + 2


def cluster_script_calls(cluster: str) -> int:
    port = cluster.rsplit(":", 1)[1]
    nodes = subprocess.run(["redis-cli", "-p", port, "cluster", "nodes"], capture_output=True, text=True, timeout=5).stdout
    total = 0
    for line in nodes.splitlines():
        address = line.split()[1].split("@")[0]
        total += script_calls(int(address.rsplit(":", 1)[1]))
    return total
