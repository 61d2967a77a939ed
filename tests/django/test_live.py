"""Django behind real servers (uvicorn for ASGI, werkzeug for WSGI) and the official openai SDK."""

from __future__ import annotations

import threading

import openai
import pytest
from django.core.asgi import get_asgi_application
from django.core.wsgi import get_wsgi_application
from django.test import Client

from tests.django.conftest import make_user, relay_rows
from tests.fake_upstream import Fault, echo_reply
from tests.live import LiveServer, WSGILiveServer

MESSAGES = [{"role": "user", "content": "Stream me something"}]


def serve(kind):
    if kind == "asgi":
        return LiveServer(get_asgi_application(), lifespan="off")  # Django's handler speaks no lifespan
    return WSGILiveServer(get_wsgi_application())


def session_cookie(user):
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}"


def wait_for(predicate, timeout=10.0):
    done = threading.Event()
    for _ in range(int(timeout / 0.02)):
        if predicate():
            done.set()
            break
        done.wait(0.02)
    return done.is_set()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_openai_sdk_with_the_sites_login(kind, relay_settings):
    cookie = session_cookie(make_user("grace"))
    with serve(kind) as live:
        sdk = openai.OpenAI(base_url=f"{live.url}/ai/v1", api_key="unused", max_retries=0, default_headers={"cookie": cookie})
        expected = echo_reply({"messages": MESSAGES}, "openai")
        whole = sdk.chat.completions.create(model="test-model", messages=MESSAGES)
        assert whole.choices[0].message.content == expected
        chunks = list(sdk.chat.completions.create(
            model="test-model", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        ))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected
        assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
        anonymous = openai.OpenAI(base_url=f"{live.url}/ai/v1", api_key="unused", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            anonymous.chat.completions.create(model="test-model", messages=MESSAGES)
        # A stream is recorded when the server reads the upstream's end, which may come just
        # after the client has read the last event.
        assert wait_for(lambda: len(relay_rows()) == 3)
    assert [(r.caller, r.stream, r.status) for r in relay_rows()] == [
        ("grace", False, 200), ("grace", True, 200), ("anonymous", False, 401),
    ]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_client_leaving_mid_stream_closes_the_upstream(kind, relay_settings, upstream):
    cookie = session_cookie(make_user("linus"))
    # A long answer after the stall: a WSGI server only learns the client left when a write
    # fails, which takes a write or two after the peer's reset.
    upstream.script(Fault.reply("word " * 3000) | Fault.stream_stall(after_chunks=2, seconds=1))
    with serve(kind) as live:
        sdk = openai.OpenAI(base_url=f"{live.url}/ai/v1", api_key="unused", max_retries=0, default_headers={"cookie": cookie})
        stream = sdk.chat.completions.create(model="test-model", messages=MESSAGES, stream=True)
        next(iter(stream))
        stream.close()
        assert wait_for(lambda: len(relay_rows()) == 1)
    (row,) = relay_rows()
    assert (row.caller, row.stream, row.status) == ("linus", True, 499)
