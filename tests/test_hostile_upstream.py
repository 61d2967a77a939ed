"""A hostile or broken upstream, end to end through the relay: every bound holds on every HTTP
client, every answer that is not a 2xx (or not a stream when one was asked for) is an upstream
error, waits and token counts stay finite, and nothing the upstream echoes of its key gets out."""

from __future__ import annotations

import orjson
import pytest

from asgi_ai_relay import Relay
from asgi_ai_relay.retry import MAX_RETRY_AFTER
from asgi_ai_relay.types import Usage
from tests.conftest import UPSTREAM_KEY
from tests.fake_upstream import Fault, padded_completion
from tests.resilience_helpers import (  # noqa: F401 - fixtures
    MESSAGES,
    Sleeps,
    _built,
    _second_server,
    _shutdown_relays,
    attempts_of,
    build_relay,
    chat,
    provider,
    second,
)

CLIENTS = ["h1", "aiohttp", "httpx"]
MIB = 1024 * 1024


def errors_of(relay):
    """The error code of each attempt of the one request the relay served."""
    (log,) = attempts_of(relay)
    return [attempt.get("error") for attempt in log]


def relay_with(upstream, client_name="h1", *, attempts=2, timeouts=None, **http):
    relay, _, _ = build_relay(
        upstream, retry={"max_attempts": attempts}, http={"client": client_name, **http}, timeouts=timeouts or {}
    )
    return relay


# -- sizes, decompression, lines ----------------------------------------------------------------


@pytest.mark.parametrize("client_name", CLIENTS)
async def test_an_answer_over_max_response_bytes_is_an_upstream_failure(upstream, client_name):
    relay = relay_with(upstream, client_name, max_response_bytes=MIB)
    upstream.script(Fault.raw(padded_completion(2 * MIB)))
    answer = await chat(relay)
    assert answer.status_code == 200  # the retry got a normal answer
    assert errors_of(relay) == ["upstream_too_large", None]


@pytest.mark.parametrize("client_name", CLIENTS)
async def test_a_gzip_bomb_never_expands_past_the_bound(upstream, client_name):
    relay = relay_with(upstream, client_name, attempts=1, max_response_bytes=MIB)
    upstream.script(Fault.gzip_bomb(64 * MIB))
    answer = await chat(relay)
    assert answer.status_code == 502, answer.text[:200]
    assert answer.json()["error"]["code"] == "upstream_too_large"
    assert "max_response_bytes" in answer.json()["error"]["message"]
    (row,) = relay.ledger.rows()
    assert (row.status, row.error_type) == (502, "upstream_too_large")


