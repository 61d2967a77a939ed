"""The host apps the harness serves, one factory per kind, each with the relay added the way
its framework's users add it and configured from the JSON file ``RELAY_WORKER_CONFIG`` names.

Every answer carries ``x-worker-pid`` (the pid of the worker that served it), ``GET /whoami``
answers ``{"pid": ...}``, and each worker marks itself ready in ``RELAY_WORKER_DIR``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

PID_HEADER = "x-worker-pid"


def relay_config() -> dict[str, Any]:
    return json.loads(Path(os.environ["RELAY_WORKER_CONFIG"]).read_text())  # type: ignore[no-any-return]


def _mark_ready() -> None:
    directory = os.environ.get("RELAY_WORKER_DIR")
    if directory:
        Path(directory, f"worker-{os.getpid()}.ready").touch()


def fastapi_app() -> Any:
    """FastAPI with ``RelayMiddleware`` (for ``uvicorn --factory --workers N``)."""
    from fastapi import FastAPI

    from asgi_ai_relay import RelayMiddleware

    app = FastAPI()

    @app.get("/whoami")
    def whoami() -> dict[str, int]:
        return {"pid": os.getpid()}

    app.add_middleware(RelayMiddleware, config=relay_config())
    _mark_ready()
    return _PidHeader(app)


class _PidHeader:
    """ASGI: ``x-worker-pid`` on every HTTP answer."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.header = (PID_HEADER.encode(), str(os.getpid()).encode())

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_pid(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), self.header]}
            await send(message)

        await self.app(scope, receive, send_with_pid)


def flask_app() -> Any:
    """Flask with the ``AIRelay`` extension (for ``gunicorn -k gthread -w N``)."""
    from flask import Flask, Response
    from flask_ai_relay import AIRelay

    app = Flask(__name__)
    app.config["AI_RELAY"] = relay_config()
    AIRelay(app)

    @app.get("/whoami")
    def whoami() -> dict[str, int]:
        return {"pid": os.getpid()}

    @app.after_request
    def pid_header(response: Response) -> Response:
        response.headers[PID_HEADER] = str(os.getpid())
        return response

    _mark_ready()
    return app


def django_app() -> Any:
    """Django's WSGI handler over :mod:`tests.workers.django_settings`."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.workers.django_settings")
    from django.core.wsgi import get_wsgi_application

    application = get_wsgi_application()
    _mark_ready()
    return application


def whoami_view(request: Any) -> Any:
    from django.http import JsonResponse

    return JsonResponse({"pid": os.getpid()})


class DjangoPidHeader:
    """Django middleware: ``x-worker-pid`` on every answer, the relay's included."""

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response

    def __call__(self, request: Any) -> Any:
        response = self.get_response(request)
        response[PID_HEADER] = str(os.getpid())
        return response
