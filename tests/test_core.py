"""Per-request facts, the ledger, the usage totals, the log line, client disconnects."""

from __future__ import annotations

import logging
import threading
import time

import httpx
import pytest

from asgi_ai_relay import Relay, RelayMiddleware
from tests.conftest import RELAY_KEY, UPSTREAM_KEY, make_config
from tests.fake_upstream import Fault, plan_reply
from tests.live import LiveServer

GOOD = {"model": "test-model", "messages": [{"role": "user", "content": "hi there"}]}


@pytest.fixture
def relay(upstream):
    return Relay(make_config(upstream))


@pytest.fixture
async def client(relay):
    transport = httpx.ASGITransport(app=RelayMiddleware(relay=relay))
    async with httpx.AsyncClient(transport=transport, base_url="http://relay.test/ai") as client:
        yield client
    await relay.shutdown()


async def test_request_id_is_echoed_when_safe(client, upstream, relay):
    response = await client.post("/v1/chat/completions", json=GOOD, headers={"x-request-id": "abc-123.X_9"})
    assert response.headers["x-request-id"] == "abc-123.X_9"
    assert relay.ledger.rows()[0].request_id == "abc-123.X_9"


@pytest.mark.parametrize("given", ["a" * 200, "bad id", "x\u00e9y".encode("latin-1"), "abc%0d%0aSet-Cookie:1"])
async def test_unsafe_request_id_is_replaced(client, given):
    response = await client.post("/v1/chat/completions", json=GOOD, headers={"x-request-id": given})
    generated = response.headers["x-request-id"]
    assert generated != (given.decode("latin-1") if isinstance(given, bytes) else given)
    assert len(generated) == 32 and int(generated, 16) >= 0


async def test_error_answers_carry_the_request_id(client):
    response = await client.post("/v1/chat/completions", content=b"{", headers={"x-request-id": "req-1"})
    assert response.status_code == 400 and response.headers["x-request-id"] == "req-1"


async def test_log_line_per_request_without_secrets(client, caplog):
    caplog.set_level(logging.INFO, logger="asgi_ai_relay")
    await client.post(
        "/v1/chat/completions", json=GOOD, headers={"x-request-id": "log-1", "authorization": f"Bearer {RELAY_KEY}"}
    )
    (record,) = [r for r in caplog.records if r.name == "asgi_ai_relay"]
    line = record.getMessage()
    for fact in ("request_id=log-1", "model=test-model", "provider=up", "status=200", "caller=anonymous", "cost_usd="):
        assert fact in line
    assert UPSTREAM_KEY not in caplog.text and RELAY_KEY not in caplog.text


async def test_log_line_escapes_caller_supplied_model(client, caplog):
    caplog.set_level(logging.INFO, logger="asgi_ai_relay")
    await client.post("/v1/chat/completions", json={**GOOD, "model": "evil\nINJECTED status=200"})
    (record,) = [r for r in caplog.records if r.name == "asgi_ai_relay"]
    assert "\n" not in record.getMessage()


async def test_usage_totals(client, relay):
    for _ in range(3):
        assert (await client.post("/v1/chat/completions", json=GOOD)).status_code == 200
    await client.post("/v1/chat/completions", json={**GOOD, "model": "nope"})
    report = (await client.get("/v1/usage")).json()
    expected = plan_reply({"messages": GOOD["messages"]}, "openai")
    assert report["requests"] == 4 and report["errors"] == 1
    assert report["prompt_tokens"] == 3 * expected.prompt_tokens
    assert report["completion_tokens"] == 3 * expected.completion_tokens
    model = report["models"]["test-model"]
    assert model["requests"] == 3
    ledger_cost = sum(r.cost_usd for r in relay.ledger.rows())
    assert report["cost_usd"] == str(ledger_cost)
    latency = model["latency_ms"]
    assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"]


