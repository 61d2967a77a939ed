"""Path tricks against every host: none reaches the host's own routes, none skips the relay's auth.

Each host has a protected ``/admin`` and a catch-all route answering ``host ...``; the relay
requires auth. A trick succeeds if the host answers it or the relay serves it without auth.
"""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest

from asgi_ai_relay import Relay, RelayMiddleware
from asgi_ai_relay.paths import REFUSED, relay_subpath
from tests.conftest import make_config
from tests.live import LiveServer, WSGILiveServer
from tests.security.raw_http import raw_request

HOSTS = ["fastapi", "django-asgi", "django-wsgi", "flask"]

# (method, target) -> every one is the relay's, answered 404 before auth.
TRICKS = [
    ("POST", "//ai/v1/chat/completions"),
    ("POST", "/ai//v1/chat/completions"),
    ("GET", "/ai/../admin"),
    ("GET", "/ai/v1/../../admin"),
    ("POST", "/ai/./v1/chat/completions"),
    ("POST", "/ai/v1/chat/completions/"),
    ("POST", "/ai%2Fv1%2Fchat%2Fcompletions"),
    ("POST", "/ai/v1/chat%2fcompletions"),
    ("GET", "/ai/%2e%2e/admin"),
    ("GET", "/ai/%2E%2E%2Fadmin"),
    ("POST", "/%61i/v1/chat/completions"),
    ("GET", "/ai/v1/models%00"),
    ("GET", "/ai/v1/models%252F"),
    ("POST", "/AI/v1/chat/completions"),
    ("POST", "/Ai/V1/Chat/Completions"),
    ("GET", "/admin/../ai/v1/models"),
    ("GET", "/x/..//ai/v1/models"),
    ("GET", "/ai/v1/models/.."),
]


def fastapi_host(upstream) -> Iterator[str]:
    from fastapi import FastAPI
    from fastapi.responses import PlainTextResponse

    app = FastAPI()

    @app.get("/admin")
    async def admin():
        return PlainTextResponse("host admin: forbidden", status_code=403)

    @app.api_route("/{rest:path}", methods=["GET", "POST"])
    async def catch_all(rest: str):
        return PlainTextResponse(f"host catch-all {rest}")

    app.add_middleware(RelayMiddleware, relay=Relay(make_config(upstream, require_auth=True)))
    with LiveServer(app) as live:
        yield live.url


def django_host(kind, request, upstream) -> Iterator[str]:
    settings = request.getfixturevalue("settings")
    settings.AI_RELAY = make_config(upstream, require_auth=True)
    settings.ROOT_URLCONF = "tests.security.django_urls"
    from tests.django.test_live import serve

    with serve(kind) as live:
        yield live.url


def flask_app(upstream):
    from flask import Flask

    from flask_ai_relay import AIRelay

    app = Flask("pathhost")
    app.config["AI_RELAY"] = make_config(upstream)

    @app.get("/admin")
    def admin():
        return "host admin: forbidden", 403

    @app.route("/<path:rest>", methods=["GET", "POST"])
    def catch_all(rest):
        return f"host catch-all {rest}"

    AIRelay(app)
    return app


def flask_host(upstream) -> Iterator[str]:
    with WSGILiveServer(flask_app(upstream)) as live:
        yield live.url


@pytest.fixture(params=HOSTS)
def host(request, upstream) -> Iterator[str]:
    name = request.param
    if name == "fastapi":
        yield from fastapi_host(upstream)
    elif name.startswith("django"):
        request.getfixturevalue("transactional_db")
        yield from django_host(name.split("-")[1], request, upstream)
    else:
        yield from flask_host(upstream)


def _is_relay_error(response, status):
    assert response.status == status, (response.status, response.body[:200])
    assert b"host" not in response.body
    assert response.headers.get("x-request-id")
    return orjson.loads(response.body)["error"]


CHAT = b'{"model": "test-model", "messages": [{"role": "user", "content": "hi"}]}'


def test_tricks_never_reach_the_host_nor_skip_auth(host, upstream):
    for method, target in TRICKS:
        response = raw_request(host, method, target, body=CHAT if method == "POST" else b"")
        if response.status == 400 and not response.headers.get("x-request-id"):
            continue  # the HTTP server itself refused the target: nothing was served
        if target.startswith("//") and response.status == 401:
            # Python's http.server (werkzeug) turns a leading "//" into "/" before the app sees
            # the request: it is then the canonical route, and it still asks for auth.
            assert _is_relay_error(response, 401)["type"] == "authentication_error"
            continue
        error = _is_relay_error(response, 404)
        assert error["code"] == "not_found", (target, error)
    assert upstream.requests == []


