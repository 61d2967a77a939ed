from __future__ import annotations

import pytest

pytest.importorskip("django")
pytest.importorskip("pytest_django")

from tests.conftest import make_config  # noqa: E402


@pytest.fixture
def relay_settings(settings, upstream):
    """``AI_RELAY`` pointing ``test-model`` at the fake upstream; the relay is rebuilt from it."""
    settings.AI_RELAY = make_config(upstream)
    return settings


def make_user(username, *, permission=True):
    from django.contrib.auth.models import Permission, User

    user = User.objects.create_user(username, password=f"{username}-password")
    if permission:
        user.user_permissions.add(Permission.objects.get(codename="use_relay", content_type__app_label="django_ai_relay"))
    return user


@pytest.fixture
def member(db):
    return make_user("member")


@pytest.fixture
def outsider(db):
    return make_user("outsider", permission=False)


def relay_rows():
    from django_ai_relay import conf

    return conf.relay().ledger.rows()
