"""``manage.py check`` reports relay configuration mistakes by key."""

from __future__ import annotations

import pytest
from django.core import checks
from django.core.management import call_command
from django.core.management.base import SystemCheckError

MIDDLEWARE = "django_ai_relay.middleware.AIRelayMiddleware"
AUTH = "django.contrib.auth.middleware.AuthenticationMiddleware"


def relay_messages():
    return [m for m in checks.run_checks() if m.id and m.id.startswith("django_ai_relay.")]


def test_valid_settings_pass():
    assert relay_messages() == []
    call_command("check")


@pytest.mark.parametrize(
    ("ai_relay", "key"),
    [
        ({"models": {"x": {"provider": "nowhere"}}}, "models.x.provider"),
        ({"timeouts": {"read": -1}}, "timeouts.read"),
        ({"storage": {"cache": 5}}, "storage.cache"),
        ({"surprise": True}, "surprise"),
        ({"providers": {"openai": {"api_key": "env:NOT_SET_ANYWHERE_42"}}}, "providers.openai.api_key"),
    ],
)
def test_bad_ai_relay_is_e001_naming_the_key(settings, ai_relay, key):
    settings.AI_RELAY = ai_relay
    (message,) = relay_messages()
    assert message.id == "django_ai_relay.E001" and message.level == checks.ERROR
    assert message.msg.startswith(f"AI_RELAY: {key}:")
    with pytest.raises(SystemCheckError, match="django_ai_relay.E001"):
        call_command("check")


def test_bad_permission_is_e002(settings):
    settings.AI_RELAY_PERMISSION = "use_relay"
    assert [m.id for m in relay_messages()] == ["django_ai_relay.E002"]


def test_bad_caller_is_e003(settings):
    settings.AI_RELAY_CALLER = "tests.django.nowhere.caller"
    (message,) = relay_messages()
    assert message.id == "django_ai_relay.E003" and "AI_RELAY_CALLER" in message.msg
    settings.AI_RELAY_CALLER = 42
    assert [m.id for m in relay_messages()] == ["django_ai_relay.E003"]


def test_middleware_before_authentication_is_e004(settings):
    settings.MIDDLEWARE = [m for m in settings.MIDDLEWARE if m != MIDDLEWARE]
    settings.MIDDLEWARE.insert(0, MIDDLEWARE)
    assert [m.id for m in relay_messages()] == ["django_ai_relay.E004"]


def test_missing_middleware_is_w001(settings):
    settings.MIDDLEWARE = [m for m in settings.MIDDLEWARE if m != MIDDLEWARE]
    (message,) = relay_messages()
    assert message.id == "django_ai_relay.W001" and message.level == checks.WARNING
