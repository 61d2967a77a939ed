"""The Flask extension: the test client, and a real threaded werkzeug server for streams."""

from __future__ import annotations

import json
import logging
import threading

import httpx
import openai
import pytest
from flask import Flask, abort, session

from asgi_ai_relay import Caller, ConfigurationError
from asgi_ai_relay.errors import PermissionDenied
from flask_ai_relay import AIRelay
from tests.conftest import RELAY_KEY, UPSTREAM_KEY, make_config
from tests.fake_upstream import Fault, echo_reply
from tests.live import WSGILiveServer

URL = "/ai/v1/chat/completions"
MESSAGES = [{"role": "user", "content": "Hello from Flask"}]
BODY = {"model": "test-model", "messages": MESSAGES}


def create_app(app_config, **extension_options):
    """A host app in the factory style: the extension is created first, bound in the factory."""
    relay = AIRelay(**extension_options)

    @relay.caller_loader
    def load_caller():
        user = session.get("user")
        if user == "blocked":
            abort(403, description="blocked users cannot call the relay")
        if user == "intern":
            raise PermissionDenied("interns need approval")
        return Caller(id=user, priority="high") if user else None

    app = Flask("hostapp")
    app.secret_key = "flask-tests"
    app.config["AI_RELAY"] = app_config

    @app.post("/login/<name>")
    def login(name):
        session["user"] = name
        return "ok"

    @app.get("/")
    def home():
        return "host home"

    relay.init_app(app)
    return app


@pytest.fixture
def app(upstream):
    return create_app(make_config(upstream))


@pytest.fixture
def client(app):
    return app.test_client()


def rows(app):
    return AIRelay.relay_for(app).ledger.rows()


def sse_text(raw: bytes) -> str:
    out = ""
    for line in raw.decode().splitlines():
        if line.startswith("data: {"):
            out += "".join(c["delta"].get("content") or "" for c in json.loads(line[6:])["choices"])
    return out


def test_registers_in_app_extensions(app):
    assert app.extensions["ai_relay"].relay is AIRelay.relay_for(app)
    assert {r.rule for r in app.url_map.iter_rules() if r.endpoint == "ai_relay"} == {"/ai", "/ai/<path:path>"}


def test_anonymous_then_logged_in(client, app, upstream):
    refused = client.post(URL, json=BODY)
    assert refused.status_code == 401 and refused.json["error"]["type"] == "authentication_error"
    client.post("/login/ada")
    answer = client.post(URL, json=BODY, headers={"x-request-id": "flask-1"})
    assert answer.status_code == 200
    assert answer.json["choices"][0]["message"]["content"] == echo_reply({"messages": MESSAGES}, "openai")
    assert answer.headers["x-request-id"] == "flask-1" and answer.mimetype == "application/json"
    assert upstream.last_request.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert "session" not in str(upstream.last_request.headers)
    assert [(r.caller, r.status) for r in rows(app)] == [("anonymous", 401), ("ada", 200)]


def test_loader_refusals_answer_in_openai_format(client, upstream):
    client.post("/login/blocked")
    blocked = client.post(URL, json=BODY)
    assert blocked.status_code == 403 and blocked.json["error"]["message"] == "blocked users cannot call the relay"
    client.post("/login/intern")
    intern = client.post(URL, json=BODY)
    assert intern.status_code == 403 and intern.json["error"]["code"] == "permission_denied"
    assert upstream.requests == []


def test_streamed_answer_through_test_client(client, app):
    client.post("/login/ada")
    response = client.post(URL, json={**BODY, "stream": True})
    assert response.status_code == 200 and response.mimetype == "text/event-stream"
    raw = response.get_data()
    assert raw.rstrip().endswith(b"data: [DONE]")
    assert sse_text(raw) == echo_reply({"messages": MESSAGES}, "openai")
    (row,) = rows(app)
    assert row.stream and row.status == 200 and row.caller == "ada"


