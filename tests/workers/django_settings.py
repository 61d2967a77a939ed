"""Django settings of the harness's Django host: the relay app and middleware, ``AI_RELAY`` from
the JSON file ``RELAY_WORKER_CONFIG`` names."""

from __future__ import annotations

import os

from tests.workers.hosts import relay_config

SECRET_KEY = "django-ai-relay-workers"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
USE_TZ = True

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django_ai_relay",
]

MIDDLEWARE = [
    "tests.workers.hosts.DjangoPidHeader",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_ai_relay.middleware.AIRelayMiddleware",
]

ROOT_URLCONF = "tests.workers.django_urls"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.path.join(os.environ.get("RELAY_WORKER_DIR", "."), "django.sqlite3"),
    }
}
AI_RELAY = relay_config()
