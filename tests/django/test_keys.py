"""``RelayKey`` through the Django admin and the relay: a key made by posting the admin's add form
works, is refused once revoked, runs as its user (one budget with the user's session), and
per-model permissions decide which models a user and that user's keys may call."""

from __future__ import annotations

import re

import orjson
import pytest
from django.contrib.auth.models import Group, Permission, User
from django.contrib.messages import get_messages
from django.test import Client

from tests.conftest import make_config
from tests.django.conftest import make_user, relay_rows

URL = "/ai/v1/chat/completions"
ADD = "/admin/django_ai_relay/relaykey/add/"
LIST = "/admin/django_ai_relay/relaykey/"

pytestmark = pytest.mark.django_db


def ask(key=None, model="test-model", client=None):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {key}"} if key else {}
    body = {"model": model, "messages": [{"role": "user", "content": "hello from a key"}], "max_tokens": 20}
    return (client or Client()).post(URL, data=orjson.dumps(body), content_type="application/json", **headers)


@pytest.fixture
def relay_settings(settings, upstream):
    config = make_config(upstream, queue={"on_limit": "reject"})
    config["models"]["other-model"] = {"provider": "up", "upstream": "gpt-4o", "price": {"input": 2.5, "output": 10}}
    settings.AI_RELAY = config
    return settings


@pytest.fixture
def staff_client(db):
    boss = User.objects.create_superuser("boss", password="boss-password")
    client = Client()
    client.force_login(boss)
    return client


def add_key(staff_client, user, **fields):
    form = {"name": "laptop", "user": str(user.pk), "group": "", "enabled": "on", "expires_at_0": "", "expires_at_1": "",
            "allowed_models": "", "rpm": "0", "tpm": "0", "daily_budget": "", "monthly_budget": "", "metadata": "{}",
            "_save": "Save", **fields}
    response = staff_client.post(ADD, form, follow=True)
    assert response.status_code == 200
    shown = [str(m) for m in get_messages(response.wsgi_request)]
    secrets = [s for m in shown for s in re.findall(r"rk-[A-Za-z0-9_-]{20,}", m)]
    assert len(secrets) == 1, (shown, response.content[:2000])
    from django_ai_relay.models import RelayKey

    return secrets[0], RelayKey.objects.get(prefix=secrets[0][:11])


def test_a_key_made_in_the_admin_works_through_the_relay_and_is_refused_after_revoke(relay_settings, staff_client, member, upstream):
    key, stored = add_key(staff_client, member)
    assert stored.digest and key not in (stored.digest, stored.prefix) and stored.prefix == key[:11]
    page = staff_client.get(f"{LIST}{stored.pk}/change/").content.decode()
    assert key[:11] in page and key not in page  # shown once, never again

    answered = ask(key)
    assert answered.status_code == 200, answered.content
    revoked = staff_client.post(LIST, {"action": "revoke", "_selected_action": [str(stored.pk)]}, follow=True)
    assert revoked.status_code == 200
    stored.refresh_from_db()
    assert not stored.enabled and stored.revoked_at is not None
    refused = ask(key)
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "key_revoked"
    assert [(r.caller, r.status) for r in relay_rows() if r.endpoint == "chat.completions"] == [
        ("member", 200), ("anonymous", 401)]
    assert len(upstream.requests) == 1


def test_edits_in_the_admin_apply_and_rotation_replaces_the_secret(relay_settings, staff_client, member):
    key, stored = add_key(staff_client, member, allowed_models="test-*")
    assert ask(key).status_code == 200
    assert ask(key, "other-model").status_code == 403
    change = {"name": "laptop", "user": str(member.pk), "group": "", "enabled": "on", "expires_at_0": "", "expires_at_1": "",
              "allowed_models": "test-*", "rpm": "0", "tpm": "0", "daily_budget": "0", "monthly_budget": "",
              "metadata": "{}", "_save": "Save"}
    assert staff_client.post(f"{LIST}{stored.pk}/change/", change).status_code == 302
    spent = ask(key)
    assert spent.status_code == 429 and spent.json()["error"]["code"] == "budget_exceeded"
    rotated = staff_client.post(LIST, {"action": "rotate", "_selected_action": [str(stored.pk)]}, follow=True)
    new = re.findall(r"rk-[A-Za-z0-9_-]{20,}", " ".join(str(m) for m in get_messages(rotated.wsgi_request)))
    assert len(new) == 1 and new[0] != key
    assert ask(key).status_code == 401
    again = ask(new[0])
    assert again.status_code == 429, again.content  # same key, same budget


def test_a_users_session_and_keys_share_the_users_budget(relay_settings, staff_client, member):
    relay_settings.AI_RELAY = {**relay_settings.AI_RELAY, "budgets": {"callers": {"member": {"daily": "0.0004"}}}}
    key, _ = add_key(staff_client, member)
    statuses = [ask(key).status_code for _ in range(10)]
    assert statuses[0] == 200 and statuses[-1] == 429
    session = Client()
    session.force_login(member)
    refused = ask(client=session)
    assert refused.status_code == 429 and "'member'" in refused.json()["error"]["message"]


def test_a_keys_group_budget_applies(relay_settings, staff_client, member):
    team = Group.objects.create(name="research")
    relay_settings.AI_RELAY = {**relay_settings.AI_RELAY, "budgets": {"callers": {"team:research": {"monthly": "0"}}}}
    key, _ = add_key(staff_client, member, group=str(team.pk))
    other, _ = add_key(staff_client, member)
    assert ask(key).status_code == 429
    assert ask(other).status_code == 200


def test_per_model_permissions_hold_for_sessions_and_keys(relay_settings, staff_client, member):
    from django_ai_relay.keys import create_model_permissions

    relay_settings.AI_RELAY_MODEL_PERMISSIONS = "auto"
    create_model_permissions()
    member.user_permissions.add(Permission.objects.get(codename="use_model_test-model"))
    member = User.objects.get(pk=member.pk)  # no cached permissions
    key, _ = add_key(staff_client, member)
    session = Client()
    session.force_login(member)
    for who in ({"key": key}, {"client": session}):
        assert ask(**who).status_code == 200
        refused = ask(model="other-model", **who)
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "model_not_allowed"

    relay_settings.AI_RELAY_MODEL_PERMISSIONS = {"other-*": "django_ai_relay.use_model_other-model"}
    assert ask(key, "test-model").status_code == 200  # not named by the mapping: open
    assert ask(key, "other-model").status_code == 403
    outsider_key, _ = add_key(staff_client, make_user("nobody", permission=False))
    assert ask(outsider_key).status_code == 403  # the owner lacks use_relay
