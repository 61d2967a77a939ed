"""The attempt loop against misbehaving fake providers: retries, fallbacks, breakers, streams."""

from __future__ import annotations

import asyncio

import pytest

from tests.fake_upstream import Fault, echo_reply
from tests.resilience_helpers import (  # noqa: F401 - fixtures
    MESSAGES,
    _second_server,
    _shutdown_relays,
    attempts_of,
    build_relay,
    chat,
    client,
    second,
    sse_events,
)

ECHO = echo_reply({"messages": MESSAGES}, "openai")


async def test_retry_after_is_honoured(upstream):
    relay, _, sleeps = build_relay(upstream)
    upstream.script(Fault.status(429, retry_after=2))
    answer = await chat(relay)
    assert answer.status_code == 200 and answer.json()["choices"][0]["message"]["content"] == ECHO
    assert sleeps.waits == [2.0]
    assert answer.headers["x-relay-attempts"] == "2"
    assert len(upstream.requests) == 2
    (log,) = attempts_of(relay)
    assert [(a["status"], a.get("wait_s")) for a in log] == [(429, 2.0), (200, None)]
    (row,) = relay.ledger.rows()
    assert row.attempts == 2 and row.status == 200


async def test_retry_after_ms_is_honoured(upstream):
    relay, _, sleeps = build_relay(upstream)
    upstream.script(Fault.status(503, retry_after_ms=1500))
    assert (await chat(relay)).status_code == 200
    assert sleeps.waits == [1.5]


async def test_backoff_has_full_jitter_within_bounds(upstream):
    relay, _, sleeps = build_relay(
        upstream, retry={"max_attempts": 4, "base_delay": 0.5, "max_delay": 0.8}, breaker={"failure_threshold": 10}
    )
    upstream.script(Fault.status(500), Fault.status(502), Fault.status(504))
    assert (await chat(relay)).status_code == 200
    assert len(sleeps.waits) == 3
    for retry, wait in enumerate(sleeps.waits, 1):
        assert 0 <= wait <= min(0.8, 0.5 * 2 ** (retry - 1))
    assert len(set(sleeps.waits)) == 3  # jittered, not a fixed schedule


async def test_retries_exhausted_without_fallback_answers_the_last_error(upstream):
    relay, _, _ = build_relay(upstream, retry={"max_attempts": 3})
    upstream.script(*[Fault.status(503)] * 3)
    answer = await chat(relay)
    assert answer.status_code == 503 and answer.json()["error"]["message"].startswith("Provider 'up' answered 503")
    assert answer.headers["x-relay-attempts"] == "3"
    (row,) = relay.ledger.rows()
    assert row.status == 503 and row.attempts == 3 and len(attempts_of(relay)[0]) == 3


async def test_client_errors_are_not_retried_nor_failed_over(upstream, second):
    relay, _, sleeps = build_relay(upstream, second)
    upstream.script(Fault.status(400))
    answer = await chat(relay)
    assert answer.status_code == 400 and answer.json()["error"]["type"] == "invalid_request_error"
    assert len(upstream.requests) == 1 and second.requests == [] and sleeps.waits == []


async def test_fallback_to_another_provider_after_retries(upstream, second):
    relay, _, _ = build_relay(upstream, second)
    upstream.script(Fault.status(500), Fault.status(500))
    answer = await chat(relay)
    assert answer.status_code == 200 and answer.json()["choices"][0]["message"]["content"] == ECHO
    assert answer.headers["x-relay-model"] == "backup" and answer.headers["x-relay-provider"] == "up2"
    assert answer.headers["x-relay-attempts"] == "3"
    assert second.last_request.json["model"] == "gpt-4o"
    (row,) = relay.ledger.rows()
    assert (row.model, row.provider, row.attempts, row.status) == ("backup", "up2", 3, 200)
    assert [(a["model"], a["status"]) for a in attempts_of(relay)[0]] == [
        ("test-model", 500), ("test-model", 500), ("backup", 200)
    ]


