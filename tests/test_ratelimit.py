"""Traffic control through the whole relay: limits, headers, reconciliation, the queue."""

from __future__ import annotations

import asyncio
import uuid

import orjson
import pytest

from asgi_ai_relay import Relay, RelayRequest
from asgi_ai_relay.storage import MemoryRateLimits
from asgi_ai_relay.tokens import prompt_tokens
from tests.conftest import make_config
from tests.fake_upstream import Fault, plan_reply


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def chat(text="hello there", *, key=None, stream=False, headers=None, **extra) -> RelayRequest:
    body = {"model": "test-model", "messages": [{"role": "user", "content": text}], **extra}
    if stream:
        body["stream"] = True
    sent = {"content-type": "application/json", **(headers or {})}
    if key:
        sent["authorization"] = f"Bearer {key}"
    return RelayRequest("POST", "/v1/chat/completions", sent, orjson.dumps(body))


def error_of(response):
    return orjson.loads(response.body)["error"]


async def wait_until(condition, timeout=5.0):
    """Yield to the loop until ``condition()`` holds; fail after ``timeout`` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.005)


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def limits_uri(request):
    if request.param == "memory":
        return "memory://"
    return f"{request.getfixturevalue('redis_url')}?prefix=test-{uuid.uuid4().hex}"


@pytest.fixture
async def relays():
    made = []

    def build(config, **options):
        relay = Relay(config, **options)
        made.append(relay)
        return relay

    yield build
    for relay in made:
        await relay.shutdown()


async def test_rpm_limit_admits_exactly_n_of_3n_concurrent(upstream, relays, limits_uri):
    n = 5
    relay = relays(make_config(upstream, storage={"limits": limits_uri}, limits={"caller": {"rpm": n}},
                               queue={"on_limit": "reject"}))
    answers = await asyncio.gather(*(relay.handle(chat(f"request {i}")) for i in range(3 * n)))
    ok = [a for a in answers if a.status == 200]
    limited = [a for a in answers if a.status == 429]
    assert len(ok) == n and len(limited) == 2 * n
    assert len(upstream.requests) == n
    for answer in limited:
        assert int(answer.headers["retry-after"]) >= 1
        assert error_of(answer)["type"] == "rate_limit_error"
        assert answer.headers["x-ratelimit-limit-requests"] == str(n)
        assert answer.headers["x-ratelimit-remaining-requests"] == "0"
    # Successful answers carry the headers too, each one a unit lower.
    assert sorted(int(a.headers["x-ratelimit-remaining-requests"]) for a in ok) == list(range(n))
    assert all(a.headers["x-ratelimit-reset-requests"].endswith("s") for a in ok)
    rows = relay.ledger.rows()
    assert sorted(r.status for r in rows) == [200] * n + [429] * (2 * n)


async def test_two_relays_sharing_redis_enforce_one_limit(upstream, relays, redis_url):
    n = 4
    config = make_config(upstream, storage={"limits": f"{redis_url}?prefix=test-{uuid.uuid4().hex}&timeout=2"},
                         limits={"global": {"rpm": n}}, queue={"on_limit": "reject"})
    first, second = relays(config), relays(config)
    answers = await asyncio.gather(*((first if i % 2 else second).handle(chat()) for i in range(3 * n)))
    assert sorted(a.status for a in answers) == [200] * n + [429] * (2 * n)
    assert len(upstream.requests) == n


async def test_queue_mode_waits_exactly_until_capacity_returns(upstream, relays):
    # 1200 per minute with a burst of 1: one every 50 ms, so the third waits about 100 ms.
    relay = relays(make_config(upstream, limits={"global": {"rpm": 1200, "burst": 1}}))
    answers = await asyncio.gather(*(relay.handle(chat(f"q{i}")) for i in range(3)))
    assert [a.status for a in answers] == [200, 200, 200]
    assert len(upstream.requests) == 3


async def test_wait_longer_than_max_wait_is_refused_at_once(upstream, relays):
    relay = relays(make_config(upstream, limits={"global": {"rpm": 1}}, queue={"max_wait": 5}))
    assert (await relay.handle(chat())).status == 200
    answer = await asyncio.wait_for(relay.handle(chat()), timeout=2)  # 60 s away: no point waiting
    assert answer.status == 429 and int(answer.headers["retry-after"]) >= 55


async def test_tpm_is_reconciled_with_real_usage(upstream, relays):
    clock = Clock()  # frozen: every number below is exact
    relay = relays(make_config(upstream, limits={"caller": {"tpm": 10_000}}),
                   limits_store=MemoryRateLimits(clock=clock))
    first = chat("one two three four five", max_tokens=300)
    estimate = prompt_tokens(orjson.loads(first.body)) + 300
    answer = await relay.handle(first)
    assert answer.headers["x-ratelimit-remaining-tokens"] == str(10_000 - estimate)
    usage = orjson.loads(answer.body)["usage"]
    used = usage["prompt_tokens"] + usage["completion_tokens"]
    assert used < estimate  # the estimate was refunded down to the real usage

    second = chat("six", max_tokens=100)
    answer = await relay.handle(second)
    second_estimate = prompt_tokens(orjson.loads(second.body)) + 100
    assert answer.headers["x-ratelimit-remaining-tokens"] == str(10_000 - used - second_estimate)
    assert answer.headers["x-ratelimit-limit-tokens"] == "10000"


@pytest.mark.redis
async def test_tpm_reconciliation_on_redis_and_for_streams(upstream, relays, redis_url):
    tpm = 6_000  # 100 tokens a second come back: the checks allow for the test's own time
    relay = relays(make_config(upstream, storage={"limits": f"{redis_url}?prefix=test-{uuid.uuid4().hex}&timeout=2"},
                               limits={"caller": {"tpm": tpm}}))
    first = chat("alpha beta gamma", stream=True, max_tokens=400, stream_options={"include_usage": True})
    response = await relay.handle(first)
    async for _ in response.stream:
        pass
    await relay.traffic.settle()
    expected = plan_reply({"messages": [{"role": "user", "content": "alpha beta gamma"}]}, "openai")
    used = expected.prompt_tokens + expected.completion_tokens
    second = chat("x", max_tokens=10)
    answer = await relay.handle(second)
    remaining = int(answer.headers["x-ratelimit-remaining-tokens"])
    floor = tpm - used - (prompt_tokens(orjson.loads(second.body)) + 10)
    assert floor <= remaining <= floor + 50


async def hold_slot(relay):
    """A stream whose provider stalls: it holds its concurrency slot until closed."""
    response = await relay.handle(chat("holder", stream=True))
    assert response.status == 200 and relay.traffic.gate.in_flight == 1
    return response


async def test_priority_order_through_the_relay(upstream, relays):
    keys = [{"key": f"key-{p}", "caller": p, "priority": p} for p in ("critical", "high", "normal", "low")]
    relay = relays(make_config(upstream, api_keys=keys, queue={"max_in_flight": 1}))
    upstream.script(Fault.stream_stall(after_chunks=2, seconds=30))
    holder = await hold_slot(relay)
    arrivals = ["low", "normal", "high", "critical", "low", "normal", "high", "critical"]
    tasks = []
    for i, level in enumerate(arrivals):
        tasks.append(asyncio.ensure_future(relay.handle(chat(f"{level}-{i}", key=f"key-{level}"))))
        await wait_until(lambda: relay.traffic.gate.waiting == len(tasks))
    await holder.stream.aclose()
    answers = await asyncio.gather(*tasks)
    assert [a.status for a in answers] == [200] * len(arrivals)
    served = [r.json["messages"][0]["content"].split("-")[0] for r in upstream.requests[1:]]
    assert served == ["critical", "critical", "high", "high", "normal", "normal", "low", "low"]
    assert relay.traffic.gate.in_flight == 0


async def test_priority_header_where_allowed(upstream, relays):
    relay = relays(make_config(upstream, queue={"max_in_flight": 1, "priority_header": True}))
    upstream.script(Fault.stream_stall(after_chunks=2, seconds=30))
    holder = await hold_slot(relay)
    normal = asyncio.ensure_future(relay.handle(chat("plain")))
    await wait_until(lambda: relay.traffic.gate.waiting == 1)
    urgent = asyncio.ensure_future(relay.handle(chat("urgent", headers={"x-priority": "critical"})))
    await wait_until(lambda: relay.traffic.gate.waiting == 2)
    bad = await relay.handle(chat("bad", headers={"x-priority": "asap"}))
    assert bad.status == 400 and error_of(bad)["param"] == "x-priority"
    await holder.stream.aclose()
    await asyncio.gather(normal, urgent)
    assert [r.json["messages"][0]["content"] for r in upstream.requests[1:]] == ["urgent", "plain"]


async def test_queue_bound_and_queue_timeout_answer_503(upstream, relays):
    relay = relays(make_config(upstream, queue={"max_in_flight": 1, "max_queue": 1, "max_wait": 0.3}))
    upstream.script(Fault.stream_stall(after_chunks=2, seconds=30))
    holder = await hold_slot(relay)
    queued = asyncio.ensure_future(relay.handle(chat("queued")))
    await wait_until(lambda: relay.traffic.gate.waiting == 1)
    full = await relay.handle(chat("one too many"))
    assert full.status == 503 and full.headers["retry-after"] == "1"
    assert error_of(full)["code"] == "queue_full"
    timed_out = await queued  # the holder never lets go within max_wait
    assert timed_out.status == 503 and error_of(timed_out)["code"] == "queue_timeout"
    assert timed_out.headers["retry-after"] == "1"
    assert relay.traffic.gate.waiting == 0
    await holder.stream.aclose()
    assert (await relay.handle(chat("after"))).status == 200
    assert sorted(r.status for r in relay.ledger.rows()) == [200, 499, 503, 503]


async def test_limit_refund_when_the_request_never_left(upstream, relays):
    relay = relays(make_config(upstream, limits={"caller": {"rpm": 2}},
                               queue={"max_in_flight": 1, "max_queue": 0, "on_limit": "reject"}))
    upstream.script(Fault.stream_stall(after_chunks=2, seconds=30))
    holder = await hold_slot(relay)
    refused = await relay.handle(chat("no room"))  # charged, then 503: the charge is refunded
    assert refused.status == 503
    await holder.stream.aclose()
    assert (await relay.handle(chat("still allowed"))).status == 200
    assert (await relay.handle(chat("third"))).status == 429
