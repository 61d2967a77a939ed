"""Every exit of a request gives back what it took: a sweep that cancels a request at each of
its await points in turn, whole and streamed, through miss, hit, retry and fallback; and the
defects that sweep is there to prevent (a leaked breaker probe, a cache hit waiting for a
provider slot, a burst that overflows the queue)."""

from __future__ import annotations

import asyncio
import types
from collections.abc import Awaitable, Callable, Coroutine, Generator
from decimal import Decimal
from typing import Any

import orjson
import pytest

from asgi_ai_relay import Relay, RelayRequest
from tests.fake_upstream import Fault, FakeUpstream
from tests.resilience_helpers import (  # noqa: F401 - fixtures
    MESSAGES,
    Clock,
    _second_server,
    _shutdown_relays,
    build_relay,
    chat,
    second,
)

CALLER_KEY = "sweep-key"


@types.coroutine
def _stepped(coro: Coroutine[Any, Any, Any], cancel_at: int) -> Generator[Any, Any, Any]:
    """Run ``coro`` as the task would, but throw ``CancelledError`` into it at its
    ``cancel_at``-th suspension, exactly as a cancellation arriving at that await would."""
    step, sent = 0, None
    while True:
        try:
            yielded = coro.throw(asyncio.CancelledError()) if step == cancel_at else coro.send(sent)
        except StopIteration as stop:
            return stop.value
        step += 1
        sent = yield yielded


async def _drive(relay: Relay, body: dict[str, Any], headers: dict[str, str] | None = None) -> int:
    """One request as an adapter makes it: handle, read every piece, close the stream."""
    sent = {"content-type": "application/json", "authorization": f"Bearer {CALLER_KEY}", **(headers or {})}
    response = await relay.handle(RelayRequest("POST", "/v1/chat/completions", sent, orjson.dumps(body)))
    if response.stream is not None:
        try:
            async for _ in response.stream:
                pass
        finally:
            await response.stream.aclose()  # type: ignore[attr-defined]
    return response.status


async def _settle(relay: Relay) -> None:
    while relay.background:
        await asyncio.gather(*list(relay.background), return_exceptions=True)
    await relay.traffic.settle()


async def _assert_holds_nothing(relay: Relay, runs: int) -> None:
    await _settle(relay)
    gate = relay.traffic.gate
    assert (gate.in_flight, gate.waiting, gate.by_provider) == (0, 0, {})
    assert relay.traffic.sleeping == 0
    assert all(t.in_flight == 0 for ts in relay.router.targets.values() for t in ts)
    circuits = getattr(relay.router.breakers, "_circuits", {})
    assert all(c.probes == 0 for c in circuits.values())
    assert relay.flights == {}
    rows = relay.ledger.rows()  # type: ignore[attr-defined]
    assert len(rows) == runs, "exactly one ledger row per request"
    if relay.spend is not None:  # every budget hold settled: spend is what the ledger says
        spent = relay.spend.spent("sweeper", _month(rows[0].ts))
        assert spent == sum((r.cost_usd for r in rows), Decimal(0))


def _month(ts: float) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m")


Arm = Callable[[], None]


async def _sweep(relay: Relay, body: dict[str, Any], arm: Arm, headers: dict[str, str] | None = None,
                 before: Callable[[], Awaitable[None]] | None = None) -> int:
    """Cancel at step 0, 1, 2, ... until a run completes; after each, the relay holds nothing.

    :returns: the number of await points the request went through.
    """
    runs = len(relay.ledger.rows())  # type: ignore[attr-defined]
    for cancel_at in range(1, 400):  # 0 would cancel before the request starts
        arm()
        if before is not None:
            await before()
            runs = len(relay.ledger.rows())  # type: ignore[attr-defined]
        task = asyncio.ensure_future(_stepped(_drive(relay, body, headers), cancel_at))
        try:
            status = await asyncio.wait_for(task, 20)
        except asyncio.CancelledError:
            status = None
        runs += 1
        await _assert_holds_nothing(relay, runs)
        if status is not None:
            assert status == 200
            return cancel_at
    raise AssertionError("the request never completed")