async def test_sqlite_ledger_survives_restart(upstream, tmp_path):
    uri = f"sqlite:///{tmp_path}/usage.db"
    first = Relay(make_config(upstream, storage={"ledger": uri}))
    transport = httpx.ASGITransport(app=RelayMiddleware(relay=first))
    async with httpx.AsyncClient(transport=transport, base_url="http://relay.test/ai") as client:
        for _ in range(5):
            await client.post("/v1/chat/completions", json=GOOD)
    await first.shutdown()
    second = Relay(make_config(upstream, storage={"ledger": uri}))
    rows = second.ledger.rows()
    assert len(rows) == 5 and {r.status for r in rows} == {200}
    assert sum(r.cost_usd for r in rows) > 0
    second.ledger.close()


def test_client_disconnect_mid_stream_cancels_upstream(upstream, relay):
    """The client leaves while the provider is stalled: the relay closes the upstream request and
    records the stream as abandoned (499) without waiting for the provider to finish."""
    upstream.script(Fault.stream_stall(after_chunks=2, seconds=30))
    with LiveServer(RelayMiddleware(relay=relay)) as live:
        with httpx.stream("POST", f"{live.url}/ai/v1/chat/completions", json={**GOOD, "stream": True}, timeout=10) as r:
            first = next(r.iter_raw())
            assert first.startswith(b"data: ")
        started = time.monotonic()
        done = threading.Event()
        while not done.wait(0.02):
            if relay.ledger.rows() or time.monotonic() - started > 10:
                done.set()
        (row,) = relay.ledger.rows()
    assert row.status == 499 and row.stream
    assert time.monotonic() - started < 10  # well before the provider's 30 s stall ends


async def test_unknown_caller_is_refused_before_its_body_is_read(upstream):
    relay = Relay(make_config(upstream, require_auth=True, api_keys=[{"key": "env:TEST_RELAY_KEY", "caller": "team-a"}]))
    transport = httpx.ASGITransport(app=RelayMiddleware(relay=relay))
    async with httpx.AsyncClient(transport=transport, base_url="http://relay.test/ai") as client:
        bad = await client.post("/v1/chat/completions", content=b"{not json")
        unknown_model = await client.post("/v1/chat/completions", json={**GOOD, "model": "secret-model"})
    await relay.shutdown()
    assert bad.status_code == 401 and unknown_model.status_code == 401
    assert "secret-model" not in unknown_model.text and "test-model" not in unknown_model.text


def _asgi_call(body: bytes):
    """A raw ASGI HTTP call to the relay: the scope and a receive that yields ``body`` once."""
    scope = {
        "type": "http", "method": "POST", "path": "/ai/v1/chat/completions", "raw_path": b"/ai/v1/chat/completions",
        "root_path": "", "query_string": b"", "headers": [(b"content-type", b"application/json")],
        "client": ("127.0.0.1", 50000), "scheme": "http", "http_version": "1.1",
    }
    sent = False

    async def receive():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    return scope, receive


async def test_answer_is_written_before_the_request_is_recorded(relay):
    """Under the ASGI middleware the caller's answer goes out first; the ledger row follows."""
    import orjson

    rows_when_body_sent = []
    messages = []

    async def send(message):
        messages.append(message)
        if message["type"] == "http.response.body":
            rows_when_body_sent.append(len(relay.ledger.rows()))

    scope, receive = _asgi_call(orjson.dumps(GOOD))
    await RelayMiddleware(relay=relay)(scope, receive, send)
    assert messages[0]["status"] == 200 and rows_when_body_sent == [0]
    (row,) = relay.ledger.rows()
    assert row.status == 200 and row.prompt_tokens > 0
    await relay.shutdown()


async def test_answer_that_cannot_be_written_is_still_recorded(relay):
    """The client is gone when the answer is written: the send fails, the row is still there."""
    import orjson

    async def send(message):
        if message["type"] == "http.response.body":
            raise OSError("client went away")

    scope, receive = _asgi_call(orjson.dumps(GOOD))
    with pytest.raises(OSError):
        await RelayMiddleware(relay=relay)(scope, receive, send)
    (row,) = relay.ledger.rows()
    assert row.status == 200
    assert relay.traffic.gate.in_flight == 0  # and its concurrency slot was given back
    await relay.shutdown()
