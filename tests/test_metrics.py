"""Metrics hooks that await: the breaker-state gauge read from the breaker store at a scrape."""

from __future__ import annotations

from asgi_ai_relay import Relay
from tests.conftest import make_config
from tests.fake_upstream import Fault
from tests.relay_calls import chat


async def test_breaker_gauge_follows_the_breaker_store(upstream):
    relay = Relay(make_config(upstream, breaker={"failure_threshold": 1, "cooldown": 60}, retry={"max_attempts": 1}))
    relay.metrics.watch_breakers(relay.router.health)
    try:
        text = (await relay.metrics.scrape()).decode()
        assert 'relay_breaker_state{deployment="up/gpt-4o-mini",provider="up"} 0.0' in text
        upstream.script(Fault.status(500))
        body = {"model": "test-model", "messages": [{"role": "user", "content": "hi"}]}
        assert (await chat(relay, body)).status == 500  # the upstream's own status, passed on
        text = (await relay.metrics.scrape()).decode()
        assert 'relay_breaker_state{deployment="up/gpt-4o-mini",provider="up"} 2.0' in text
        # A synchronous render reports what the last scrape read.
        assert 'relay_breaker_state{deployment="up/gpt-4o-mini",provider="up"} 2.0' in relay.metrics.render().decode()
    finally:
        await relay.shutdown()


async def test_a_failing_breaker_reading_leaves_the_rest_of_the_scrape(upstream, caplog):
    relay = Relay(make_config(upstream))

    async def broken():
        raise RuntimeError("store gone")

    relay.metrics.watch_breakers(broken)
    text = (await relay.metrics.scrape()).decode()
    assert "relay_breaker_state" not in text.replace("# HELP relay_breaker_state", "").replace("# TYPE relay_breaker_state", "")
    assert "relay_queue_depth" in text
    assert any("reading relay_breaker_state failed" in r.getMessage() for r in caplog.records)
