"""The Django adapter through Django's own test clients (WSGI and ASGI request paths)."""

from __future__ import annotations

import json
import logging

import orjson
import pytest
from asgiref.sync import async_to_sync
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.test import AsyncClient, Client

from asgi_ai_relay import Caller
from tests.conftest import RELAY_KEY, UPSTREAM_KEY
from tests.django.conftest import relay_rows
from tests.fake_upstream import Fault, echo_reply

URL = "/ai/v1/chat/completions"
MESSAGES = [{"role": "user", "content": "Hello from Django"}]
BODY = {"model": "test-model", "messages": MESSAGES}


def post(client, body=BODY, **extra):
    return client.post(URL, data=orjson.dumps(body), content_type="application/json", **extra)


def sse_text(raw: bytes) -> str:
    text = ""
    for line in raw.decode().splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            chunk = json.loads(line[6:])
            text += "".join(c["delta"].get("content") or "" for c in chunk["choices"])
    return text


@pytest.mark.django_db
def test_anonymous_is_refused_in_openai_format(relay_settings, client):
    response = post(client)
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"
    assert [(r.caller, r.status) for r in relay_rows()] == [("anonymous", 401)]


def test_user_without_permission_is_forbidden(relay_settings, client, outsider, upstream):
    client.force_login(outsider)
    response = post(client)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"
    assert "use_relay" in response.json()["error"]["message"]
    assert upstream.requests == []


def test_user_with_permission_gets_the_answer(relay_settings, client, member, upstream):
    client.force_login(member)
    response = post(client, HTTP_X_REQUEST_ID="req-django-1")
    assert response.status_code == 200, response.content
    assert response.json()["choices"][0]["message"]["content"] == echo_reply({"messages": MESSAGES}, "openai")
    assert response["x-request-id"] == "req-django-1"
    assert response["content-type"] == "application/json"
    sent = upstream.last_request
    assert sent.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert "sessionid" not in str(sent.headers)  # the user's cookie stays in Django
    (row,) = relay_rows()
    assert (row.caller, row.model, row.status, row.request_id) == ("member", "test-model", 200, "req-django-1")


def test_streamed_answer_under_wsgi(relay_settings, client, member):
    client.force_login(member)
    response = post(client, {**BODY, "stream": True})
    assert response.status_code == 200 and response.streaming
    assert response["content-type"].startswith("text/event-stream")
    raw = b"".join(response.streaming_content)
    response.close()
    assert raw.rstrip().endswith(b"data: [DONE]")
    assert sse_text(raw) == echo_reply({"messages": MESSAGES}, "openai")
    (row,) = relay_rows()
    assert row.stream and row.status == 200 and row.completion_tokens > 0


def test_stream_closed_early_under_wsgi_is_recorded_as_client_closed(relay_settings, client, member, upstream):
    upstream.script(Fault.stream_stall(after_chunks=2, seconds=5))
    client.force_login(member)
    response = post(client, {**BODY, "stream": True})
    first = next(iter(response.streaming_content))
    assert first.startswith(b"data: ")
    response.close()  # what the WSGI server does when the client goes away
    (row,) = relay_rows()
    assert row.status == 499 and row.stream


@pytest.mark.django_db
def test_relay_routes_are_csrf_exempt_and_host_routes_are_not(relay_settings, member):
    client = Client(enforce_csrf_checks=True)
    client.force_login(member)
    assert post(client).status_code == 200
    assert client.post("/host/form", {"a": "b"}).status_code == 403  # CSRF still guards the host
    assert client.get("/host/form").content == b"host GET"