async def test_retry_after_longer_than_deadline_falls_over_at_once(upstream, second):
    relay, _, sleeps = build_relay(upstream, second, retry={"deadline": 10})
    upstream.script(Fault.status(429, retry_after=60))
    answer = await chat(relay)
    assert answer.status_code == 200 and answer.headers["x-relay-model"] == "backup"
    assert sleeps.waits == [] and len(upstream.requests) == 1


async def test_connection_refused_falls_back(upstream, second):
    relay, _, _ = build_relay(upstream, second)
    upstream.stop()
    answer = await chat(relay)
    assert answer.status_code == 200 and answer.headers["x-relay-model"] == "backup"
    errors = [a.get("error") for a in attempts_of(relay)[0]]
    assert errors == ["upstream_unreachable", "upstream_unreachable", None]


async def test_malformed_answer_is_retried(upstream):
    relay, _, _ = build_relay(upstream)
    upstream.script(Fault.malformed())
    answer = await chat(relay)
    assert answer.status_code == 200 and answer.json()["choices"][0]["message"]["content"] == ECHO
    assert [a.get("error") for a in attempts_of(relay)[0]] == ["upstream_bad_response", None]


async def test_context_length_error_moves_to_the_larger_model(upstream, second):
    big = {"provider": "up2", "upstream": "gpt-4o", "context_window": 1_000_000}
    relay, _, _ = build_relay(upstream, second, models={"big": big, "test-model": {"context_fallbacks": ["big"]}})
    too_long = {"error": {"message": "This model's maximum context length is 8192 tokens.", "type": "invalid_request_error",
                          "code": "context_length_exceeded"}}
    upstream.script(Fault.status(400, body=too_long))
    answer = await chat(relay)
    assert answer.status_code == 200 and answer.headers["x-relay-model"] == "big"
    assert len(upstream.requests) == 1  # not retried on the model that is too small


async def test_context_length_error_without_larger_model_reaches_the_caller(upstream):
    relay, _, _ = build_relay(upstream)
    upstream.script(Fault.status(400, body={"error": {"message": "x", "code": "context_length_exceeded"}}))
    answer = await chat(relay)
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "context_length_exceeded"


# -- circuit breaker ---------------------------------------------------------------------


async def test_open_breaker_means_zero_upstream_calls(upstream, second):
    relay, clock, _ = build_relay(upstream, second, retry={"max_attempts": 1}, breaker={"failure_threshold": 2})
    upstream.script(Fault.status(500), Fault.status(500))
    for _ in range(2):
        assert (await chat(relay)).headers["x-relay-model"] == "backup"
    assert len(upstream.requests) == 2
    answer = await chat(relay)
    assert answer.status_code == 200 and answer.headers["x-relay-model"] == "backup"
    assert len(upstream.requests) == 2  # the open breaker kept the third request away
    assert attempts_of(relay)[2][0] == {"deployment": "up/gpt-4o-mini", "model": "test-model", "skipped": "circuit_open"}
    async with client(relay) as http:
        health = (await http.get("/ai/v1/health")).json()
    primary = health["deployments"]["up/gpt-4o-mini"]
    assert health["status"] == "degraded"
    assert primary["state"] == "open" and primary["retry_in"] == 30.0 and primary["error_rate"] == 1.0
    assert health["deployments"]["up2/gpt-4o"]["state"] == "closed"


async def test_open_breaker_without_fallback_answers_503_naming_it(upstream):
    relay, clock, _ = build_relay(upstream, retry={"max_attempts": 1}, breaker={"failure_threshold": 1, "cooldown": 20})
    upstream.script(Fault.status(500))
    assert (await chat(relay)).status_code == 500
    clock.advance(5)
    answer = await chat(relay)
    assert answer.status_code == 503
    error = answer.json()["error"]
    assert error["code"] == "circuit_open" and "'up/gpt-4o-mini'" in error["message"] and "15.0s" in error["message"]
    assert answer.headers["retry-after"] == "15"
    assert len(upstream.requests) == 1
    assert [r.status for r in relay.ledger.rows()] == [500, 503]


