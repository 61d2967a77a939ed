"""The host apps the served tests run, each with the relay added the way its framework's users
add it, configured from the JSON file ``RELAY_HOST_CONFIG`` names.

    gunicorn -k gthread 'tests.hosts.apps:flask_app()'      # Flask
    gunicorn -k gthread tests.hosts.apps:django_wsgi        # Django under WSGI
    uvicorn tests.hosts.apps:django_asgi                    # Django under ASGI
    uvicorn --factory tests.hosts.apps:fastapi_app          # FastAPI with RelayMiddleware
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

CONFIG_ENV = "RELAY_HOST_CONFIG"


def relay_config() -> dict[str, Any]:
    return json.loads(Path(os.environ[CONFIG_ENV]).read_text())  # type: ignore[no-any-return]


def flask_app() -> Any:
    from flask import Flask
    from flask_ai_relay import AIRelay

    app = Flask(__name__)
    app.config["AI_RELAY"] = relay_config()
    AIRelay(app)
    return app


def fastapi_app() -> Any:
    from fastapi import FastAPI

    from asgi_ai_relay import RelayMiddleware

    app = FastAPI()
    app.add_middleware(RelayMiddleware, config=relay_config())
    return app


def __getattr__(name: str) -> Any:
    """``django_wsgi`` / ``django_asgi``: Django's handlers over :mod:`tests.hosts.django_settings`."""
    if name not in ("django_wsgi", "django_asgi"):
        raise AttributeError(name)
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.hosts.django_settings"
    if name == "django_wsgi":
        from django.core.wsgi import get_wsgi_application

        return get_wsgi_application()
    from django.core.asgi import get_asgi_application

    return get_asgi_application()
