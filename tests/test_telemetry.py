"""OpenTelemetry spans and metrics of relay requests (GenAI semantic conventions), read from
the SDK's in-memory exporter and reader; the upstream is the fake provider, a real HTTP server."""

from __future__ import annotations

import os
import subprocess
import sys
from decimal import Decimal

import orjson
import pytest

from opentelemetry.trace import SpanKind, StatusCode
from tests.conftest import make_config
from tests.fake_upstream import Fault
from tests.otel_sdk import otel  # noqa: F401 - the fixture
from tests.relay_calls import chat, pieces, relays  # noqa: F401 - the fixture
from tests.resilience_helpers import _second_server, _shutdown_relays, build_relay, second  # noqa: F401 - fixtures
from tests.resilience_helpers import chat as http_chat

MESSAGES = [{"role": "user", "content": "Tell me about tracing"}]
BODY = {"model": "test-model", "messages": MESSAGES, "temperature": 0}
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT = "b7ad6b7169203331"


def one(spans, kind):
    found = [s for s in spans if s.kind is kind]
    assert len(found) == 1, [s.name for s in spans]
    return found[0]


def by_type(points):
    return {p.attributes["gen_ai.token.type"]: p for p in points}


async def test_whole_answer_one_request_span_and_one_attempt_span(upstream, relays, otel):  # noqa: F811
    relay = relays(make_config(upstream))
    answer = await chat(relay, BODY, headers={"traceparent": f"00-{TRACE_ID}-{PARENT}-01"})
    assert answer.status == 200
    usage = orjson.loads(answer.body)["usage"]
    request = one(otel.spans(), SpanKind.SERVER)
    attempt = one(otel.spans(), SpanKind.CLIENT)
    assert request.name == "chat test-model" and attempt.name == "chat gpt-4o-mini"
    assert attempt.parent.span_id == request.context.span_id
    assert request.context.trace_id == attempt.context.trace_id == int(TRACE_ID, 16)
    assert request.parent.span_id == int(PARENT, 16) and request.parent.is_remote
    a = request.attributes
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.provider.name"] == "up"
    assert a["gen_ai.request.model"] == a["relay.alias"] == "test-model"
    assert a["gen_ai.response.model"] == "gpt-4o-mini"
    assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (usage["prompt_tokens"], usage["completion_tokens"])
    assert a["gen_ai.response.finish_reasons"] == ("stop",)
    assert a["gen_ai.request.temperature"] == 0
    assert a["relay.caller"] == "anonymous" and a["relay.cache"] == "miss" and a["relay.attempts"] == 1
    assert Decimal(str(a["relay.cost_usd"])) == Decimal(answer.headers["x-relay-cost-usd"]).normalize()
    assert a["relay.request_id"] == answer.headers["x-request-id"]
    b = attempt.attributes
    assert b["gen_ai.request.model"] == "gpt-4o-mini" and b["gen_ai.response.model"] == "gpt-4o-mini"
    assert (b["server.address"], b["server.port"]) == ("127.0.0.1", upstream.port)
    assert b["relay.attempt"] == 1 and b["relay.breaker.state"] == "closed" and b["relay.deployment"]
    assert b["gen_ai.usage.output_tokens"] == usage["completion_tokens"]
    assert request.status.status_code is StatusCode.UNSET
    # The attempt's context went upstream; no other header of the caller's did.
    sent = upstream.last_request.headers
    assert sent["traceparent"] == f"00-{TRACE_ID}-{attempt.context.span_id:016x}-01"
    points = otel.collect()
    (duration,) = points["gen_ai.client.operation.duration"]
    assert duration.count == 1 and duration.attributes["gen_ai.request.model"] == "test-model"
    assert duration.attributes["gen_ai.provider.name"] == "up" and "error.type" not in duration.attributes
    tokens = by_type(points["gen_ai.client.token.usage"])
    assert (tokens["input"].sum, tokens["output"].sum) == (usage["prompt_tokens"], usage["completion_tokens"])
    assert "gen_ai.client.operation.time_to_first_chunk" not in points