def test_the_canonical_path_still_asks_for_auth_and_host_routes_stay_the_hosts(host):
    assert _is_relay_error(raw_request(host, "GET", "/ai/v1/models"), 401)["type"] == "authentication_error"
    admin = raw_request(host, "GET", "/admin")
    assert (admin.status, admin.body) == (403, b"host admin: forbidden")
    for target in ("/aix/v1/models", "/a/ai/v1/models", "/ai-docs"):
        response = raw_request(host, "GET", target)
        assert response.status == 200 and response.body.startswith(b"host catch-all"), target


@pytest.mark.parametrize("prefix", ["/ai", "/ai/", "/AI", "/api/ai/"])
def test_prefix_with_or_without_a_trailing_slash(prefix):
    canonical = prefix.rstrip("/")
    relay = Relay({"prefix": prefix, "storage": {"ledger": "memory://"}})
    assert relay.config.prefix == canonical
    assert relay_subpath(f"{canonical}/v1/models", relay.config.prefix) == "/v1/models"
    assert relay_subpath(canonical, relay.config.prefix) == ""
    assert relay_subpath(f"{canonical}/v1/models/", relay.config.prefix) == "/v1/models/"  # no route: 404
    assert relay_subpath(f"{canonical}x/v1/models", relay.config.prefix) is None
    assert relay_subpath(f"{canonical}//v1/models", relay.config.prefix) == REFUSED
    assert relay_subpath(f"/{canonical}/v1/models", relay.config.prefix) == REFUSED


async def _asgi_get(app, path, root_path="", raw_path=None):
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http", "method": "GET", "path": path, "root_path": root_path, "headers": [],
        "query_string": b"", "raw_path": raw_path if raw_path is not None else path.encode(),
    }
    await app(scope, receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


async def _host(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"host " + scope["path"].encode()})


async def test_asgi_root_path_is_removed_before_matching():
    """uvicorn --root-path and Starlette's Mount put the mount point in both path and root_path."""
    app = RelayMiddleware(_host, config={"require_auth": True, "storage": {"ledger": "memory://"}})
    assert (await _asgi_get(app, "/svc/ai/v1/models", root_path="/svc"))[0] == 401
    assert (await _asgi_get(app, "/svc//ai/v1/models", root_path="/svc"))[0] == 404
    assert (await _asgi_get(app, "/svc/admin", root_path="/svc")) == (200, b"host /svc/admin")
    # Without a root path, a host path that merely contains the prefix stays the host's.
    assert (await _asgi_get(app, "/svc/ai/v1/models"))[0] == 200


def test_mounted_under_starlette(upstream):
    from starlette.applications import Starlette
    from starlette.routing import Mount

    inner = RelayMiddleware(_host, relay=Relay(make_config(upstream, require_auth=True)))
    with LiveServer(Starlette(routes=[Mount("/svc", app=inner)])) as live:
        assert raw_request(live.url, "GET", "/svc/ai/v1/models").status == 401
        assert raw_request(live.url, "GET", "/svc/ai/../admin").status == 404
        assert raw_request(live.url, "GET", "/svc/other").body == b"host /svc/other"


@pytest.mark.django_db
def test_django_script_name(relay_settings_required):
    from django.test import Client

    client = Client()
    assert client.get("/ai/v1/models", SCRIPT_NAME="/svc").status_code == 401
    assert client.get("/ai//v1/models", SCRIPT_NAME="/svc").status_code == 404


@pytest.fixture
def relay_settings_required(settings, upstream):
    settings.AI_RELAY = make_config(upstream, require_auth=True)
    settings.ROOT_URLCONF = "tests.security.django_urls"
    return settings


def test_flask_script_name(upstream):
    client = flask_app(upstream).test_client()
    assert client.get("/ai/v1/models", base_url="http://localhost/svc/").status_code == 401
    response = client.get("/ai//v1/models", base_url="http://localhost/svc/")
    assert response.status_code == 404 and b"canonical" in response.data
