"""What reaches a provider: only configured hosts, only the relay's own headers, never the
caller's credentials; and what comes back from one: never its key."""

from __future__ import annotations

import logging

import anthropic
import httpx
import pytest

from asgi_ai_relay import Relay, RelayMiddleware
from asgi_ai_relay import redact
from tests.conftest import RELAY_KEY, UPSTREAM_KEY, make_config
from tests.fake_upstream import FakeUpstream, Fault
from tests.live import LiveServer
from tests.security.raw_http import raw_request

MESSAGES = [{"role": "user", "content": "hi"}]
# What the relay itself sends; anthropic-* only on the Anthropic same-format path; the W3C trace
# context of its own attempt span once a host has configured OpenTelemetry.
ALLOWED = {"traceparent", "tracestate", "host", "content-type", "content-length", "accept", "accept-encoding", "user-agent", "connection", "authorization", "x-api-key", "anthropic-version", "anthropic-beta", "x-goog-api-key"}


def config_for(upstream, **overrides):
    config = make_config(upstream, api_keys=[{"key": "env:TEST_RELAY_KEY", "caller": "team"}], require_auth=True, retry={"max_attempts": 1}, **overrides)
    config["providers"]["claude"] = {"kind": "anthropic", "base_url": f"{upstream.url}/v1", "api_key": "env:TEST_UPSTREAM_KEY"}
    config["providers"]["gem"] = {"kind": "gemini", "base_url": f"{upstream.url}/v1beta", "api_key": "env:TEST_UPSTREAM_KEY"}
    config["models"]["claude"] = {"provider": "claude", "upstream": "claude-sonnet-4-5"}
    config["models"]["gem"] = {"provider": "gem", "upstream": "gemini-2.5-flash"}
    return config


@pytest.fixture
def evil():
    with FakeUpstream(api_key="sk-evil") as server:
        yield server


HOSTILE_HEADERS = {
    "Connection": "keep-alive, x-custom", "Keep-Alive": "timeout=5", "TE": "trailers", "Upgrade-Insecure-Requests": "1",
    "Proxy-Authorization": "Basic Zm9vOmJhcg==", "Proxy-Connection": "keep-alive", "Cookie": "sessionid=host-session-cookie",
    "X-Forwarded-For": "6.6.6.6", "X-Forwarded-Proto": "http", "Forwarded": "for=6.6.6.6;host=evil", "X-Custom": "custom-value",
    "OpenAI-Organization": "org-client", "Anthropic-Version": "2023-06-01", "Anthropic-Beta": "tools-2024-04-04",
}


@pytest.mark.parametrize(
    ("endpoint", "model", "key_header"),
    [("/ai/v1/chat/completions", "test-model", "Authorization"), ("/ai/v1/chat/completions", "gem", "Authorization"),
     ("/ai/v1/messages", "claude", "x-api-key"), ("/ai/v1/messages", "test-model", "x-api-key")],
)
def test_only_the_relays_own_headers_go_upstream(upstream, evil, endpoint, model, key_header):
    key = f"Bearer {RELAY_KEY}" if key_header == "Authorization" else RELAY_KEY
    body = f'{{"model": "{model}", "max_tokens": 50, "messages": [{{"role": "user", "content": "hi"}}], "base_url": "{evil.url}", "api_base": "{evil.url}"}}'
    with LiveServer(RelayMiddleware(relay=Relay(config_for(upstream)))) as live:
        headers = {**HOSTILE_HEADERS, key_header: key, "X-Forwarded-Host": evil.url[7:], "content-type": "application/json"}
        response = raw_request(live.url, "POST", endpoint, headers=headers, body=body.encode())
    assert response.status == 200, response.body
    (sent,) = upstream.requests
    names = set(sent.headers)
    assert names <= ALLOWED, names - ALLOWED
    assert sent.headers["host"] == upstream.url[7:]
    text = repr(sent.headers)
    for value in ("host-session-cookie", "custom-value", "6.6.6.6", "org-client", "Zm9vOmJhcg", RELAY_KEY, evil.url[7:]):
        assert value not in text
    assert UPSTREAM_KEY in (sent.headers.get("authorization", "") + sent.headers.get("x-api-key", "") + sent.headers.get("x-goog-api-key", ""))
    if endpoint.endswith("messages") and model == "claude":
        assert sent.headers["anthropic-beta"] == "tools-2024-04-04"  # the one allow-listed pass-through
    else:
        assert "anthropic-beta" not in names
    assert evil.requests == []