async def test_client_headers_other_than_trace_context_stay_behind(upstream, relays, otel):  # noqa: F811
    relay = relays(make_config(upstream))
    headers = {"traceparent": f"00-{TRACE_ID}-{PARENT}-01", "baggage": "user=alice", "x-caller-secret": "s3"}
    assert (await chat(relay, BODY, headers=headers)).status == 200
    sent = upstream.last_request.headers
    assert "baggage" not in sent and "x-caller-secret" not in sent
    assert sent["traceparent"].split("-")[1] == TRACE_ID


async def test_a_request_without_trace_context_starts_a_trace_that_reaches_upstream(upstream, relays, otel):  # noqa: F811
    relay = relays(make_config(upstream))
    await chat(relay, BODY)
    await chat(relay, {**BODY, "temperature": 0.5})
    requests = [s for s in otel.spans() if s.kind is SpanKind.SERVER]
    assert len(requests) == 2 and requests[0].parent is None
    assert requests[0].context.trace_id != requests[1].context.trace_id
    upstream_ids = {r.headers["traceparent"].split("-")[1] for r in upstream.requests}
    assert upstream_ids == {f"{s.context.trace_id:032x}" for s in requests}


async def test_streamed_answer_spans_and_time_to_first_chunk(upstream, relays, otel):  # noqa: F811
    relay = relays(make_config(upstream))
    answer = await chat(relay, {**BODY, "stream": True, "stream_options": {"include_usage": True}})
    body = b"".join(await pieces(answer))
    assert b"[DONE]" in body
    request = one(otel.spans(), SpanKind.SERVER)
    attempt = one(otel.spans(), SpanKind.CLIENT)
    row = relay.ledger.rows()[-1]
    assert request.attributes["relay.stream"] is True
    assert request.attributes["gen_ai.usage.output_tokens"] == row.completion_tokens > 0
    assert request.attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert attempt.end_time <= request.end_time and attempt.attributes["gen_ai.usage.output_tokens"] == row.completion_tokens
    (first,) = otel.collect()["gen_ai.client.operation.time_to_first_chunk"]
    assert first.count == 1 and 0 < first.sum <= (request.end_time - request.start_time) / 1e9


async def test_cache_hit_has_no_attempt_and_no_token_usage(upstream, relays, otel):  # noqa: F811
    relay = relays(make_config(upstream))
    await chat(relay, BODY)
    otel.collect()
    otel.exporter.clear()
    hit = await chat(relay, BODY)
    assert hit.headers["x-relay-cache"] == "hit"
    spans = otel.spans()
    request = one(spans, SpanKind.SERVER)
    assert not [s for s in spans if s.kind is SpanKind.CLIENT]
    assert request.attributes["relay.cache"] == "hit" and request.attributes["relay.cost_usd"] == 0
    assert request.attributes["relay.cache_saved_usd"] > 0
    assert request.attributes["gen_ai.response.model"] == "gpt-4o-mini"
    points = otel.collect()
    assert points["gen_ai.client.operation.duration"][0].attributes["relay.cache"] == "hit"
    assert "gen_ai.client.token.usage" not in points


async def test_retried_attempt_is_a_failed_span_then_a_served_one(upstream):
    relay, _, _ = build_relay(upstream)
    upstream.script(Fault.status(500))
    otel_view = _view()
    answer = await http_chat(relay)
    assert answer.status_code == 200
    first, served = otel_view.attempts()
    assert (first.attributes["relay.attempt"], served.attributes["relay.attempt"]) == (1, 2)
    assert first.status.status_code is StatusCode.ERROR and first.attributes["http.response.status_code"] == 500
    assert first.attributes["error.type"]
    assert served.status.status_code is StatusCode.UNSET
    request = one(otel_view.spans(), SpanKind.SERVER)
    assert request.attributes["relay.attempts"] == 2
    assert {first.parent.span_id, served.parent.span_id} == {request.context.span_id}
    sent = [r.headers["traceparent"].split("-")[2] for r in upstream.requests]
    assert sent == [f"{first.context.span_id:016x}", f"{served.context.span_id:016x}"]


