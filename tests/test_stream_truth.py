"""What a stream records is true: a stream cut short is charged what it used, a stream without
its terminal event is a failure and never cached, and nothing is sent before content."""

from __future__ import annotations

import datetime

import orjson
import pytest

from asgi_ai_relay import Relay, RelayRequest
from tests.fake_upstream import Fault
from tests.resilience_helpers import (  # noqa: F401 - fixtures
    MESSAGES,
    _second_server,
    _shutdown_relays,
    build_relay,
    second,
    sse_events,
)

KEY = "stream-key"
LONG = "word " * 400


def _relay(upstream, second=None, **extra) -> Relay:
    relay, _, _ = build_relay(
        upstream, second, api_keys=[{"key": KEY, "caller": "streamer"}],
        limits={"caller": {"tpm": 1_000_000}}, budgets={"default": {"daily": 100}}, **extra,
    )
    relay.traffic.store.clock = lambda: 1000.0  # type: ignore[attr-defined]
    return relay


async def _open(relay: Relay, **body):
    headers = {"content-type": "application/json", "authorization": f"Bearer {KEY}"}
    payload = {"model": "test-model", "messages": MESSAGES, "stream": True, **body}
    return await relay.handle(RelayRequest("POST", "/v1/chat/completions", headers, orjson.dumps(payload)))


async def _read_all(response) -> bytes:
    out = b"".join([piece async for piece in response.stream])
    await response.stream.aclose()
    return out


def _tpm_charged(relay: Relay) -> float:
    (bucket,) = [b for b in relay.traffic._callers["streamer"] if b.kind == "tokens"]
    return max(0.0, relay.traffic.store._tats.get(bucket.key, 0.0) - 1000.0) / bucket.rate.interval  # type: ignore[attr-defined]


def _today_spend(relay: Relay):
    assert relay.spend is not None
    return relay.spend.spent("streamer", datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d"))


async def test_an_abandoned_stream_is_charged_an_estimate(upstream):
    """Issue 13 #2: a caller that leaves before the final usage chunk used to be recorded with
    0 tokens and $0, refunded its TPM estimate and its budget hold."""
    relay = _relay(upstream)
    upstream.script(Fault.reply(LONG) | Fault.stream_stall(after_chunks=60, seconds=5))
    response = await _open(relay, stream_options={"include_usage": True})
    words = 0
    async for piece in response.stream:  # the provider pauses after 60 events: leave before
        words += piece.count(b'"content":"word ')
        if words >= 30:
            break
    await response.stream.aclose()
    await relay.traffic.settle()
    (row,) = relay.ledger.rows()
    assert row.status == 499 and row.estimated
    assert row.prompt_tokens > 0 and row.completion_tokens >= 30
    assert row.cost_usd > 0
    assert _tpm_charged(relay) == pytest.approx(row.prompt_tokens + row.completion_tokens, abs=0.01)
    assert _today_spend(relay) == row.cost_usd


async def test_a_stream_the_provider_drops_is_charged_an_estimate(upstream):
    relay = _relay(upstream)
    upstream.script(Fault.reply(LONG) | Fault.drop(after_chunks=50))
    body = await _read_all(await _open(relay))
    assert b'"error"' in body.splitlines()[-2] or b'"error"' in body
    (row,) = relay.ledger.rows()
    assert row.status == 502 and row.estimated
    assert row.completion_tokens >= 40 and row.cost_usd > 0


async def test_a_stream_without_its_terminal_event_is_a_failure_and_not_cached(upstream):
    """Issue 13 #4: a stream that simply stops used to be recorded as 200 and cached."""
    relay = _relay(upstream)
    upstream.script(Fault.reply(LONG) | Fault.truncate(after_chunks=20))
    body = await _read_all(await _open(relay, temperature=0))
    events = sse_events(body)
    assert "[DONE]" not in events and "error" in events[-1]
    (row,) = relay.ledger.rows()
    assert row.status == 502
    again = await _read_all(await _open(relay, temperature=0))
    assert "[DONE]" in sse_events(again)
    assert len(upstream.requests) == 2  # the truncated answer was not served from the cache


async def test_a_stream_that_fails_before_content_is_retried(upstream):
    """Issue 13 #15: a stream that failed after only its role delta reached the caller as a
    broken stream; nothing had been sent that mattered, so the route tries again."""
    relay = _relay(upstream, retry={"max_attempts": 2})
    upstream.script(Fault.truncate(after_chunks=1))
    body = await _read_all(await _open(relay))
    events = sse_events(body)
    assert events[-1] == "[DONE]"
    assert all("error" not in e for e in events if isinstance(e, dict))
    (row,) = relay.ledger.rows()
    assert row.status == 200 and row.attempts == 2
