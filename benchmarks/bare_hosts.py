"""Bare hello routes of the hosts, without the relay: the host's own cost per request.

Each reads the POSTed body and answers a fixed chat.completion of the size the fake upstream
sends, so the host does what it does for a relay request except the relay's own work.

    gunicorn -w 1 -k gthread --threads 8 'bare_hosts:flask_app()'   # from benchmarks/
    gunicorn -w 1 -k gthread --threads 8 bare_hosts:django_wsgi
    uvicorn --factory bare_hosts:fastapi_app
"""

from __future__ import annotations

import json
import os
from typing import Any

ANSWER = json.dumps({
    "id": "chatcmpl-bare", "object": "chat.completion", "created": 0, "model": "bench-upstream",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello from the bare host."}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 9, "completion_tokens": 7, "total_tokens": 16},
}).encode()  # fmt: skip
PATH = "/ai/v1/chat/completions"


def flask_app() -> Any:
    from flask import Flask, Response, request

    app = Flask(__name__)

    @app.post(PATH)
    def chat() -> Response:
        request.get_data()
        return Response(ANSWER, content_type="application/json")

    return app


def fastapi_app() -> Any:
    from fastapi import FastAPI
    from starlette.requests import Request
    from starlette.responses import Response

    app = FastAPI()

    async def chat(request):  # type: ignore[no-untyped-def]  # Starlette's own route: no FastAPI signature analysis
        await request.body()
        return Response(ANSWER, media_type="application/json")

    app.router.add_route(PATH, chat, methods=["POST"])
    assert Request

    return app


# Django: this module is its own settings and URLconf.
SECRET_KEY = "bare-host"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1"]
USE_TZ = True
INSTALLED_APPS: list[str] = []
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "bare_hosts"
DATABASES: dict[str, object] = {}


def _django_chat(request: Any) -> Any:
    from django.http import HttpResponse

    request.body  # noqa: B018 - read it, as the relay does
    return HttpResponse(ANSWER, content_type="application/json")


def __getattr__(name: str) -> Any:
    if name == "urlpatterns":
        from django.urls import path
        from django.views.decorators.csrf import csrf_exempt

        return [path(PATH.lstrip("/"), csrf_exempt(_django_chat))]
    if name != "django_wsgi":
        raise AttributeError(name)
    os.environ["DJANGO_SETTINGS_MODULE"] = "bare_hosts"
    from django.core.wsgi import get_wsgi_application

    return get_wsgi_application()