async def test_failover_to_another_provider_and_breaker_skip_event(upstream, second):  # noqa: F811
    relay, _, _ = build_relay(upstream, second, retry={"max_attempts": 1}, breaker={"failure_threshold": 1})
    view = _view()
    upstream.script(Fault.status(503))
    assert (await http_chat(relay)).status_code == 200
    failed, served = view.attempts()
    assert (failed.attributes["relay.model"], served.attributes["relay.model"]) == ("test-model", "backup")
    assert served.attributes["gen_ai.request.model"] == "gpt-4o" and served.attributes["server.port"] == second.port
    request = one(view.spans(), SpanKind.SERVER)
    assert request.attributes["relay.model"] == "backup" and request.attributes["gen_ai.request.model"] == "test-model"
    view.exporter.clear()
    assert (await http_chat(relay)).status_code == 200  # the breaker of test-model is open now
    request = one(view.spans(), SpanKind.SERVER)
    (event,) = [e for e in request.events if e.name == "relay.attempt.skipped"]
    assert event.attributes["relay.skip_reason"] == "circuit_open"
    assert [s.attributes["relay.model"] for s in view.attempts()] == ["backup"]


async def test_failed_request_span_and_duration_carry_the_error(upstream):
    relay, _, _ = build_relay(upstream, retry={"max_attempts": 1})
    view = _view()
    upstream.script(Fault.status(500))
    assert (await http_chat(relay)).status_code == 500
    request = one(view.spans(), SpanKind.SERVER)
    assert request.status.status_code is StatusCode.ERROR
    assert request.attributes["error.type"] and request.attributes["http.response.status_code"] == 500
    (duration,) = view.collect()["gen_ai.client.operation.duration"]
    assert duration.attributes["error.type"] == request.attributes["error.type"]


async def test_telemetry_disabled_records_nothing(upstream, relays, otel):  # noqa: F811
    relay = relays(make_config(upstream, telemetry={"enabled": False}))
    assert (await chat(relay, BODY, headers={"traceparent": f"00-{TRACE_ID}-{PARENT}-01"})).status == 200
    assert otel.spans() == [] and "gen_ai.client.operation.duration" not in otel.collect()
    assert "traceparent" not in upstream.last_request.headers


async def test_only_model_endpoints_are_traced(upstream, relays, otel):  # noqa: F811
    from tests.relay_calls import get

    relay = relays(make_config(upstream))
    for path in ("/v1/models", "/v1/health", "/readyz"):
        assert (await get(relay, path)).status == 200
    assert otel.spans() == []


_VIEW = None


def _view():
    """The ``otel`` fixture's view, for tests that use ``build_relay``'s own fixture order."""
    assert _VIEW is not None
    return _VIEW


@pytest.fixture(autouse=True)
def _otel_view(otel):  # noqa: F811
    global _VIEW
    _VIEW = otel
    yield
    _VIEW = None