def test_relay_keys_and_host_routes(upstream):
    app = create_app(make_config(upstream, api_keys=[{"key": "env:TEST_RELAY_KEY", "caller": "batch-jobs"}]))
    client = app.test_client()
    assert client.post(URL, json=BODY, headers={"authorization": f"Bearer {RELAY_KEY}"}).status_code == 200
    assert client.get("/").text == "host home"
    assert client.get("/ai/v1/nope").json["error"]["code"] == "not_found"
    assert rows(app)[0].caller == "batch-jobs"


def test_instance_config_overrides_app_config_and_body_limit(upstream):
    app = create_app(make_config(upstream), config={"max_body_bytes": 120, "require_auth": False})
    client = app.test_client()
    assert client.post(URL, json=BODY).status_code == 200  # anonymous allowed by the override
    big = client.post(URL, json={**BODY, "messages": [{"role": "user", "content": "y" * 200}]})
    assert big.status_code == 413 and big.json["error"]["code"] == "request_too_large"


def test_bad_config_names_the_key():
    with pytest.raises(ConfigurationError, match=r"models\.x\.provider"):
        create_app({"models": {"x": {"provider": "nowhere"}}})


def test_request_line_logs_under_app_logger(client, app, caplog):
    client.post("/login/ada")
    with caplog.at_level(logging.INFO, logger=app.logger.name):
        client.post(URL, json=BODY)
    (record,) = [r for r in caplog.records if r.name == f"{app.logger.name}.ai_relay"]
    assert "caller=ada" in record.getMessage()


def test_real_wsgi_server_streams_without_blocking_other_requests(app, upstream):
    with WSGILiveServer(app) as live:
        login = httpx.post(f"{live.url}/login/ada")
        cookies = dict(login.cookies)
        sdk = openai.OpenAI(
            base_url=f"{live.url}/ai/v1", api_key="unused", max_retries=0,
            default_headers={"cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())},
        )
        chunks = list(sdk.chat.completions.create(
            model="test-model", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        ))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == echo_reply(
            {"messages": MESSAGES}, "openai"
        )
        assert chunks[-1].usage.completion_tokens > 0

        # A stream stalls upstream; meanwhile the same process answers other requests.
        # A long answer after the stall: a WSGI server only learns the client left when a write
        # fails, which takes a write or two after the peer's reset.
        upstream.script(Fault.reply("word " * 3000) | Fault.stream_stall(after_chunks=2, seconds=1))
        stalled = sdk.chat.completions.create(model="test-model", messages=MESSAGES, stream=True)
        first = next(iter(stalled))
        assert first.choices[0].delta.role == "assistant" or first.choices[0].delta.content
        whole = sdk.chat.completions.create(model="test-model", messages=MESSAGES)
        assert whole.choices[0].message.content == echo_reply({"messages": MESSAGES}, "openai")
        assert httpx.get(f"{live.url}/").text == "host home"
        stalled.close()  # the client goes away mid-stream

        relay = AIRelay.relay_for(app)
        closed = threading.Event()
        # A WSGI server learns the client left when its next write fails (after the stall).
        for _ in range(400):
            if any(r.status == 499 for r in relay.ledger.rows()):
                closed.set()
                break
            closed.wait(0.025)
        assert closed.is_set()
    assert [(r.stream, r.status) for r in relay.ledger.rows()] == [(True, 200), (False, 200), (True, 499)]


@pytest.mark.parametrize("method", ["TRACE", "PROPFIND"])
def test_methods_flask_does_not_route_are_answered_by_the_relay(upstream, method):
    app = Flask("methods")
    app.config["AI_RELAY"] = make_config(upstream)
    AIRelay(app)
    client = app.test_client()
    response = client.open(URL, method=method)
    assert (response.status_code, response.json["error"]["code"]) == (405, "method_not_allowed")
    response = client.open("/ai/v1/nowhere", method=method)
    assert (response.status_code, response.content_type) == (404, "application/json")
    assert client.open("/elsewhere", method=method).content_type.startswith("text/html")  # the host's paths stay Flask's
