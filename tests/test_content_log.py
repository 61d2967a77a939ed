"""Content logging modes: ``none`` stores nothing of a prompt or answer anywhere (the suite's
scanner watches the prompt text in every log record, ledger row, span and metric), ``metadata``
adds counts, sizes and tool names, ``full`` writes redacted, capped content to its sink only."""

from __future__ import annotations

import logging

import orjson
import pytest

from asgi_ai_relay.content_log import EVENT, Redactor
from opentelemetry.trace import SpanKind
from tests.conftest import make_config
from tests.otel_sdk import otel  # noqa: F401 - the fixture
from tests.relay_calls import chat, get, pieces, relays  # noqa: F401 - the fixture

MARKER = "PROMPT-MARKER-7f3a9c"
TOOL = "lookup_zebra_ledger"
OTHER_KEY = "zz-other-provider-key-55aa77"
TOOLS = [{"type": "function", "function": {"name": TOOL, "description": "Look it up",
                                            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}]


def body(text=f"Please remember {MARKER} for me", **extra):
    return {"model": "test-model", "messages": [{"role": "system", "content": f"System {MARKER}-sys"},
                                                {"role": "user", "content": text}], **extra}


async def ask(relay, payload):
    answer = await chat(relay, payload)
    if payload.get("stream"):
        await pieces(answer)
    return answer


def config(upstream, **logging_settings):
    return make_config(upstream, logging=logging_settings, metrics={"enabled": True})


@pytest.mark.parametrize("stream", [False, True])
async def test_none_stores_nothing_of_the_content(upstream, relays, otel, secret_scan, caplog, stream):  # noqa: F811
    secret_scan.add_content("PROMPT", MARKER)
    secret_scan.add_content("TOOL", TOOL)
    caplog.set_level(logging.DEBUG)
    relay = relays(config(upstream))
    for payload in (body(stream=stream), body(stream=stream, tools=TOOLS)):
        answer = await ask(relay, payload)
        assert answer.status == 200
    assert MARKER in upstream.last_request.body.decode()  # it did travel, and come back in the answer
    secret_scan.scan_telemetry(otel.spans(), otel.reader.get_metrics_data())
    secret_scan.scan("prometheus", (await get(relay, "/metrics")).body)
    assert otel.spans() and secret_scan.checked
    line = next(r.getMessage() for r in caplog.records if r.name == "asgi_ai_relay" and "request_id=" in r.getMessage())
    assert "messages=" not in line and "tools=" not in line
    request = next(s for s in otel.spans() if s.kind is SpanKind.SERVER)
    assert not [k for k in request.attributes if k.startswith("relay.content")] and not request.events
    assert not [r for r in caplog.records if r.name == "asgi_ai_relay.content"]


async def test_the_scanner_sees_content_where_it_is_stored(upstream, relays, secret_scan):  # noqa: F811
    """The scanner is not blind: prompt text in a log record is a finding."""
    secret_scan.add_content("PROMPT", MARKER)
    logging.getLogger("asgi_ai_relay").info("leaking %s", MARKER)
    assert secret_scan.findings and secret_scan.findings[0][1] == "PROMPT"
    secret_scan.findings.clear()


async def test_metadata_adds_counts_sizes_and_tool_names_only(upstream, relays, otel, secret_scan, caplog):  # noqa: F811
    secret_scan.add_content("PROMPT", MARKER)
    caplog.set_level(logging.INFO, logger="asgi_ai_relay")
    relay = relays(config(upstream, content="metadata"))
    payload = body(tools=TOOLS)
    answer = await ask(relay, payload)
    assert answer.status == 200
    line = next(r.getMessage() for r in caplog.records if r.name == "asgi_ai_relay" and "request_id=" in r.getMessage())
    assert f" messages=2 request_bytes={len(orjson.dumps(payload))} response_bytes={len(answer.body)} tools={TOOL}" in line
    request = next(s for s in otel.spans() if s.kind is SpanKind.SERVER)
    assert request.attributes["relay.content.messages"] == 2
    assert request.attributes["relay.content.tools"] == (TOOL,)
    assert request.attributes["relay.content.response_bytes"] == len(answer.body)
    assert not request.events
    secret_scan.scan_telemetry(otel.spans())


async def test_full_writes_redacted_capped_content_to_the_logger_only(upstream, relays, otel, monkeypatch, caplog):  # noqa: F811
    monkeypatch.setenv("OTHER_KEY", OTHER_KEY)
    settings = config(upstream, content="full", redact=[r"ACCT-\d{6}"], max_bytes=600)
    settings["providers"]["other"] = {"kind": "openai_compatible", "base_url": f"{upstream.url}/v1", "api_key": "env:OTHER_KEY"}
    relay = relays(settings)
    caplog.set_level(logging.INFO)
    text = f"{MARKER} account ACCT-123456 key {OTHER_KEY} token sk-live-abcdefghijklmnop1234"
    assert (await ask(relay, body(text))).status == 200
    sink = [r.getMessage() for r in caplog.records if r.name == "asgi_ai_relay.content"]
    prompt, completion = sink
    assert "prompt=" in prompt and MARKER in prompt and "System" in prompt
    assert "completion=" in completion and f"Echo: {MARKER}" in completion
    for record in sink:
        assert "[redacted]" in record
        for secret in ("ACCT-123456", OTHER_KEY, "sk-live-abcdefghijklmnop1234"):
            assert secret not in record
    # Nowhere else: not the other log records, the ledger, the spans.
    assert not [r for r in caplog.records if r.name != "asgi_ai_relay.content" and MARKER in r.getMessage()]
    assert MARKER not in repr([row.as_dict() for row in relay.ledger.rows()])
    assert MARKER not in repr([(s.attributes, s.events) for s in otel.spans()])
    # The cap: a long prompt is cut.
    caplog.clear()
    assert (await ask(relay, body(MARKER + " " + "word " * 1000))).status == 200
    prompt = next(r.getMessage() for r in caplog.records if r.name == "asgi_ai_relay.content")
    assert "...[truncated " in prompt and len(prompt.encode()) < 600 + 200


async def test_full_to_span_events_only(upstream, relays, otel, caplog):  # noqa: F811
    relay = relays(config(upstream, content="full", sink="span", redact=[r"ACCT-\d{6}"]))
    caplog.set_level(logging.INFO)
    answer = await ask(relay, body(f"{MARKER} ACCT-654321", stream=True, stream_options={"include_usage": True}))
    assert answer.status == 200
    request = next(s for s in otel.spans() if s.kind is SpanKind.SERVER)
    (event,) = [e for e in request.events if e.name == EVENT]
    assert MARKER in event.attributes["gen_ai.input.messages"] and "ACCT-654321" not in event.attributes["gen_ai.input.messages"]
    assert f"Echo: {MARKER}" in event.attributes["gen_ai.output.messages"]
    assert "[redacted]" in event.attributes["gen_ai.output.messages"]
    assert not [r for r in caplog.records if MARKER in r.getMessage()]
    assert MARKER not in repr([row.as_dict() for row in relay.ledger.rows()])
    assert MARKER not in repr([s.attributes for s in otel.spans()])


def test_redactor_cuts_on_a_character_boundary():
    redactor = Redactor((), 64)
    out = redactor.redact("é" * 100)
    assert out.startswith("é" * 32) and out.endswith("[truncated 136 bytes]")
    assert redactor.redact("Authorization: Bearer abcdefgh12345678") == "Authorization: [redacted]"


def test_bad_settings_are_refused():
    from asgi_ai_relay.config import load_config
    from asgi_ai_relay.errors import ConfigurationError

    for bad, where in (({"content": "all"}, "logging.content"), ({"redact": ["("]}, "logging.redact[0]"),
                       ({"sink": "file"}, "logging.sink"), ({"max_bytes": 1}, "logging.max_bytes")):
        with pytest.raises(ConfigurationError, match=where.replace("[", r"\[").replace("]", r"\]")):
            load_config({"logging": bad})
