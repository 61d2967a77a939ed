"""The Django site of the served tests: the relay's app and middleware, no database."""

from __future__ import annotations

from tests.hosts.apps import relay_config

SECRET_KEY = "django-ai-relay-hosts"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1"]
USE_TZ = True
INSTALLED_APPS = ["django.contrib.auth", "django.contrib.contenttypes", "django_ai_relay"]
MIDDLEWARE = ["django_ai_relay.middleware.AIRelayMiddleware"]
ROOT_URLCONF = "tests.hosts.django_settings"
urlpatterns: list[object] = []
DATABASES: dict[str, object] = {}
AI_RELAY = relay_config()
