"""One set of scenarios, run against every host: FastAPI (uvicorn), Django under ASGI (uvicorn)
and WSGI (werkzeug), Flask (werkzeug). Each host logs its user in its own way; the relay must
answer the same, in OpenAI's format, everywhere."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import httpx
import openai
import pytest

from tests.conftest import make_config
from tests.fake_upstream import echo_reply
from tests.live import LiveServer, WSGILiveServer

MESSAGES = [{"role": "user", "content": "Conformance check"}]
EXPECTED = echo_reply({"messages": MESSAGES}, "openai")
HOSTS = ["fastapi", "django-asgi", "django-wsgi", "flask"]

# The Django hosts' servers run in other threads: their users and sessions must be committed.
pytestmark = pytest.mark.django_db(transaction=True)


@dataclass
class Host:
    url: str
    headers: dict[str, str]  # the logged-in user's credentials, in the host's own way
    caller: str
    rows: Callable[[], list] = field(repr=False)

    def post(self, body: bytes | dict, *, auth: bool = True, **kwargs) -> httpx.Response:
        headers = {**(self.headers if auth else {}), "content-type": "application/json"}
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return httpx.post(f"{self.url}/ai/v1/chat/completions", content=content, headers=headers, timeout=10, **kwargs)

    def wait_rows(self, count: int) -> list:
        waited = threading.Event()
        for _ in range(500):
            if len(self.rows()) >= count:
                break
            waited.wait(0.02)
        return self.rows()


def fastapi_host(upstream) -> Iterator[Host]:
    from tests.fastapi.test_fastapi import build_app

    from asgi_ai_relay import Relay

    relay = Relay(make_config(upstream, require_auth=True))
    with LiveServer(build_app(relay)) as live:
        yield Host(live.url, {"authorization": "Bearer tok-ada"}, "ada", relay.ledger.rows)


def django_host(kind, request, upstream) -> Iterator[Host]:
    settings = request.getfixturevalue("settings")
    settings.AI_RELAY = make_config(upstream)
    from django.test import Client

    from django_ai_relay import conf
    from tests.django.conftest import make_user
    from tests.django.test_live import serve

    client = Client()
    client.force_login(make_user("ada"))
    with serve(kind) as live:
        yield Host(live.url, {"cookie": f"sessionid={client.cookies['sessionid'].value}"}, "ada", lambda: conf.relay().ledger.rows())


def flask_host(upstream) -> Iterator[Host]:
    from flask_ai_relay import AIRelay
    from tests.flask.test_extension import create_app

    app = create_app(make_config(upstream))
    with WSGILiveServer(app) as live:
        cookie = httpx.post(f"{live.url}/login/ada").cookies["session"]
        yield Host(live.url, {"cookie": f"session={cookie}"}, "ada", AIRelay.relay_for(app).ledger.rows)


@pytest.fixture(params=HOSTS)
def host(request, upstream) -> Iterator[Host]:
    name = request.param
    if name == "fastapi":
        yield from fastapi_host(upstream)
    elif name.startswith("django"):
        yield from django_host(name.split("-")[1], request, upstream)
    else:
        yield from flask_host(upstream)


def test_whole_answer(host):
    sdk = openai.OpenAI(base_url=f"{host.url}/ai/v1", api_key="unused", max_retries=0, default_headers=host.headers)
    raw = sdk.chat.completions.with_raw_response.create(model="test-model", messages=MESSAGES)
    completion = raw.parse()
    assert completion.choices[0].message.content == EXPECTED
    assert completion.usage.total_tokens > 0
    assert raw.headers["x-request-id"] and raw.headers["x-relay-provider"] == "up"
    (row,) = host.wait_rows(1)
    assert (row.caller, row.model, row.status, row.stream) == (host.caller, "test-model", 200, False)


def test_stream(host):
    with httpx.stream(
        "POST", f"{host.url}/ai/v1/chat/completions", headers={**host.headers, "content-type": "application/json"},
        content=json.dumps({"model": "test-model", "messages": MESSAGES, "stream": True}), timeout=10,
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    text = "".join(c["delta"].get("content") or "" for e in events[:-1] for c in json.loads(e)["choices"])
    assert text == EXPECTED
    (row,) = host.wait_rows(1)
    assert (row.caller, row.status, row.stream) == (host.caller, 200, True) and row.completion_tokens > 0


def test_unknown_model(host, upstream):
    response = host.post({"model": "no-such-model", "messages": MESSAGES})
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "model_not_found" and "no-such-model" in error["message"]
    assert upstream.requests == []
    assert [(r.caller, r.status) for r in host.wait_rows(1)] == [(host.caller, 404)]


@pytest.mark.parametrize(
    "body", [b"{not json", b'{"model": "test-model"}', b'{"model": 5, "messages": []}'], ids=["json", "no-messages", "types"]
)
def test_bad_body(host, upstream, body):
    response = host.post(body)
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert upstream.requests == []
    assert [r.status for r in host.wait_rows(1)] == [400]


def test_unauthenticated(host, upstream):
    response = host.post({"model": "test-model", "messages": MESSAGES}, auth=False)
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"
    assert response.headers["x-request-id"]
    assert upstream.requests == []
    assert [(r.caller, r.status) for r in host.wait_rows(1)] == [("anonymous", 401)]
