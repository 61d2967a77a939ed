"""FastAPI, Flask and Django hosts with the OpenTelemetry SDK and each framework's own
instrumentation: every relay call is one trace (the host's server span, the relay's request
span under it, an attempt span per upstream try), and the upstream request carries it on.
The clients are the official openai SDK against real servers (uvicorn, werkzeug) and Django's
test client."""

from __future__ import annotations

from collections import defaultdict

import openai
import pytest

from opentelemetry.trace import SpanKind
from tests.conftest import RELAY_KEY, make_config
from tests.fake_upstream import Fault
from tests.live import LiveServer, WSGILiveServer
from tests.otel_sdk import otel  # noqa: F401 - the fixture

pytest.importorskip("opentelemetry.instrumentation.asgi")

MESSAGES = [{"role": "user", "content": "One trace per call"}]


def traces_of(otel):  # noqa: F811
    """``{trace id: spans}`` of the traces that hold a relay request span."""
    traces = defaultdict(list)
    for span in otel.spans():
        traces[span.context.trace_id].append(span)
    return {tid: spans for tid, spans in traces.items() if any("relay.request_id" in s.attributes for s in spans)}


def check_one_trace_per_call(otel, upstream, calls, attempts):  # noqa: F811
    traces = traces_of(otel)
    assert len(traces) == calls
    sent = [r.headers["traceparent"].split("-") for r in upstream.requests]
    for trace_id, spans in traces.items():
        by_id = {s.context.span_id: s for s in spans}
        (request,) = [s for s in spans if "relay.request_id" in s.attributes]
        host = [s for s in spans if s.kind is SpanKind.SERVER and s is not request]
        assert len(host) == 1 and host[0].parent is None, [s.name for s in spans]
        assert request.kind is SpanKind.INTERNAL
        ancestor = by_id[request.parent.span_id]  # under the host's span (directly or through its own)
        while ancestor is not host[0]:
            ancestor = by_id[ancestor.parent.span_id]
        tries = [s for s in spans if "relay.attempt" in s.attributes]
        assert all(t.parent.span_id == request.context.span_id and t.kind is SpanKind.CLIENT for t in tries)
        assert request.attributes["relay.attempts"] == len(tries)
        sent_here = [(tid, sid) for _, tid, sid, _ in sent if tid == f"{trace_id:032x}"]
        assert sorted(sid for _, sid in sent_here) == sorted(f"{t.context.span_id:016x}" for t in tries)
    assert sorted(len([s for s in spans if "relay.attempt" in s.attributes]) for spans in traces.values()) == sorted(attempts)


def sdk_calls(base_url, upstream):
    client = openai.OpenAI(base_url=base_url, api_key=RELAY_KEY, max_retries=0)
    upstream.script(Fault.status(500))  # the first call is retried once
    for text in ("first", "second"):
        answer = client.chat.completions.create(model="test-model", messages=[{"role": "user", "content": text}])
        assert answer.choices[0].message.content == f"Echo: {text}"


def relay_config(upstream):
    return make_config(upstream, api_keys=[{"key": "env:TEST_RELAY_KEY", "caller": "svc"}],
                       retry={"max_attempts": 2, "base_delay": 0.01, "max_delay": 0.01})


def test_fastapi_host(upstream, otel):  # noqa: F811
    from fastapi import FastAPI
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    from asgi_ai_relay import RelayMiddleware

    app = FastAPI()
    app.add_middleware(RelayMiddleware, config=relay_config(upstream))
    with LiveServer(OpenTelemetryMiddleware(app)) as server:
        sdk_calls(f"{server.url}/ai/v1", upstream)
    check_one_trace_per_call(otel, upstream, calls=2, attempts=[2, 1])


def test_flask_host(upstream, otel):  # noqa: F811
    pytest.importorskip("opentelemetry.instrumentation.flask")
    from flask import Flask
    from flask_ai_relay import AIRelay
    from opentelemetry.instrumentation.flask import FlaskInstrumentor

    app = Flask("traced")
    app.config["AI_RELAY"] = relay_config(upstream)
    AIRelay(app)
    FlaskInstrumentor().instrument_app(app)
    try:
        with WSGILiveServer(app) as server:
            sdk_calls(f"{server.url}/ai/v1", upstream)
    finally:
        FlaskInstrumentor().uninstrument_app(app)
    check_one_trace_per_call(otel, upstream, calls=2, attempts=[2, 1])


def django_calls(post):
    """Two calls through Django's middleware stack, the first one retried once."""
    import orjson

    return [post("/ai/v1/chat/completions", data=orjson.dumps({"model": "test-model", "messages": MESSAGES}),
                 content_type="application/json", headers={"authorization": f"Bearer {RELAY_KEY}"}) for _ in range(2)]


@pytest.mark.django_db  # a bearer token may be a managed key (RelayKey)
def test_django_host_wsgi(upstream, otel, settings):  # noqa: F811
    pytest.importorskip("opentelemetry.instrumentation.django")
    from django.test import Client
    from opentelemetry.instrumentation.django import DjangoInstrumentor

    settings.AI_RELAY = relay_config(upstream)
    upstream.script(Fault.status(500))
    DjangoInstrumentor().instrument()
    try:
        client = Client()
        answers = django_calls(client.post)
    finally:
        DjangoInstrumentor().uninstrument()
    assert [a.status_code for a in answers] == [200, 200]
    check_one_trace_per_call(otel, upstream, calls=2, attempts=[2, 1])


@pytest.mark.django_db(transaction=True)
async def test_django_host_asgi(upstream, otel, settings):  # noqa: F811
    pytest.importorskip("opentelemetry.instrumentation.django")
    from django.test import AsyncClient
    from opentelemetry.instrumentation.django import DjangoInstrumentor

    settings.AI_RELAY = relay_config(upstream)
    upstream.script(Fault.status(500))
    DjangoInstrumentor().instrument()
    try:
        client = AsyncClient()
        answers = [await a for a in django_calls(client.post)]
    finally:
        DjangoInstrumentor().uninstrument()
    assert [a.status_code for a in answers] == [200, 200]
    check_one_trace_per_call(otel, upstream, calls=2, attempts=[2, 1])