@pytest.mark.django_db
def test_relay_api_key_tied_to_a_user(settings, upstream, client):
    from tests.conftest import make_config

    settings.AI_RELAY = make_config(upstream, api_keys=[{"key": "env:TEST_RELAY_KEY", "caller": "svc-reports"}])
    assert post(client, HTTP_AUTHORIZATION=f"Bearer {RELAY_KEY}").status_code == 200
    assert post(client, HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert [r.caller for r in relay_rows()] == ["svc-reports", "anonymous"]
    assert RELAY_KEY not in str(upstream.last_request.headers)


def test_permission_setting_none_lets_any_user_in(relay_settings, client, outsider):
    relay_settings.AI_RELAY_PERMISSION = None
    client.force_login(outsider)
    assert post(client).status_code == 200


def custom_caller(request):
    if request.headers.get("x-team") == "blocked":
        raise DjangoPermissionDenied("team blocked")
    return Caller(id=f"team:{request.headers.get('x-team')}") if request.headers.get("x-team") else None


@pytest.mark.django_db
def test_configurable_caller_callable(relay_settings, client):
    relay_settings.AI_RELAY_CALLER = "tests.django.test_middleware.custom_caller"
    assert post(client, HTTP_X_TEAM="ml").status_code == 200
    refused = post(client, HTTP_X_TEAM="blocked")
    assert refused.status_code == 403 and refused.json()["error"]["message"] == "team blocked"
    assert post(client).status_code == 401
    assert [r.caller for r in relay_rows()] == ["team:ml", "anonymous", "anonymous"]


def test_body_over_the_limit(settings, upstream, client, member):
    from tests.conftest import make_config

    settings.AI_RELAY = make_config(upstream, max_body_bytes=64)
    client.force_login(member)
    response = post(client, {**BODY, "messages": [{"role": "user", "content": "x" * 200}]})
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"
    assert upstream.requests == []


def test_prefix_setting_and_other_paths(settings, upstream, client, member):
    from tests.conftest import make_config

    settings.AI_RELAY = make_config(upstream, prefix="/llm")
    client.force_login(member)
    assert client.post("/llm/v1/chat/completions", orjson.dumps(BODY), content_type="application/json").status_code == 200
    assert client.get("/llmx").status_code == 404 and client.get("/llmx")["content-type"].startswith("text/html")
    assert client.get("/llm/v1/nothing").json()["error"]["code"] == "not_found"


def test_request_log_line_goes_through_python_logging(relay_settings, client, member, caplog):
    client.force_login(member)
    with caplog.at_level(logging.INFO, logger="asgi_ai_relay"):
        post(client)
    (record,) = [r for r in caplog.records if r.name == "asgi_ai_relay"]
    assert "caller=member" in record.getMessage() and "status=200" in record.getMessage()


# -- the ASGI request path (Django's async middleware chain) ---------------------------------


def test_async_path_whole_and_streamed(relay_settings, member):
    from django_ai_relay import conf

    @async_to_sync  # keeps Django's thread-sensitive calls on this thread, in the test transaction
    async def run():
        client = AsyncClient()
        await client.aforce_login(member)
        try:
            whole = await client.post(URL, orjson.dumps(BODY), content_type="application/json")
            streamed = await client.post(URL, orjson.dumps({**BODY, "stream": True}), content_type="application/json")
            raw = b"".join([chunk async for chunk in streamed.streaming_content])
            anonymous = await AsyncClient().post(URL, orjson.dumps(BODY), content_type="application/json")
        finally:
            # The relay's upstream client belongs to this event loop: close it before the loop goes.
            await conf.relay().shutdown()
        return whole, streamed, raw, anonymous

    whole, streamed, raw, anonymous = run()
    expected = echo_reply({"messages": MESSAGES}, "openai")
    assert whole.status_code == 200 and whole.json()["choices"][0]["message"]["content"] == expected
    assert streamed.status_code == 200 and streamed.is_async and sse_text(raw) == expected
    assert anonymous.status_code == 401
    assert [(r.caller, r.stream, r.status) for r in relay_rows()] == [
        ("member", False, 200),
        ("member", True, 200),
        ("anonymous", False, 401),
    ]


@pytest.mark.django_db
def test_a_ledger_that_cannot_open_breaks_neither_the_site_nor_the_relay(settings, upstream, client, caplog):
    from django_ai_relay import conf
    from tests.conftest import make_config

    settings.AI_RELAY = make_config(upstream, storage={"ledger": "sqlite:////proc/no-such-dir/ledger.db"}, require_auth=False)
    assert client.get("/host/form").content == b"host GET"
    models = client.get("/ai/v1/models")
    assert models.status_code == 200 and "test-model" in [m["id"] for m in models.json()["data"]]
    # At process exit the flush closes only a ledger that was opened: this one never was, and
    # trying to open it there would only log a traceback as the process ends.
    caplog.set_level(logging.ERROR, logger="asgi_ai_relay")
    conf._flush_ledger(conf.relay())
    assert not [r for r in caplog.records if "could not be flushed" in r.getMessage()]
