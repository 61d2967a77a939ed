"""Hostile bodies: each a clear 4xx in the caller's format, read no further than the limit."""

from __future__ import annotations

import asyncio
import socket
import time

import httpx
import orjson
import pytest

from asgi_ai_relay import Relay, RelayMiddleware
from tests.conftest import make_config

LIMIT = 64 * 1024
OPENAI_MESSAGES = [{"role": "user", "content": "hi"}]


def relay_app(upstream=None, **overrides):
    relay = Relay(make_config(upstream, max_body_bytes=LIMIT, **overrides))
    return RelayMiddleware(relay=relay), relay


async def call_asgi(app, receive, headers=()):
    sent = []

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http", "method": "POST", "path": "/ai/v1/chat/completions", "root_path": "", "raw_path": b"/ai/v1/chat/completions",
        "query_string": b"", "headers": [(b"content-type", b"application/json"), *headers], "client": ("127.0.0.1", 1),
    }
    await asyncio.wait_for(app(scope, receive, send), 5)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


async def test_asgi_endless_body_is_refused_while_reading():
    app, relay = relay_app()
    received = 0

    async def receive():  # no content-length, and it never ends
        nonlocal received
        await asyncio.sleep(0)  # a real server yields here: lets the bound below cancel a reader that never stops
        received += 4096
        return {"type": "http.request", "body": b"x" * 4096, "more_body": True}

    status, body = await call_asgi(app, receive)
    assert status == 413 and orjson.loads(body)["error"]["code"] == "request_too_large"
    assert received <= LIMIT + 4096
    assert [r.status for r in relay.ledger.rows()] == [413]


async def test_asgi_declared_length_over_the_limit_is_refused_before_reading():
    app, _ = relay_app()
    never = asyncio.Event()

    async def receive():
        await never.wait()  # the body never comes: only the header can have refused it

    status, _ = await call_asgi(app, receive, headers=[(b"content-length", str(10**12).encode())])
    assert status == 413