async def test_half_open_probe_closes_the_breaker(upstream, second):
    relay, clock, _ = build_relay(upstream, second, retry={"max_attempts": 1}, breaker={"failure_threshold": 1})
    upstream.script(Fault.status(500))
    await chat(relay)
    assert (await chat(relay)).headers["x-relay-model"] == "backup" and len(upstream.requests) == 1
    clock.advance(30)  # the cool-down: half-open
    answer = await chat(relay)
    assert answer.headers["x-relay-model"] == "test-model" and len(upstream.requests) == 2
    view = await relay.router.breakers.view("up/gpt-4o-mini", clock())
    assert view.state.value == "closed"
    assert (await chat(relay)).headers["x-relay-model"] == "test-model"


async def test_failed_probe_opens_the_breaker_again(upstream, second):
    relay, clock, _ = build_relay(upstream, second, retry={"max_attempts": 1}, breaker={"failure_threshold": 1})
    upstream.script(Fault.status(500), Fault.status(503))
    await chat(relay)
    clock.advance(31)
    assert (await chat(relay)).headers["x-relay-model"] == "backup"  # the probe failed, backup answered
    assert len(upstream.requests) == 2
    clock.advance(29)
    assert (await chat(relay)).headers["x-relay-model"] == "backup"
    assert len(upstream.requests) == 2  # open again, for a full cool-down from the failed probe


async def test_200_concurrent_requests_while_the_breaker_flips(upstream, second):
    relay, clock, _ = build_relay(upstream, second, breaker={"failure_threshold": 5, "cooldown": 10})
    upstream.script(*[Fault.status(500)] * 40)
    async with client(relay) as http:
        async def one(i):
            return await http.post("/ai/v1/chat/completions",
                                   json={"model": "test-model", "messages": [{"role": "user", "content": f"n{i}"}]})

        first = [asyncio.ensure_future(one(i)) for i in range(100)]
        await asyncio.to_thread(upstream.wait_for_requests, 100, 20)
        clock.advance(10)  # open -> half-open while the first wave is still being answered
        second_wave = [asyncio.ensure_future(one(i)) for i in range(100, 200)]
        answers = await asyncio.wait_for(asyncio.gather(*first, *second_wave), 60)
    assert [a.status_code for a in answers] == [200] * 200
    assert [a.json()["choices"][0]["message"]["content"] for a in answers] == [f"Echo: n{i}" for i in range(200)]
    rows = relay.ledger.rows()
    assert len(rows) == 200 and len({r.request_id for r in rows}) == 200
    assert {a.headers["x-request-id"] for a in answers} == {r.request_id for r in rows}
    logs = attempts_of(relay)
    calls = sum(1 for log in logs for a in log if "status" in a)
    assert calls == len(upstream.requests) + len(second.requests)  # every upstream call is in the ledger
    assert any(a.get("skipped") == "circuit_open" for log in logs for a in log)  # the breaker did open
    assert any(r.model == "backup" for r in rows) and any(r.model == "test-model" for r in rows)
    assert all(t.in_flight == 0 for ts in relay.router.targets.values() for t in ts)


# -- streams -----------------------------------------------------------------------------


async def test_stream_without_first_byte_falls_over(upstream, second):
    relay, _, _ = build_relay(upstream, second, retry={"max_attempts": 1}, timeouts={"first_byte": 0.3})
    upstream.script(Fault.stream_stall(after_chunks=0, seconds=5))
    answer = await chat(relay, stream=True)
    assert answer.status_code == 200 and answer.headers["x-relay-model"] == "backup"
    events = sse_events(answer.content)
    assert events[-1] == "[DONE]"
    assert "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-1] if e["choices"]) == ECHO
    (row,) = relay.ledger.rows()
    assert row.status == 200 and row.stream and row.model == "backup"
    assert [a.get("error") for a in attempts_of(relay)[0]] == ["upstream_timeout", None]


async def test_mid_stream_drop_ends_with_an_error_event_and_no_retry(upstream, second):
    relay, _, _ = build_relay(upstream, second)
    upstream.script(Fault.drop(after_chunks=2))
    answer = await chat(relay, stream=True)
    assert answer.status_code == 200
    events = sse_events(answer.content)
    assert len(events) == 3 and all("choices" in e for e in events[:2])
    assert events[2]["error"]["code"] == "upstream_bad_response"
    assert len(upstream.requests) == 1 and second.requests == []  # bytes had reached the client
    (row,) = relay.ledger.rows()
    assert row.status == 502 and row.error_type == "upstream_bad_response"
    assert relay.router.targets["test-model"][0].in_flight == 0
    view = await relay.router.breakers.view("up/gpt-4o-mini", relay.router.clock())
    assert view.failures == 1  # the breaker heard about it