def test_without_a_configured_provider_nothing_is_made(tmp_path):
    """A process whose host configured no OpenTelemetry: no span objects, no instruments, no
    traceparent upstream. Also prints what the hooks cost there (a number, not an assertion)."""
    script = r'''
import asyncio, time
from asgi_ai_relay import Relay, RelayRequest
from asgi_ai_relay.telemetry_metrics import _Instruments
async def main():
    relay = Relay({"storage": {"ledger": "memory://"}, "log_requests": False, "cache": {"mode": "off"}})
    seen = []
    original = relay.telemetry.finish
    def finish(call):
        original(call)
        seen.append(call.trace)
    relay.telemetry.finish = finish
    body = b'{"model":"gpt-4.1","messages":[{"role":"user","content":"hi"}]}'
    headers = {"content-type": "application/json", "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    for _ in range(3):
        answer = await relay.handle(RelayRequest("POST", "/v1/chat/completions", headers, body))
        assert answer.status == 200, answer.body
    assert seen == [None, None, None], seen
    assert _Instruments.made is None
    call = relay._new_call(RelayRequest("POST", "/v1/chat/completions", headers, body), relay.match("POST", "/v1/chat/completions"))
    n = 200_000
    t = time.perf_counter()
    for _ in range(n):
        original(call)
    finish_ns = (time.perf_counter() - t) / n * 1e9
    t = time.perf_counter()
    for _ in range(n):
        relay.telemetry.upstream_headers(call, None)
    headers_ns = (time.perf_counter() - t) / n * 1e9
    print(f"telemetry off: finish step {finish_ns:.0f} ns, upstream headers {headers_ns:.0f} ns per request")
    for enabled in (False, True, False, True):
        other = Relay({"storage": {"ledger": "memory://"}, "log_requests": False, "cache": {"mode": "off"}, "telemetry": {"enabled": enabled}})
        for _ in range(200):
            await other.handle(RelayRequest("POST", "/v1/chat/completions", headers, body))
        t = time.perf_counter()
        for _ in range(2000):
            await other.handle(RelayRequest("POST", "/v1/chat/completions", headers, body))
        print(f"mock request, telemetry.enabled={enabled}: {(time.perf_counter() - t) / 2000 * 1e6:.1f} us")
        await other.shutdown()
    await relay.shutdown()
asyncio.run(main())
'''
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), os.path.join(os.getcwd(), "integrations")])}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    print(done.stdout.strip())


async def test_embeddings_and_anthropic_format_spans(upstream, relays, otel):  # noqa: F811
    from asgi_ai_relay import RelayRequest
    from tests.test_embeddings import config as embeddings_config

    relay = relays(embeddings_config(upstream))
    sent = {"content-type": "application/json"}
    answer = await relay.handle(RelayRequest("POST", "/v1/embeddings", sent, orjson.dumps({"model": "emb-ge", "input": ["a b", "c"]})))
    assert answer.status == 200
    request = one(otel.spans(), SpanKind.SERVER)
    attempt = one(otel.spans(), SpanKind.CLIENT)
    assert request.name == "embeddings emb-ge" and request.attributes["gen_ai.operation.name"] == "embeddings"
    assert request.attributes["gen_ai.provider.name"] == attempt.attributes["gen_ai.provider.name"] == "gcp.gemini"
    assert attempt.attributes["gen_ai.request.model"] == "gemini-embedding-001"
    assert request.attributes["gen_ai.usage.input_tokens"] == relay.ledger.rows()[-1].prompt_tokens > 0
    otel.exporter.clear()
    messages = {"model": "chat-an", "max_tokens": 50, "messages": [{"role": "user", "content": "hello"}]}
    relay = relays({**embeddings_config(upstream), "models": {"chat-an": {"provider": "an", "upstream": "claude-sonnet-4-5"}}})
    answer = await relay.handle(RelayRequest("POST", "/v1/messages", sent, orjson.dumps(messages)))
    assert answer.status == 200
    request = one(otel.spans(), SpanKind.SERVER)
    assert request.attributes["gen_ai.provider.name"] == "anthropic" and request.attributes["gen_ai.request.max_tokens"] == 50
    assert request.attributes["gen_ai.response.finish_reasons"] == ("end_turn",)
    assert request.attributes["gen_ai.response.model"] == "claude-sonnet-4-5"
    assert upstream.last_request.headers["traceparent"].split("-")[2] == f"{one(otel.spans(), SpanKind.CLIENT).context.span_id:016x}"


async def test_a_half_open_probe_attempt_says_so(upstream):
    relay, clock, _ = build_relay(upstream, retry={"max_attempts": 1}, breaker={"failure_threshold": 1, "cooldown": 30})
    view = _view()
    upstream.script(Fault.status(500))
    assert (await http_chat(relay)).status_code == 500
    assert [s.attributes["relay.breaker.state"] for s in view.attempts()] == ["closed"]
    view.exporter.clear()
    clock.advance(31)
    assert (await http_chat(relay)).status_code == 200
    (probe,) = view.attempts()
    assert probe.attributes["relay.breaker.state"] == "half_open"
