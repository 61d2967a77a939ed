"""Readiness for probes: ``/readyz`` and ``/v1/health?ready`` answer 503 while the ledger cannot
write or lags, while Redis is down under ``fail_mode = "closed"``, or while every deployment of
a model is open; 200 again once it passes. Real parts: an SQLite ledger refused by the database
itself, a private redis-server stopped, breakers opened by a failing fake upstream."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid

import orjson
import pytest

from tests.conftest import RELAY_KEY, make_config
from tests.fake_upstream import Fault
from tests.otel_sdk import otel  # noqa: F401 - the fixture
from tests.relay_calls import chat, get, relays  # noqa: F401 - the fixture
from tests.resilience_helpers import _shutdown_relays, build_relay  # noqa: F401 - the fixture
from tests.resilience_helpers import chat as http_chat
from tests.test_ratelimit_live import own_redis  # noqa: F401 - the fixture

BODY = {"model": "test-model", "messages": [{"role": "user", "content": "ready?"}]}


async def probe(relay, key=None):
    """``(/readyz status, its body, /v1/health?ready status, its body)``."""
    short = await get(relay, "/readyz")
    full = await get(relay, "/v1/health", "ready", key=key)
    return short.status, orjson.loads(short.body), full.status, orjson.loads(full.body)


def prometheus(text: bytes, name: str) -> float:
    line = next(line for line in text.decode().splitlines() if line.startswith(name + " ") or line.startswith(name + "{"))
    return float(line.rsplit(" ", 1)[1])


async def test_ready_by_default_and_health_keeps_its_view(upstream, relays):  # noqa: F811
    relay = relays(make_config(upstream))
    status, short, full_status, full = await probe(relay)
    assert (status, short) == (200, {"ready": True, "failing": []})
    assert full_status == 200 and full["ready"] is True and set(full["checks"]) == {"ledger", "redis", "models"}
    health = await get(relay, "/v1/health")
    assert health.status == 200 and orjson.loads(health.body)["object"] == "relay.health"


async def test_readyz_needs_no_key_and_the_detailed_view_does(upstream, relays):  # noqa: F811
    relay = relays(make_config(upstream, require_auth=True, api_keys=[{"key": "env:TEST_RELAY_KEY", "caller": "ops"}]))
    assert (await get(relay, "/readyz")).status == 200
    assert (await get(relay, "/v1/health", "ready")).status == 401
    assert (await get(relay, "/v1/health", "ready", key=RELAY_KEY)).status == 200


async def test_a_ledger_that_cannot_write_is_not_ready_until_it_can(upstream, relays, tmp_path):  # noqa: F811
    path = tmp_path / "ledger.db"
    relay = relays(make_config(upstream, storage={"ledger": f"sqlite:///{path}"}, metrics={"enabled": True}))
    assert (await chat(relay, BODY)).status == 200
    relay.ledger.flush()
    assert (await probe(relay))[0] == 200
    with sqlite3.connect(path) as db:  # the database itself refuses every new row
        db.execute("CREATE TRIGGER refuse BEFORE INSERT ON relay_usage BEGIN SELECT RAISE(ABORT, 'disk policy'); END")
    assert (await chat(relay, BODY)).status == 200  # the caller is answered; its row cannot be stored
    await asyncio.to_thread(relay.ledger.flush)
    status, short, full_status, full = await probe(relay)
    assert (status, short) == (503, {"ready": False, "failing": ["ledger"]})
    ledger = full["checks"]["ledger"]
    assert full_status == 503 and ledger["writing"] is False and ledger["dropped"] >= 1 and "disk policy" in ledger["last_error"]
    text = (await get(relay, "/metrics")).body
    assert prometheus(text, "relay_ledger_up") == 0 and prometheus(text, "relay_ledger_dropped_rows") >= 1
    with sqlite3.connect(path) as db:
        db.execute("DROP TRIGGER refuse")
    assert (await chat(relay, BODY)).status == 200
    await asyncio.to_thread(relay.ledger.flush)
    assert (await probe(relay))[0] == 200
    assert prometheus((await get(relay, "/metrics")).body, "relay_ledger_up") == 1


async def test_a_ledger_behind_its_bound_is_not_ready(upstream, relays, tmp_path):  # noqa: F811
    path = tmp_path / "ledger.db"
    relay = relays(make_config(upstream, storage={"ledger": f"sqlite:///{path}"}, readiness={"ledger_max_behind": 2}))
    assert (await chat(relay, BODY)).status == 200
    relay.ledger.flush()
    lock = sqlite3.connect(path, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")  # another process holds the database: rows wait their turn
    try:
        for _ in range(3):
            assert (await chat(relay, BODY)).status == 200
        await asyncio.sleep(0.1)  # past the writer's linger: the batch is with the writer, waiting
        status, short, full_status, full = await probe(relay)
        assert (status, short["failing"]) == (503, ["ledger"])
        assert full["checks"]["ledger"]["writing"] is True and full["checks"]["ledger"]["behind"] > 2
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    await asyncio.to_thread(relay.ledger.flush)
    assert (await probe(relay))[0] == 200


@pytest.mark.redis
@pytest.mark.parametrize("fail_mode", ["closed", "open"])
async def test_redis_stopped_is_not_ready_only_when_failing_closed(upstream, relays, own_redis, fail_mode, otel):  # noqa: F811
    # timeout=2: the calls made while Redis runs must not fail (closed: a 503) only because a loaded
    # machine held one past a short bound; a stopped server refuses at once, whatever the bound.
    uri = f"redis://127.0.0.1:{own_redis.port}/0?prefix=r-{uuid.uuid4().hex}&timeout=2&retry_interval=0.05"
    relay = relays(make_config(upstream, storage={"limits": uri}, limits={"caller": {"rpm": 1000}},
                               queue={"fail_mode": fail_mode}, metrics={"enabled": True}))
    assert (await chat(relay, BODY)).status == 200
    assert (await probe(relay))[0] == 200
    await asyncio.to_thread(own_redis.stop)
    await chat(relay, BODY)  # a request meets the stopped server
    status, short, full_status, full = await probe(relay)
    if fail_mode == "closed":
        assert (status, short["failing"]) == (503, ["redis"])
        assert full["checks"]["redis"]["unreachable"] == [f"redis://127.0.0.1:{own_redis.port}/0"]
    else:
        assert status == 200 and full["checks"]["redis"] == {"ok": True, "fail_mode": "open"}
    text = (await get(relay, "/metrics")).body
    assert prometheus(text, "relay_redis_errors") >= 1
    errors = {p.attributes["relay.role"]: p.value for p in otel.collect()["relay.redis.errors"]}
    assert sum(errors.values()) >= 1
    await asyncio.to_thread(own_redis.start)
    await asyncio.sleep(0.1)  # past retry_interval: the next call probes the server again
    assert (await probe(relay))[0] == 200


async def test_every_deployment_open_is_not_ready_until_one_may_be_tried(upstream):
    relay, clock, _ = build_relay(upstream, retry={"max_attempts": 1}, breaker={"failure_threshold": 1, "cooldown": 30})
    upstream.script(Fault.status(500))
    assert (await http_chat(relay)).status_code == 500
    status, short, full_status, full = await probe(relay)
    assert (status, short["failing"]) == (503, ["models"])
    assert full["checks"]["models"]["all_open"] == ["test-model"]
    health = await get(relay, "/v1/health")
    assert health.status == 200 and orjson.loads(health.body)["status"] == "degraded"
    clock.advance(31)  # half-open: a probe may go
    assert (await probe(relay))[0] == 200


@pytest.fixture
def private_pg():
    from tests.private_postgres import PrivatePostgres

    server = PrivatePostgres()
    yield server
    server.remove()


@pytest.mark.postgres
async def test_a_postgres_ledger_stopped_is_not_ready_until_it_returns(upstream, relays, private_pg, tmp_path, otel):  # noqa: F811
    from tests.test_ledger_faults import until

    private_pg.start()
    uri = f"{private_pg.url}?table=ready_usage&spool={tmp_path}/spool.db"
    relay = relays(make_config(upstream, storage={"ledger": uri}, metrics={"enabled": True}))
    assert (await chat(relay, BODY)).status == 200
    assert await asyncio.to_thread(relay.ledger.wait_ready, 30)
    assert (await probe(relay))[0] == 200
    await asyncio.to_thread(private_pg.stop)
    assert (await chat(relay, BODY)).status == 200  # answered; its row spools
    await asyncio.to_thread(until, lambda: relay.ledger.health()["spooled"] > 0, "a row to spool")
    status, short, _, full = await probe(relay)
    assert (status, short["failing"]) == (503, ["ledger"]) and full["checks"]["ledger"]["behind"] >= 1
    behind = [p.value for p in otel.collect()["relay.ledger.behind"] if p.attributes["relay.ledger"] == "postgresql"]
    assert behind and behind[0] >= 1
    await asyncio.to_thread(private_pg.start)
    await asyncio.to_thread(until, lambda: relay.ledger.health()["ok"] and relay.ledger.health()["behind"] == 0, "the spool to drain")
    assert (await probe(relay))[0] == 200


async def test_a_ledger_that_cannot_open_is_not_ready_and_spoils_no_other_reading(upstream, relays, otel):  # noqa: F811
    """One relay of the process whose ledger cannot be opened: it answers 503 ``ledger``, and
    the ledger gauges of the process still report every other relay."""
    broken = relays(make_config(upstream, storage={"ledger": "sqlite:////proc/no-such-dir/usage.db"}))
    healthy = relays(make_config(upstream))
    assert (await chat(healthy, BODY)).status == 200
    broken.started = True  # started, as a host whose start-up logged the ledger's failure
    status, short, _, _ = await probe(broken)
    assert (status, short["failing"]) == (503, ["ledger"])
    assert otel.collect()["relay.ledger.behind"], "the healthy relay's reading is missing"