def _sweep_relay(upstream: FakeUpstream, second: FakeUpstream | None = None, *,
                 breaker: dict[str, Any] | None = None, **extra: Any) -> Relay:
    relay, _, _ = build_relay(
        upstream, second,
        api_keys=[{"key": CALLER_KEY, "caller": "sweeper"}],
        limits={"caller": {"rpm": 100000, "tpm": 10_000_000}, "model": {"rpm": 100000, "tpm": 10_000_000}},
        queue={"max_in_flight": 4, "per_provider": 2},
        budgets={"default": {"daily": 1000}},
        breaker={"failure_threshold": 1000, "half_open_probes": 1, **(breaker or {})},
        **extra,
    )

    async def tick(seconds: float) -> None:  # a real suspension, so the sweep cancels inside backoffs
        await asyncio.sleep(0)

    relay.router.sleep = tick
    return relay


BODY = {"model": "test-model", "messages": MESSAGES}


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_cancel_at_every_await_of_a_miss(upstream, stream):
    relay = _sweep_relay(upstream)
    points = await _sweep(relay, {**BODY, "stream": stream}, upstream.reset)
    assert points >= 2  # it did walk through the pipeline's awaits


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_cancel_at_every_await_of_a_cache_hit(upstream, stream):
    relay = _sweep_relay(upstream)
    body = {**BODY, "stream": stream, "temperature": 0}
    assert await _drive(relay, body) == 200
    upstream.reset()
    await _sweep(relay, body, lambda: None)
    assert upstream.requests == []  # every run was a hit


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_cancel_at_every_await_of_a_retry(upstream, stream):
    relay = _sweep_relay(upstream)

    def arm() -> None:
        upstream.reset()
        upstream.script(Fault.status(500))

    await _sweep(relay, {**BODY, "stream": stream}, arm)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_cancel_at_every_await_of_a_fallback(upstream, second, stream):
    relay = _sweep_relay(upstream, second, retry={"max_attempts": 1})

    def arm() -> None:
        upstream.reset()
        second.reset()
        upstream.script(Fault.status(503))

    await _sweep(relay, {**BODY, "stream": stream}, arm)


async def test_cancel_at_every_await_of_a_half_open_probe(upstream):
    """The breaker is half-open and the request is its probe: cancelled anywhere, the probe
    comes back (the next run finds the breaker half-open with its probe free again)."""
    relay = _sweep_relay(upstream, breaker={"failure_threshold": 1, "cooldown": 30, "half_open_probes": 1})
    clock = relay.router.clock
    assert isinstance(clock, Clock)

    async def half_open() -> None:
        upstream.reset()
        upstream.script(Fault.status(500))
        await _drive(relay, BODY)  # trips the breaker (then its retry is refused: 503)
        clock.advance(31)
        upstream.reset()

    await _sweep(relay, BODY, lambda: None, before=half_open)


class _Ticking(Clock):
    """A clock that moves ``step`` seconds each time it is read."""

    def __init__(self, step: float) -> None:
        super().__init__()
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


async def test_a_probe_cancelled_in_its_backoff_is_given_back(upstream):
    """Issue 13 #1: the retry takes the half-open probe, then waits; cancelled there, the probe
    used to stay taken for ever and the deployment answered 503 circuit_open until restart."""
    relay, _, _ = build_relay(upstream, retry={"max_attempts": 3, "deadline": 1e6},
                              breaker={"failure_threshold": 1, "cooldown": 30, "half_open_probes": 1})
    relay.router.clock = _Ticking(40)  # each read passes a whole cooldown
    sleeping = asyncio.Event()

    async def forever(seconds: float) -> None:
        sleeping.set()
        await asyncio.Event().wait()

    relay.router.sleep = forever
    upstream.script(Fault.status(500))
    task = asyncio.ensure_future(chat(relay))
    await asyncio.wait_for(sleeping.wait(), 10)  # failed once, took the probe, now backing off
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await _settle(relay)
    answer = await chat(relay)
    assert answer.status_code == 200, answer.text