@pytest.mark.parametrize("model", ["http://127.0.0.1:{port}/v1", "../../x", "test-model/../../x", "test-model?x=1", "//127.0.0.1:{port}", "test-model#frag"])
async def test_model_names_cannot_choose_the_host(upstream, evil, model):
    relay = Relay(config_for(upstream))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(RelayMiddleware(relay=relay)), base_url="http://r") as http:
        body = {"model": model.format(port=evil.port), "messages": MESSAGES}
        response = await http.post("/ai/v1/chat/completions", json=body, headers={"authorization": f"Bearer {RELAY_KEY}"})
    assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found"
    assert upstream.requests == [] and evil.requests == []


@pytest.mark.parametrize("name", ["a/b", "x?key=1", "m:streamGenerateContent", "../../../v1/chat/completions", "..", "x@127.0.0.1:{port}/y", "%2e%2e"])
async def test_gemini_quotes_the_configured_model_name_into_its_path(upstream, evil, name):
    config = config_for(upstream)
    config["models"]["gem"]["upstream"] = name.format(port=evil.port)
    relay = Relay(config)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(RelayMiddleware(relay=relay)), base_url="http://r") as http:
        await http.post("/ai/v1/chat/completions", json={"model": "gem", "messages": MESSAGES}, headers={"authorization": f"Bearer {RELAY_KEY}"})
    (sent,) = upstream.requests
    assert sent.raw_path.startswith("/v1beta/models/") and sent.raw_path.endswith(":generateContent"), sent.raw_path
    segment = sent.raw_path.removeprefix("/v1beta/models/").removesuffix(":generateContent")
    # One path segment, no query: ":" and "@" are plain characters inside a path (the HTTP
    # client may unescape them), a "/" or "?" would not be.
    assert not set(segment) & set("/?#") and sent.query == {}
    assert sent.path == f"/v1beta/models/{config['models']['gem']['upstream']}:generateContent"
    assert evil.requests == []


async def test_a_provider_echoing_its_key_is_scrubbed(upstream, secret_scan, monkeypatch):
    """The provider puts its key in an error message: the caller sees [redacted]; and the suite's
    scanner catches it when the scrubbing is switched off."""
    relay = Relay(config_for(upstream))
    echo = Fault.status(401, body={"error": {"message": f"Incorrect API key provided: {UPSTREAM_KEY}", "type": "invalid_request_error"}})

    async def post():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(RelayMiddleware(relay=relay)), base_url="http://r") as http:
            return await http.post("/ai/v1/chat/completions", json={"model": "test-model", "messages": MESSAGES}, headers={"authorization": f"Bearer {RELAY_KEY}"})

    upstream.script(echo)
    response = await post()
    assert response.status_code >= 400 and "[redacted]" in response.text and UPSTREAM_KEY not in response.text
    assert secret_scan.findings == []
    monkeypatch.setattr(redact, "scrub", lambda text: text)
    upstream.script(echo)
    await post()
    assert {(where, name) for where, name, _ in secret_scan.findings} >= {("response", "UPSTREAM_KEY")}
    secret_scan.findings.clear()


def test_scanner_reads_logs_and_exception_traces(secret_scan):
    try:
        raise RuntimeError(f"token {RELAY_KEY}")
    except RuntimeError:
        logging.getLogger("some.library").exception("failed")
    assert [(where, name) for where, name, _ in secret_scan.findings] == [("log some.library", "RELAY_KEY")]
    assert RELAY_KEY not in repr(secret_scan.findings)  # the report masks it
    secret_scan.findings.clear()


def test_scanner_reads_what_reached_the_upstream(upstream, secret_scan, _secret_scanner):
    httpx.post(f"{upstream.url}/v1/chat/completions", json={"model": "m", "messages": MESSAGES}, headers={"authorization": f"Bearer {RELAY_KEY}"})
    _secret_scanner.scan_requests(upstream.requests, ("RELAY_KEY",))
    assert [name for _, name, _ in secret_scan.findings] == ["RELAY_KEY"]
    secret_scan.findings.clear()
    upstream.reset()


def test_anthropic_sdk_key_is_not_forwarded(upstream):
    with LiveServer(RelayMiddleware(relay=Relay(config_for(upstream)))) as live:
        client = anthropic.Anthropic(base_url=f"{live.url}/ai", api_key=RELAY_KEY, max_retries=0)
        message = client.messages.create(model="claude", max_tokens=20, messages=MESSAGES)
    assert message.content
    (sent,) = upstream.requests
    assert sent.headers["x-api-key"] == UPSTREAM_KEY and RELAY_KEY not in repr(sent.headers)
