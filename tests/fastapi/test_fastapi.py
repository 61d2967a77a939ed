"""FastAPI: ``app.add_middleware(RelayMiddleware, ...)`` under uvicorn, with the openai SDK."""

from __future__ import annotations

import openai
import pytest
from fastapi import FastAPI, Request
from starlette.authentication import AuthCredentials, AuthenticationBackend, SimpleUser
from starlette.middleware.authentication import AuthenticationMiddleware

from asgi_ai_relay import Caller, Relay, RelayMiddleware
from asgi_ai_relay.errors import PermissionDenied
from tests.conftest import make_config
from tests.fake_upstream import echo_reply
from tests.live import LiveServer

MESSAGES = [{"role": "user", "content": "Hello from FastAPI"}]
TOKENS = {"tok-ada": "ada", "tok-bob": "bob"}


class TokenBackend(AuthenticationBackend):
    """The host's own login: a bearer token per user."""

    async def authenticate(self, conn):
        scheme, _, token = conn.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token in TOKENS:
            return AuthCredentials(["authenticated"]), SimpleUser(TOKENS[token])
        return None


def build_app(relay):
    app = FastAPI()

    @app.get("/whoami")
    async def whoami(request: Request):
        return {"user": request.user.display_name if request.user.is_authenticated else None}

    app.add_middleware(RelayMiddleware, relay=relay)
    app.add_middleware(AuthenticationMiddleware, backend=TokenBackend())  # outermost: sets scope["user"]
    return app


def sdk(live, key):
    return openai.OpenAI(base_url=f"{live.url}/ai/v1", api_key=key, max_retries=0)


def test_callers_from_scope_user(upstream):
    relay = Relay(make_config(upstream, require_auth=True))
    with LiveServer(build_app(relay)) as live:
        expected = echo_reply({"messages": MESSAGES}, "openai")
        assert sdk(live, "tok-ada").chat.completions.create(model="test-model", messages=MESSAGES).choices[0].message.content == expected
        chunks = list(sdk(live, "tok-bob").chat.completions.create(model="test-model", messages=MESSAGES, stream=True))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected
        with pytest.raises(openai.AuthenticationError):
            sdk(live, "tok-nobody").chat.completions.create(model="test-model", messages=MESSAGES)
    assert [(r.caller, r.stream, r.status) for r in relay.ledger.rows()] == [
        ("ada", False, 200), ("bob", True, 200), ("anonymous", False, 401),
    ]
    assert "tok-ada" not in str([r.headers for r in upstream.requests])


def test_callers_from_a_callable(upstream):
    async def only_ada(request):
        user = request.host_user
        if user is not None and user.is_authenticated:
            if user.display_name != "ada":
                raise PermissionDenied("only ada may call")
            return Caller(id="user:ada", admin=True)
        return None

    relay = Relay(make_config(upstream, require_auth=True), auth=only_ada)
    with LiveServer(build_app(relay)) as live:
        assert sdk(live, "tok-ada").chat.completions.create(model="test-model", messages=MESSAGES).choices
        with pytest.raises(openai.PermissionDeniedError):
            sdk(live, "tok-bob").chat.completions.create(model="test-model", messages=MESSAGES)
    assert [(r.caller, r.status) for r in relay.ledger.rows()] == [("user:ada", 200), ("anonymous", 403)]


def test_upstream_client_follows_the_lifespan(upstream):
    relay = Relay(make_config(upstream))
    assert not relay.started and relay._client is None
    with LiveServer(build_app(relay), lifespan="on") as live:
        assert relay.started  # opened at startup, before any request
        client = relay.client
        assert not client.closed
        assert sdk(live, "tok-ada").chat.completions.create(model="test-model", messages=MESSAGES).choices
        assert relay.client is client  # one pooled client for every request
    assert client.closed and not relay.started
