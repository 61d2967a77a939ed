"""Metrics hooks that await: the breaker-state gauge read from the breaker store at a scrape."""

from __future__ import annotations

from pathlib import Path

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


async def test_the_scraped_families_add_up_to_the_requests_answered(upstream):
    """One process keeps the per-request numbers itself and makes the families when scraped:
    counts, sums, cumulative histogram buckets and first-byte times agree with the ledger."""
    from prometheus_client.parser import text_string_to_metric_families

    from tests.relay_calls import pieces, until

    relay = Relay(make_config(upstream))
    try:
        for i in range(3):
            await chat(relay, {"model": "test-model", "messages": [{"role": "user", "content": f"hi {i}"}]})
        streamed = await chat(relay, {"model": "test-model", "stream": True, "messages": [{"role": "user", "content": "s"}]})
        await pieces(streamed)
        await until(lambda: len(relay.ledger.rows()) == 4)
        families = {f.name: f for f in text_string_to_metric_families((await relay.metrics.scrape()).decode())}
        rows = relay.ledger.rows()
    finally:
        await relay.shutdown()
    assert len(rows) == 4
    requests = families["relay_requests"].samples
    assert sum(s.value for s in requests if s.name == "relay_requests_total") == 4
    latency = [s for s in families["relay_request_latency_seconds"].samples if s.labels.get("model") == "test-model"]
    buckets = [s.value for s in latency if s.name.endswith("_bucket")]
    assert buckets == sorted(buckets) and buckets[-1] == 4  # cumulative, +Inf = every request
    assert [s.value for s in latency if s.name.endswith("_count")] == [4]
    assert 0 < next(s.value for s in latency if s.name.endswith("_sum")) < 60
    ttfb = [s for s in families["relay_time_to_first_byte_seconds"].samples if s.name.endswith("_count")]
    assert [s.value for s in ttfb] == [1]
    tokens = {s.labels["kind"]: s.value for s in families["relay_tokens"].samples if s.name == "relay_tokens_total"}
    assert tokens["prompt"] == sum(r.prompt_tokens for r in rows) and tokens["completion"] == sum(r.completion_tokens for r in rows)
    cost = sum(s.value for s in families["relay_cost_usd"].samples if s.name == "relay_cost_usd_total")
    assert abs(cost - float(sum(r.cost_usd for r in rows))) < 1e-9


def test_a_scrape_racing_a_workers_new_file_is_answered(tmp_path):
    """In multiprocess mode a worker's file exists, empty, for a moment before it is sized; a
    scrape in that moment reads every other worker's values and answers (it was a 500)."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent("""
        import sys
        from pathlib import Path
        from asgi_ai_relay.metrics import Metrics

        metrics = Metrics()
        metrics.requests.labels("chat.completions", "m", "p", "200", "miss").inc(3)
        (Path(sys.argv[1]) / "counter_999999.db").touch()  # another worker's, not yet sized
        text = metrics.render().decode()
        assert 'relay_requests_total{cache="miss",endpoint="chat.completions",model="m",provider="p",status="200"} 3.0' in text, text
        print("answered")
    """)
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=60,
                         env={"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PATH": "/usr/bin:/bin",
                              "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    assert out.returncode == 0 and out.stdout.strip() == "answered", out.stderr[-2000:]