async def test_asgi_client_leaving_mid_body_is_a_499_with_nothing_sent_upstream(upstream):
    app, relay = relay_app(upstream)
    whole = orjson.dumps({"model": "test-model", "messages": OPENAI_MESSAGES})  # what came is valid JSON
    messages = [
        {"type": "http.request", "body": whole, "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    status, body = await call_asgi(app, receive, headers=[(b"content-length", str(len(whole) + 50).encode())])
    assert status == 499 and orjson.loads(body)["error"]["code"] == "client_closed"
    assert [(r.status, r.error_type) for r in relay.ledger.rows()] == [(499, "client_closed")]
    assert upstream.requests == []


async def test_asgi_one_message_short_of_its_declared_length_is_a_499(upstream):
    app, relay = relay_app(upstream)
    whole = orjson.dumps({"model": "test-model", "messages": OPENAI_MESSAGES})
    messages = [{"type": "http.request", "body": whole, "more_body": False}]  # the server ended the body early

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    status, body = await call_asgi(app, receive, headers=[(b"content-length", str(len(whole) + 1).encode())])
    assert status == 499 and orjson.loads(body)["error"]["code"] == "client_closed"
    assert upstream.requests == []


async def test_asgi_one_message_over_the_limit_without_a_length_is_refused():
    app, relay = relay_app()
    messages = [{"type": "http.request", "body": b"x" * (LIMIT + 1), "more_body": False}]

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    status, body = await call_asgi(app, receive)
    assert status == 413 and orjson.loads(body)["error"]["code"] == "request_too_large"
    assert [r.status for r in relay.ledger.rows()] == [413]


@pytest.mark.parametrize("declared", ["\u00b2", "1\u00b9", "-1", "12abc"])
def test_a_content_length_that_is_not_digits_is_no_length(declared):
    from asgi_ai_relay.body import Body, declared_length

    body = Body(10, declared_length(10, declared))
    body.add(b"x" * 3)
    assert body.complete() == b"xxx"


def _stream_chunked(url, target, headers, cap):
    """Send a chunked body until the server answers (or ``cap`` bytes); return (status, bytes sent)."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    head = [f"POST {target} HTTP/1.1", f"Host: {host}", "Transfer-Encoding: chunked", "Content-Type: application/json"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
    chunk = b"%x\r\n%s\r\n" % (8192, b"x" * 8192)
    sent, answer = 0, b""
    sock.setblocking(False)
    try:
        while sent < cap and b"\r\n" not in answer:
            try:
                answer += sock.recv(4096)
                if not answer:
                    break
            except BlockingIOError:
                pass
            try:
                sock.sendall(chunk)
                sent += 8192
            except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                time.sleep(0.001)
        sock.setblocking(True)
        sock.settimeout(10)
        while b"\r\n" not in answer:
            more = sock.recv(4096)
            if not more:
                break
            answer += more
    finally:
        sock.close()
    return int(answer.split(b" ", 2)[1]), sent


@pytest.mark.parametrize("host", ["fastapi", "flask", "django-wsgi"])
def test_chunked_body_over_the_limit_is_answered_without_reading_it_all(host, upstream, request):
    from tests.live import LiveServer, WSGILiveServer

    cap = 64 * 1024 * 1024
    if host == "fastapi":
        server = LiveServer(relay_app(upstream)[0])
    elif host == "flask":
        from flask_ai_relay import AIRelay

        app = __import__("flask").Flask("limits")
        app.config["AI_RELAY"] = make_config(upstream, max_body_bytes=LIMIT, require_auth=False)
        AIRelay(app)
        server = WSGILiveServer(app)
    else:
        request.getfixturevalue("transactional_db")
        settings = request.getfixturevalue("settings")
        settings.AI_RELAY = make_config(upstream, max_body_bytes=LIMIT, require_auth=False)
        from tests.django.test_live import serve

        server = serve("wsgi")
    with server as live:
        status, sent = _stream_chunked(live.url, "/ai/v1/chat/completions", {}, cap)
    # Django under WSGI reads no body without Content-Length (an empty body: 400); the others
    # stop at the limit (413). Either way the answer came long before the cap.
    assert status == (400 if host == "django-wsgi" else 413)
    assert sent < cap // 2
    assert upstream.requests == []


@pytest.fixture
async def client(upstream):
    app, relay = relay_app(upstream, models={"capped": {"provider": "up", "upstream": "gpt-4o-mini", "max_output_tokens": 100}})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://relay") as http:
        http.relay = relay
        yield http


BAD_BODIES = {
    "deep nesting": b'{"model": "test-model", "messages": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    "invalid utf-8": b'{"model": "test-model", "messages": [{"role": "user", "content": "\xff\xfe"}]}',
    "lone surrogate": b'{"model": "test-model", "messages": [{"role": "user", "content": "\\ud800"}]}',
    "infinite number": b'{"model": "test-model", "messages": [{"role": "user", "content": "a"}], "temperature": 1e400}',
    "NaN": b'{"model": "test-model", "messages": [{"role": "user", "content": "a"}], "temperature": NaN}',
    "huge integer": b'{"model": "test-model", "messages": [{"role": "user", "content": "a"}], "max_tokens": 123456789012345678901234567890}',
    "negative max_tokens": b'{"model": "test-model", "messages": [{"role": "user", "content": "a"}], "max_tokens": -1}',
    "bad part type": b'{"model": "test-model", "messages": [{"role": "user", "content": [{"type": "<script>"}]}]}',
    "long part type": b'{"model": "test-model", "messages": [{"role": "user", "content": [{"type": "' + b"a" * 5000 + b'"}]}]}',
    "huge role": b'{"model": "test-model", "messages": [{"role": "' + b"r" * 50000 + b'", "content": "a"}]}',
    "not an object": b'["model"]',
    "empty": b"   ",
}


@pytest.mark.parametrize("name", BAD_BODIES)
@pytest.mark.parametrize("endpoint", ["/ai/v1/chat/completions", "/ai/v1/messages"])
async def test_hostile_bodies_get_a_small_400_in_the_callers_format(client, upstream, name, endpoint):
    response = await client.post(endpoint, content=BAD_BODIES[name], headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert len(response.content) < 3000  # no echo of the caller's megabytes
    payload = response.json()
    if endpoint.endswith("messages"):
        assert payload["type"] == "error" and payload["error"]["type"] == "invalid_request_error"
    else:
        assert payload["error"]["type"] == "invalid_request_error"
    assert upstream.requests == []
    assert [r.status for r in client.relay.ledger.rows()] == [400]


async def test_huge_model_name_is_cut_in_the_answer_and_the_ledger(client, upstream):
    body = {"model": "m" * 10 + "\r\nFAKE LOG LINE" + "m" * 50_000, "messages": OPENAI_MESSAGES}
    response = await client.post("/ai/v1/chat/completions", json=body)
    assert response.status_code == 404 and len(response.content) < 3000
    (row,) = client.relay.ledger.rows()
    assert len(row.model) <= 120 and "\r" not in row.model and row.model.startswith("mmmmmmmmmm\\r\\nFAKE")


@pytest.mark.parametrize(
    ("endpoint", "param"),
    [("/ai/v1/chat/completions", "max_tokens"), ("/ai/v1/chat/completions", "max_completion_tokens"), ("/ai/v1/messages", "max_tokens")],
)
async def test_max_tokens_above_the_models_limit(client, upstream, endpoint, param):
    over = await client.post(endpoint, json={"model": "capped", "messages": OPENAI_MESSAGES, param: 101})
    assert over.status_code == 400
    error = over.json()["error"]
    assert "100" in error["message"] and param in error["message"]
    if not endpoint.endswith("messages"):
        assert error["param"] == param
    assert upstream.requests == []
    ok = await client.post(endpoint, json={"model": "capped", "messages": OPENAI_MESSAGES, param: 100})
    assert ok.status_code == 200, ok.text
    assert len(upstream.requests) == 1


async def test_an_error_quoting_the_callers_input_is_cut(client, upstream):
    """Anthropic server tools cannot go to an OpenAI provider; the 400 names the tool's type,
    which the caller chose: 50 kB of it must not come back."""
    body = {"model": "test-model", "max_tokens": 10, "messages": OPENAI_MESSAGES, "tools": [{"type": "t" * 50_000, "name": "x"}]}
    response = await client.post("/ai/v1/messages", json=body)
    assert response.status_code == 400 and "has no equivalent" not in response.text
    assert len(response.content) < 2200 and response.json()["error"]["message"].endswith("...")
    assert upstream.requests == []


def test_max_output_tokens_is_validated_in_config():
    from asgi_ai_relay.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="models.x.max_output_tokens"):
        Relay({"models": {"x": {"provider": "mock", "max_output_tokens": 0}}})


async def test_part_types_the_provider_format_cannot_carry_are_refused(upstream):
    config = make_config(upstream)
    config["providers"]["claude"] = {"kind": "anthropic", "base_url": f"{upstream.url}/v1", "api_key": "env:TEST_UPSTREAM_KEY"}
    config["models"]["claude"] = {"provider": "claude", "upstream": "claude-sonnet-4-5"}
    app = RelayMiddleware(relay=Relay(config))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://relay") as http:
        body = {"model": "claude", "messages": [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": "x"}}]}]}
        response = await http.post("/ai/v1/chat/completions", json=body)
    assert response.status_code == 400
    assert "video_url" in response.json()["error"]["message"]
    assert upstream.requests == []


@pytest.mark.django_db
def test_django_declared_length_over_the_limit(settings, upstream):
    from django.test import Client

    settings.AI_RELAY = make_config(upstream, max_body_bytes=LIMIT, require_auth=False)
    response = Client().post("/ai/v1/chat/completions", data=b"{}", content_type="application/json", CONTENT_LENGTH=str(10**12))
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"
    body = b'{"model": "test-model", "messages": [{"role": "user", "content": "' + b"x" * LIMIT + b'"}]}'
    response = Client().post("/ai/v1/chat/completions", data=body, content_type="application/json")
    assert response.status_code == 413
    assert upstream.requests == []


def test_flask_declared_length_over_the_limit(upstream):
    from flask import Flask

    from flask_ai_relay import AIRelay

    app = Flask("limits")
    app.config["AI_RELAY"] = make_config(upstream, max_body_bytes=LIMIT, require_auth=False)
    AIRelay(app)
    body = b'{"model": "test-model", "messages": [{"role": "user", "content": "' + b"x" * LIMIT + b'"}]}'
    response = app.test_client().post("/ai/v1/chat/completions", data=body, content_type="application/json")
    assert response.status_code == 413 and response.json["error"]["code"] == "request_too_large"
    assert upstream.requests == []
