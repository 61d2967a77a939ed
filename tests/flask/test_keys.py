"""Managed keys in a Flask host: the same store and admin API, keys with their own limits and
models, and the documented Flask-Login recipe (a caller with limits of its own)."""

from __future__ import annotations

import orjson
import pytest

flask_login = pytest.importorskip("flask_login")

from flask import Flask  # noqa: E402

from asgi_ai_relay.policy import limited_caller  # noqa: E402
from flask_ai_relay import AIRelay  # noqa: E402
from tests.keys_helpers import ADMIN_KEY, keys_config  # noqa: E402

URL = "/ai/v1/chat/completions"


class User(flask_login.UserMixin):
    def __init__(self, name, models, daily=None):
        self.id, self.models, self.daily = name, models, daily


USERS = {"ada": User("ada", ["test-*"]), "bob": User("bob", ["*"], daily="0")}


def create_app(config):
    relay = AIRelay()
    login = flask_login.LoginManager()
    login.user_loader(USERS.get)

    @relay.caller_loader
    def load_caller():  # the recipe in docs/keys.md
        user = flask_login.current_user
        if not user.is_authenticated:
            return None
        return limited_caller(user.get_id(), models=user.models, daily=user.daily)

    app = Flask("keyhost")
    app.secret_key = "flask-keys-tests"
    app.config["AI_RELAY"] = config
    login.init_app(app)

    @app.post("/login/<name>")
    def sign_in(name):
        flask_login.login_user(USERS[name])
        return "ok"

    relay.init_app(app)
    return app


def ask(client, key=None, model="test-model"):
    headers = {"authorization": f"Bearer {key}"} if key else {}
    body = {"model": model, "messages": [{"role": "user", "content": "hi from flask"}], "max_tokens": 20}
    return client.post(URL, data=orjson.dumps(body), headers=headers, content_type="application/json")


@pytest.fixture
def app(upstream, tmp_path):
    return create_app(keys_config(upstream, f"sqlite:///{tmp_path}/keys.db"))


def admin(client, method, path, body=None):
    response = client.open(f"/ai{path}", method=method, data=orjson.dumps(body or {}),
                           headers={"authorization": f"Bearer {ADMIN_KEY}"}, content_type="application/json")
    assert response.status_code in (200, 201), response.data
    return response.get_json()


def test_a_managed_key_with_limits_and_models(app):
    client = app.test_client()
    made = admin(client, "POST", "/v1/keys", {"owner": "ada", "models": ["test-*"], "rpm": 1})
    key = made["key"]
    assert ask(client, key).status_code == 200
    assert ask(client, key).status_code == 429
    refused = ask(client, key, "other-model")
    assert refused.status_code == 403 and refused.get_json()["error"]["code"] == "model_not_allowed"
    admin(client, "DELETE", f"/v1/keys/{made['id']}")
    assert ask(client, key).status_code == 401


def test_the_flask_login_recipe_limits_the_session_and_the_owner_limits_reach_it(app):
    client = app.test_client()
    client.post("/login/ada")
    assert ask(client).status_code == 200
    assert ask(client, model="other-model").status_code == 403
    admin(client, "PUT", "/v1/key_limits/owner:ada", {"daily": "0"})  # ada's keys and ada's session
    assert ask(client).status_code == 429
    other = app.test_client()
    other.post("/login/bob")
    refused = ask(other, model="other-model")  # bob may call every model, but his own budget is 0
    assert refused.status_code == 429 and refused.get_json()["error"]["code"] == "budget_exceeded"
