"""A small existing Django site (users, sessions, the admin) with asgi-ai-relay added:
``django_ai_relay`` in INSTALLED_APPS, its middleware after AuthenticationMiddleware, and
``AI_RELAY``. With no provider key in the environment the default models go to the offline mock.
"""

from __future__ import annotations

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("DJANGO_SITE_DATA", BASE_DIR))

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "dev-only-not-secret")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django_ai_relay",
    "notes",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_ai_relay.middleware.AIRelayMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "site_config.urls"
WSGI_APPLICATION = "site_config.wsgi.application"
ASGI_APPLICATION = "site_config.asgi.application"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": DATA_DIR / "db.sqlite3"}}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True

PROVIDER_KEYS = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY", "gemini": "GEMINI_API_KEY", "deepseek": "DEEPSEEK_API_KEY"}

AI_RELAY = {
    "prefix": "/ai",
    "providers": {name: {"api_key": f"env:{var}"} for name, var in PROVIDER_KEYS.items() if os.environ.get(var)},
    # Scripts and services call with a relay key instead of a session; the key stands for ada.
    "api_keys": [{"key": "env:DEMO_RELAY_KEY", "caller": "ada"}] if os.environ.get("DEMO_RELAY_KEY") else [],
    "storage": {"ledger": f"sqlite:///{DATA_DIR / 'relay-usage.db'}"},
}
# Who may call: users holding this permission (grant it in the admin); the default, spelled out.
AI_RELAY_PERMISSION = "django_ai_relay.use_relay"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"asgi_ai_relay": {"handlers": ["console"], "level": "INFO"}},
}