async def test_a_cache_hit_needs_no_provider_slot(upstream):
    """Issue 13 #9: with the provider's only slot held by a slow stream, a cached answer is
    still served at once (it used to wait for the slot and fail with 503 queue_timeout)."""
    relay, _, _ = build_relay(upstream, queue={"per_provider": 1, "max_wait": 0.5})
    cached = {"temperature": 0}
    assert (await chat(relay, **cached)).status_code == 200
    upstream.reset()
    upstream.script(Fault.stream_stall(after_chunks=2, seconds=3))
    slow = await relay.handle(RelayRequest("POST", "/v1/chat/completions", {"content-type": "application/json"},
                                           orjson.dumps({**BODY, "stream": True})))
    assert relay.traffic.gate.in_flight == 1
    answer = await chat(relay, **cached)
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-relay-cache"] == "hit"
    assert slow.stream is not None
    await slow.stream.aclose()  # type: ignore[attr-defined]


async def test_a_burst_past_the_queue_gets_503_not_500(upstream):
    """Issue 13 #11: requests that pass the room check together overflowed the gate's queue,
    whose QueueFull escaped as a 500."""
    relay, _, _ = build_relay(upstream, queue={"per_provider": 1, "max_queue": 1, "max_wait": 5})
    upstream.script(Fault.delay(0.5))
    statuses = [r.status_code for r in await asyncio.gather(*(chat(relay) for _ in range(6)))]
    assert 500 not in statuses
    assert statuses.count(200) >= 2 and set(statuses) <= {200, 503}
    rows = relay.ledger.rows()  # type: ignore[attr-defined]
    assert len(rows) == 6
    assert {r.error_type for r in rows if r.status == 503} == {"queue_full"}


async def test_a_fallback_is_charged_to_the_provider_that_serves_it(upstream, second):
    """The upstream half of admission runs on the deployment called: the fallback's provider
    bucket is charged, the failed primary's token estimate is given back."""
    relay, _, _ = build_relay(upstream, second, retry={"max_attempts": 1},
                              limits={"provider": {"rpm": 1000, "tpm": 100000}})
    relay.traffic.store.clock = lambda: 1000.0  # type: ignore[attr-defined]
    upstream.script(Fault.status(503))
    answer = await chat(relay)
    assert answer.status_code == 200 and answer.headers["x-relay-model"] == "backup"
    await _settle(relay)
    store = relay.traffic.store

    def charged(bucket: Any) -> float:  # units a GCRA bucket holds at the store's (frozen) now
        return max(0.0, store._tats.get(bucket.key, 0.0) - 1000.0) / bucket.rate.interval  # type: ignore[attr-defined]

    (row,) = relay.ledger.rows()  # type: ignore[attr-defined]
    used = row.prompt_tokens + row.completion_tokens
    up_requests, up_tokens = relay.traffic.providers["up"]
    up2_requests, up2_tokens = relay.traffic.providers["up2"]
    assert charged(up_requests) == pytest.approx(1) and charged(up2_requests) == pytest.approx(1)
    assert charged(up_tokens) == pytest.approx(0, abs=0.01)  # the failed attempt's estimate came back
    assert charged(up2_tokens) == pytest.approx(used, abs=0.01)


async def test_cache_hits_count_against_the_callers_request_limit(upstream):
    """A hit is a request the caller made: it counts in the caller's RPM (it used to be
    refunded, as if it had never happened), though it takes no provider tokens."""
    relay, _, _ = build_relay(upstream, limits={"caller": {"rpm": 2}}, queue={"on_limit": "reject"})
    assert (await chat(relay, temperature=0)).status_code == 200
    hit = await chat(relay, temperature=0)
    assert hit.status_code == 200 and hit.headers["x-relay-cache"] == "hit"
    refused = await chat(relay, temperature=0)
    assert refused.status_code == 429
    assert len(upstream.requests) == 1
