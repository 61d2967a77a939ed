"""Bad input and upstream faults: each answered once, in OpenAI's error format, with the right status."""

from __future__ import annotations

import httpx
import orjson
import pytest

from asgi_ai_relay import Relay, RelayMiddleware
from tests.conftest import UPSTREAM_KEY, make_config
from tests.fake_upstream import Fault

GOOD = {"model": "test-model", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(params=["h1", "aiohttp", "httpx"])
def relay(upstream, request):
    """Every case runs on both upstream client backends."""
    # One attempt: these cases are about how a single upstream fault is answered (retries and
    # fallbacks have their own tests in test_route_resilience.py).
    config = make_config(
        # read and stream_idle at 1.5 s: well under the 3 s faults the timeout cases script, and
        # long enough that a loaded machine stalling the fake upstream does not time out the rest.
        upstream, max_body_bytes=2048, timeouts={"read": 1.5, "stream_idle": 1.5}, http={"client": request.param},
        retry={"max_attempts": 1},
    )
    return Relay(config)


@pytest.fixture
async def client(relay):
    transport = httpx.ASGITransport(app=RelayMiddleware(relay=relay))
    async with httpx.AsyncClient(transport=transport, base_url="http://relay.test/ai") as client:
        yield client
    await relay.shutdown()


def assert_openai_error(response: httpx.Response, status: int, error_type: str, *, param: str | None = None, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == error_type
    assert error["message"]
    if param is not None:
        assert error["param"] == param
    if code is not None:
        assert error["code"] == code
    return error


BAD_BODIES = [
    pytest.param(b"{not json", None, id="malformed-json"),
    pytest.param(b"", None, id="empty-body"),
    pytest.param(b"[1, 2]", None, id="not-an-object"),
    pytest.param(b'"text"', None, id="json-string"),
    pytest.param(orjson.dumps({"model": "test-model"}), "messages", id="missing-messages"),
    pytest.param(orjson.dumps({"model": "test-model", "messages": []}), "messages", id="empty-messages"),
    pytest.param(orjson.dumps({"model": "test-model", "messages": "hi"}), "messages", id="messages-not-array"),
    pytest.param(orjson.dumps({"messages": [{"role": "user", "content": "x"}]}), "model", id="missing-model"),
    pytest.param(orjson.dumps({**GOOD, "model": 7}), "model", id="model-not-string"),
    pytest.param(orjson.dumps({**GOOD, "messages": [{"role": "wizard", "content": "x"}]}), "messages[0].role", id="unknown-role"),
    pytest.param(orjson.dumps({**GOOD, "messages": ["hi"]}), "messages[0]", id="message-not-object"),
    pytest.param(orjson.dumps({**GOOD, "messages": [{"role": "user", "content": 5}]}), "messages[0].content", id="content-number"),
    pytest.param(orjson.dumps({**GOOD, "messages": [{"role": "user"}]}), "messages[0].content", id="content-missing"),
    pytest.param(orjson.dumps({**GOOD, "messages": [{"role": "user", "content": [{"text": "x"}]}]}), "messages[0].content[0]", id="part-without-type"),
    pytest.param(orjson.dumps({**GOOD, "messages": [{"role": "tool", "content": "x"}]}), "messages[0].tool_call_id", id="tool-without-id"),
    pytest.param(orjson.dumps({**GOOD, "temperature": "hot"}), "temperature", id="temperature-string"),
    pytest.param(orjson.dumps({**GOOD, "temperature": 3}), "temperature", id="temperature-range"),
    pytest.param(orjson.dumps({**GOOD, "max_tokens": 0}), "max_tokens", id="max-tokens-zero"),
    pytest.param(orjson.dumps({**GOOD, "max_tokens": 1.5}), "max_tokens", id="max-tokens-float"),
    pytest.param(orjson.dumps({**GOOD, "n": True}), "n", id="n-boolean"),
    pytest.param(orjson.dumps({**GOOD, "stream": "yes"}), "stream", id="stream-string"),
    pytest.param(orjson.dumps({**GOOD, "stop": [1, 2]}), "stop", id="stop-numbers"),
    pytest.param(orjson.dumps({**GOOD, "tools": {"a": 1}}), "tools", id="tools-object"),
]


@pytest.mark.parametrize(("body", "param"), BAD_BODIES)
async def test_bad_body_is_400_and_nothing_goes_upstream(client, upstream, relay, body, param):
    response = await client.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    assert_openai_error(response, 400, "invalid_request_error", param=param)
    assert upstream.requests == []
    (row,) = relay.ledger.rows()
    assert row.status == 400 and row.endpoint == "chat.completions"


async def test_body_over_limit_is_413_by_content_length(client, upstream, relay):
    big = orjson.dumps({**GOOD, "messages": [{"role": "user", "content": "x" * 5000}]})
    response = await client.post("/v1/chat/completions", content=big)
    assert_openai_error(response, 413, "invalid_request_error", code="request_too_large")
    assert upstream.requests == []
    assert [r.status for r in relay.ledger.rows()] == [413]


async def test_body_over_limit_is_413_while_streaming_in(client, upstream):
    async def body():
        for _ in range(10):
            yield b"x" * 512

    response = await client.post("/v1/chat/completions", content=body())  # chunked, no content-length
    assert_openai_error(response, 413, "invalid_request_error")
    assert upstream.requests == []


async def test_unknown_model_is_404_naming_the_available_ones(client, upstream):
    response = await client.post("/v1/chat/completions", json={**GOOD, "model": "gpt-9"})
    error = assert_openai_error(response, 404, "not_found_error", param="model", code="model_not_found")
    assert "gpt-9" in error["message"] and "test-model" in error["message"] and "gpt-4.1" in error["message"]
    assert upstream.requests == []


async def test_unknown_route_and_wrong_method(client):
    assert_openai_error(await client.get("/v1/nothing"), 404, "not_found_error")
    assert_openai_error(await client.get("/v1/chat/completions"), 405, "invalid_request_error", code="method_not_allowed")


async def test_upstream_client_error_passes_message_on(client, upstream):
    upstream.script(Fault.status(400, body={"error": {"message": "max_tokens is too large", "type": "invalid_request_error", "code": "bad_max"}}))
    response = await client.post("/v1/chat/completions", json=GOOD)
    error = assert_openai_error(response, 400, "invalid_request_error", code="bad_max")
    assert "max_tokens is too large" in error["message"]


async def test_upstream_server_error_passes_status_on(client, upstream):
    upstream.script(Fault.status(503))
    response = await client.post("/v1/chat/completions", json=GOOD)
    assert_openai_error(response, 503, "upstream_error")


async def test_upstream_auth_failure_is_502_and_never_shows_the_key(client, upstream):
    leak = {"error": {"message": f"Incorrect API key provided: {UPSTREAM_KEY}", "type": "invalid_request_error"}}
    upstream.script(Fault.status(401, body=leak))
    response = await client.post("/v1/chat/completions", json=GOOD)
    error = assert_openai_error(response, 502, "upstream_authentication_error")
    assert UPSTREAM_KEY not in response.text and "[redacted]" in error["message"]


async def test_upstream_unreachable_is_502(client, upstream, relay):
    upstream.stop()
    response = await client.post("/v1/chat/completions", json=GOOD)
    assert_openai_error(response, 502, "upstream_error", code="upstream_unreachable")
    assert [r.status for r in relay.ledger.rows()] == [502]


async def test_upstream_timeout_is_504(client, upstream):
    upstream.script(Fault.delay(3))
    response = await client.post("/v1/chat/completions", json=GOOD)
    assert_openai_error(response, 504, "upstream_error", code="upstream_timeout")


async def test_upstream_malformed_json_is_502(client, upstream):
    upstream.script(Fault.malformed())
    response = await client.post("/v1/chat/completions", json=GOOD)
    assert_openai_error(response, 502, "upstream_error", code="upstream_bad_response")


def sse_payloads(text: str) -> list[bytes]:
    return [line[6:].encode() for line in text.split("\n") if line.startswith("data: ")]


async def test_stream_dropped_midway_ends_with_error_event(client, upstream, relay):
    upstream.script(Fault.drop(after_chunks=2))
    response = await client.post("/v1/chat/completions", json={**GOOD, "stream": True})
    assert response.status_code == 200
    payloads = sse_payloads(response.text)
    assert len(payloads) >= 2
    last = orjson.loads(payloads[-1])
    assert last["error"]["code"] == "upstream_bad_response"
    assert b"[DONE]" not in payloads
    (row,) = relay.ledger.rows()
    assert row.stream and row.status == 502


async def test_stream_stall_ends_with_timeout_event(client, upstream, relay):
    upstream.script(Fault.stream_stall(after_chunks=2, seconds=3))
    response = await client.post("/v1/chat/completions", json={**GOOD, "stream": True})
    last = orjson.loads(sse_payloads(response.text)[-1])
    assert last["error"]["code"] == "upstream_timeout"
    assert [r.status for r in relay.ledger.rows()] == [504]


async def test_stream_error_before_first_byte_is_plain_error(client, upstream):
    upstream.script(Fault.status(429, retry_after=7))
    response = await client.post("/v1/chat/completions", json={**GOOD, "stream": True})
    assert_openai_error(response, 429, "rate_limit_error")