async def test_a_small_gzip_answer_still_reads(upstream):
    relay = relay_with(upstream, attempts=1, max_response_bytes=MIB)
    upstream.script(Fault.gzip_bomb(MIB // 2))
    answer = await chat(relay)
    assert answer.status_code == 200 and answer.json()["choices"][0]["message"]["content"] == "padded"


@pytest.mark.parametrize("client_name", CLIENTS)
async def test_a_stream_line_without_a_line_break_is_refused(upstream, client_name):
    relay = relay_with(upstream, client_name, attempts=1, max_line_bytes=64 * 1024)
    upstream.script(Fault.raw(events=[b"data: " + b"x" * 4096] * 64))
    answer = await chat(relay, stream=True)
    assert answer.status_code == 502, answer.text[:200]
    assert answer.json()["error"]["code"] == "upstream_too_large"
    assert "max_line_bytes" in answer.json()["error"]["message"]


@pytest.mark.parametrize("client_name", CLIENTS)
async def test_an_error_body_is_read_only_up_to_max_error_bytes(upstream, client_name):
    relay = relay_with(upstream, client_name, attempts=1, max_error_bytes=1024)
    upstream.script(Fault.status(500, body={"error": {"message": "A" * 500_000, "type": "server_error"}}))
    answer = await chat(relay)
    assert answer.status_code == 500
    message = answer.json()["error"]["message"]
    # Cut at 1 KiB, the body is no longer JSON: what is quoted is its beginning, not the message.
    assert message.startswith("Provider 'up' answered 500: {") and '"message"' in message
    assert len(message) < 600


# -- deadlines ----------------------------------------------------------------------------------


@pytest.mark.parametrize("client_name", CLIENTS)
async def test_timeouts_total_bounds_a_whole_answer(upstream, client_name):
    # total 1.5 s: far under the 5 s stall, and room for the retry's whole answer on a loaded machine.
    relay = relay_with(upstream, client_name, timeouts={"total": 1.5})
    upstream.script(Fault.stream_stall(seconds=5))  # headers at once, the body after 5 s
    answer = await chat(relay)
    assert answer.status_code == 200
    assert errors_of(relay) == ["upstream_timeout", None]


@pytest.mark.parametrize("client_name", CLIENTS)
async def test_timeouts_total_bounds_a_stream(upstream, client_name):
    relay = relay_with(upstream, client_name, attempts=1, timeouts={"total": 1.5})  # far under the 6 s stream
    upstream.script(Fault.reply("word " * 300) | Fault.drip(0.02))  # 300 events, 6 s in all
    answer = await chat(relay, stream=True)
    assert answer.status_code == 200  # the first pieces were served in time
    assert b"data: [DONE]" not in answer.content and b"timeouts.total" in answer.content
    (row,) = relay.ledger.rows()
    assert (row.status, row.error_type) == (504, "upstream_timeout")


# -- statuses and content types -----------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_a_redirect_is_never_followed_nor_a_success(upstream, stream):
    relay = relay_with(upstream)
    elsewhere = "https://api.elsewhere.example/v1/chat/completions"
    upstream.script(Fault.status(302, headers={"location": elsewhere}))
    answer = await chat(relay, stream=stream)
    assert answer.status_code == 502, answer.text[:200]
    error = answer.json()["error"]
    assert error["code"] == "upstream_redirect" and elsewhere in error["message"] and "base_url" in error["message"]
    assert len(upstream.requests) == 1  # not retried on the same deployment: only another can help
    (row,) = relay.ledger.rows()
    assert (row.status, row.error_type) == (502, "upstream_redirect")


async def test_a_redirect_moves_on_to_the_fallback(upstream, second):
    relay, _, _ = build_relay(upstream, second)
    upstream.script(Fault.status(307, headers={"location": "/elsewhere"}))
    answer = await chat(relay)
    assert answer.status_code == 200 and answer.headers["x-relay-model"] == "backup"
    assert errors_of(relay) == ["upstream_redirect", None]


@pytest.mark.parametrize("content_type", ["application/json", "text/plain"])
async def test_a_stream_that_is_not_an_event_stream_fails(upstream, content_type):
    relay = relay_with(upstream, attempts=1)
    upstream.script(Fault.headers({"content-type": content_type}))
    answer = await chat(relay, stream=True)
    assert answer.status_code == 502, answer.text[:200]
    assert answer.json()["error"]["code"] == "upstream_bad_response"
    assert content_type in answer.json()["error"]["message"]


# -- Retry-After --------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["inf", "1e999", "Fri, 31 Dec 9999 23:59:59 GMT"])
async def test_an_endless_retry_after_is_clamped(upstream, value):
    relay, _, sleeps = build_relay(upstream)
    upstream.script(Fault.status(429, retry_after=value))
    answer = await chat(relay)
    assert answer.status_code == 429
    assert answer.headers["retry-after"] == str(int(MAX_RETRY_AFTER))
    assert sleeps.waits == []  # longer than the deadline: not waited for


@pytest.mark.parametrize(
    ("value", "waited"),
    [("-5", 0.0), ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0), ("nan", None), ("soon", None), ("1e-999", 0.0)],
)
async def test_a_meaningless_retry_after_is_a_finite_wait(upstream, value, waited):
    relay, _, sleeps = build_relay(upstream)
    upstream.script(Fault.status(503, retry_after=value))
    answer = await chat(relay)
    assert answer.status_code == 200
    (wait,) = sleeps.waits
    if waited is None:  # not a number: the jittered backoff
        assert 0.0 <= wait <= 0.5
    else:
        assert wait == waited


async def test_an_endless_retry_after_ms_is_clamped(upstream):
    relay, _, _ = build_relay(upstream, retry={"max_attempts": 1})
    upstream.script(Fault.status(503, retry_after_ms="1e999"))
    answer = await chat(relay)
    assert answer.status_code == 503 and answer.headers["retry-after"] == str(int(MAX_RETRY_AFTER))


# -- what is read from an answer ----------------------------------------------------------------


def claude_relay(upstream, **retry):
    """``claude`` (an Anthropic provider on the fake) and ``test-model`` (OpenAI)."""
    config = {
        "storage": {"ledger": "memory://"}, "default_models": False, "retry": retry,
        "providers": {"up": provider(upstream), "claude": {**provider(upstream), "kind": "anthropic"}},
        "models": {
            "test-model": {"provider": "up", "upstream": "gpt-4o-mini", "price": {"input": 2.5, "output": 10}},
            "claude": {"provider": "claude", "upstream": "claude-sonnet-4-5", "price": {"input": 3, "output": 15}},
        },
    }
    relay = Relay(config)
    relay.router.sleep = Sleeps()
    _built[-1].append(relay)
    return relay


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_hostile_usage_numbers_are_clamped(upstream, stream):
    relay = relay_with(upstream, attempts=1)
    upstream.script(Fault.raw_usage(prompt_tokens=1e30, completion_tokens=-7, prompt_tokens_details={"cached_tokens": 1e300}))
    answer = await chat(relay, stream=stream)
    assert answer.status_code == 200
    (row,) = relay.ledger.rows()
    assert (row.status, row.prompt_tokens, row.completion_tokens, row.cached_tokens) == (200, Usage.MAX, 0, Usage.MAX)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_usage_that_is_not_a_number_counts_nothing(upstream, stream):
    relay = relay_with(upstream, attempts=1)
    upstream.script(Fault.raw_usage(prompt_tokens="12abc", completion_tokens=[3], prompt_tokens_details="x"))
    answer = await chat(relay, stream=stream)
    assert answer.status_code == 200
    (row,) = relay.ledger.rows()
    assert (row.status, row.prompt_tokens, row.completion_tokens) == (200, 0, 0)


async def test_a_translated_stream_with_unreadable_fields_is_retried(upstream):
    relay = claude_relay(upstream, max_attempts=2)
    start = {"type": "message_start", "message": {"id": "msg_1", "model": "m", "usage": [["input_tokens"]]}}
    events = [b"event: message_start\ndata: " + orjson.dumps(start) + b"\n\n"]
    upstream.script(Fault.raw(events=events))
    answer = await chat(relay, model="claude", stream=True)
    assert answer.status_code == 200 and b"data: [DONE]" in answer.content
    assert errors_of(relay) == ["upstream_bad_response", None]


@pytest.mark.parametrize(
    "body",
    [b'{"type": "message", "content": [{"type": "tool_use", "input": 7}], "stop_reason": ["x"]}',
     b'{"type": "message", "content": [{"type": "text", "text": 5}]}'],
)
async def test_a_translated_answer_with_unreadable_fields_is_retried(upstream, body):
    relay = claude_relay(upstream, max_attempts=2)
    upstream.script(Fault.raw(body))
    answer = await chat(relay, model="claude")
    assert answer.status_code == 200, answer.text[:300]
    assert errors_of(relay) == ["upstream_bad_response", None]


# -- the upstream key never comes back ----------------------------------------------------------


async def test_every_string_of_an_upstream_error_is_scrubbed(upstream, secret_scan):
    relay = relay_with(upstream, attempts=1)
    error = {"message": f"bad key {UPSTREAM_KEY}", "type": f"type_{UPSTREAM_KEY}", "code": UPSTREAM_KEY, "param": UPSTREAM_KEY}
    upstream.script(Fault.status(400, body={"error": error}))
    answer = await chat(relay)
    assert answer.status_code == 400 and UPSTREAM_KEY not in answer.text
    assert answer.json()["error"]["code"] == "[redacted]"
    (row,) = relay.ledger.rows()
    assert UPSTREAM_KEY not in f"{row.error_type} {row.attempt_log}"


async def test_an_error_event_in_a_passed_through_stream_is_scrubbed(upstream, secret_scan):
    relay = relay_with(upstream, attempts=1)
    event = orjson.dumps({"error": {"message": f"key {UPSTREAM_KEY} revoked", "code": UPSTREAM_KEY}})
    upstream.script(Fault.raw(events=[b"data: " + event + b"\n\n"]))
    answer = await chat(relay, stream=True)
    assert UPSTREAM_KEY not in answer.text and "[redacted]" in answer.text


async def test_an_error_event_in_a_translated_stream_is_scrubbed(upstream, secret_scan):
    relay = claude_relay(upstream, max_attempts=1)
    error = {"type": "error", "error": {"type": f"overloaded_{UPSTREAM_KEY}", "message": f"for {UPSTREAM_KEY}"}}
    upstream.script(Fault.raw(events=[b"event: error\ndata: " + orjson.dumps(error) + b"\n\n"]))
    answer = await chat(relay, model="claude", stream=True)
    assert UPSTREAM_KEY not in answer.text and "[redacted]" in answer.text
    (row,) = relay.ledger.rows()
    assert UPSTREAM_KEY not in f"{row.error_type} {row.attempt_log}"


# -- statuses HTTP does not define ----------------------------------------------------------------


@pytest.mark.parametrize("status", ["600 Beyond", "999 Whatever"])
async def test_a_status_outside_http_is_an_upstream_failure(status):
    from tests.test_h1 import Upstream, answer, serve

    async with Upstream(serve(lambda peer, request: peer.send(answer(b"{}", status=status)))) as server:
        config = {
            "storage": {"ledger": "memory://"}, "default_models": False, "retry": {"max_attempts": 1},
            "providers": {"raw": {"kind": "openai_compatible", "base_url": server.url("/v1"), "api_key": "k-raw-0123456789"}},
            "models": {"test-model": {"provider": "raw", "upstream": "m"}},
        }
        relay = Relay(config)
        answered = await chat(relay)
        await relay.shutdown()
    assert answered.status_code == 502, answered.text[:200]
    assert answered.json()["error"]["code"] == "upstream_bad_response"