async def test_stall_after_first_byte_ends_with_an_error_event(upstream):
    # stream_idle 1 s: far under the 5 s stall, and more than a loaded machine's pause between
    # the two chunks sent at once (which would end the stream one event early).
    relay, _, _ = build_relay(upstream, timeouts={"stream_idle": 1.0})
    upstream.script(Fault.stream_stall(after_chunks=2, seconds=5))
    answer = await chat(relay, stream=True)
    events = sse_events(answer.content)
    assert len(events) == 3 and events[2]["error"]["code"] == "upstream_timeout"
    (row,) = relay.ledger.rows()
    assert row.status == 504 and len(upstream.requests) == 1


async def test_fallback_to_a_provider_in_another_format(upstream, second):
    from asgi_ai_relay.providers import HTTP_PROVIDERS
    from asgi_ai_relay.stages.translate import TRANSLATIONS

    if ("openai", "anthropic") not in TRANSLATIONS or "anthropic" not in HTTP_PROVIDERS:
        pytest.skip("OpenAI -> Anthropic translation is not in this build")
    relay, _, _ = build_relay(
        upstream, second, retry={"max_attempts": 1},
        providers={"up": {"kind": "openai_compatible", "base_url": f"{upstream.url}/v1", "api_key": "env:TEST_UPSTREAM_KEY"},
                   "claude": {"kind": "anthropic", "base_url": f"{second.url}/v1", "api_key": "env:TEST_UPSTREAM_KEY"}},
        models={"backup": {"provider": "claude", "upstream": "claude-sonnet-4-5"}},
    )
    upstream.script(Fault.status(500))
    answer = await chat(relay)
    assert answer.status_code == 200 and answer.headers["x-relay-model"] == "backup"
    assert answer.json()["choices"][0]["message"]["content"] == ECHO  # back in the caller's format
    assert second.last_request.path == "/v1/messages"


async def test_attempt_log_survives_the_sqlite_ledger(upstream, second, tmp_path):
    import sqlite3

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as old:  # a ledger file from before attempt_log existed
        old.execute("CREATE TABLE relay_usage (id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, request_id TEXT)")
    relay, _, _ = build_relay(upstream, second, storage={"ledger": f"sqlite:///{path}"})
    upstream.script(Fault.status(502), Fault.status(502))
    assert (await chat(relay)).headers["x-relay-model"] == "backup"
    (row,) = relay.ledger.rows()
    assert [a["status"] for a in attempts_of(relay)[0]] == [502, 502, 200] and row.attempts == 3
    relay.ledger.close()


@pytest.mark.redis
async def test_workers_share_breakers_through_redis(upstream, second, redis_url):
    import uuid

    uri = f"{redis_url}?prefix=test-relay-{uuid.uuid4().hex}:"
    settings = {"retry": {"max_attempts": 1}, "breaker": {"failure_threshold": 1}, "storage": {"ledger": "memory://", "breakers": uri}}
    one, clock, _ = build_relay(upstream, second, **settings)
    two, _, _ = build_relay(upstream, second, **settings)
    two.router.clock = clock
    try:
        upstream.script(Fault.status(500))
        assert (await chat(one)).headers["x-relay-model"] == "backup"
        assert (await chat(two)).headers["x-relay-model"] == "backup"
        assert len(upstream.requests) == 1  # the second worker knew the breaker was open
        clock.advance(30)
        assert (await chat(two)).headers["x-relay-model"] == "test-model"  # its probe closed it
        assert (await chat(one)).headers["x-relay-model"] == "test-model"
    finally:
        redis = one.router.breakers.redis
        keys = await redis.keys(f"{one.router.breakers.prefix}*")
        if keys:
            await redis.delete(*keys)
        await one.shutdown()
        await two.shutdown()
