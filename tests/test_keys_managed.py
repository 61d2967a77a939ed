"""Managed keys through the relay: made by the admin API, refused once revoked, rotated or
expired; the models they may call and the limits and budgets of key, owner and team, on every
model route; kept only as digests."""

from __future__ import annotations

import time

import orjson
import pytest

from asgi_ai_relay import Caller
from asgi_ai_relay.keys import Hasher
from asgi_ai_relay.policy import limited_caller
from tests.keys_helpers import ADMIN_KEY, ROUTES, call, create_key, error_of, keys_config, model_for, on_route
from tests.relay_calls import relays  # noqa: F401 - the fixture

pytestmark = pytest.mark.usefixtures("upstream")


async def test_a_key_made_by_the_admin_api_runs_as_its_owner_and_is_refused_once_revoked(upstream, relays):
    relay = relays(keys_config(upstream))
    key, made = await create_key(relay, "ada", name="laptop", team="research")
    assert key.startswith("rk-") and made["prefix"] == key[:11] and made["state"] == "active"
    assert "digest" not in made and key not in orjson.dumps(made).decode()

    ok = await on_route(relay, "chat", key)
    assert ok.status == 200, ok.body
    listed = orjson.loads((await call(relay, "GET", "/v1/keys", query="owner=ada")).body)["data"]
    assert [k["id"] for k in listed] == [made["id"]] and key not in orjson.dumps(listed).decode()

    revoked = await call(relay, "DELETE", f"/v1/keys/{made['id']}")
    assert orjson.loads(revoked.body)["state"] == "revoked"
    refused = await on_route(relay, "chat", key)
    assert refused.status == 401 and error_of(refused)["code"] == "key_revoked"
    assert key[:11] in error_of(refused)["message"] and key not in error_of(refused)["message"]
    await relay.shutdown()
    rows = relay.ledger.rows()
    assert [(r.caller, r.endpoint, r.status) for r in rows if r.endpoint == "chat.completions"] == [
        ("ada", "chat.completions", 200), ("anonymous", "chat.completions", 401)]
    assert len(upstream.requests) == 1


async def test_rotate_replaces_the_secret_and_expiry_ends_a_key(upstream, relays):
    relay = relays(keys_config(upstream))
    old, made = await create_key(relay)
    rotated = await call(relay, "POST", f"/v1/keys/{made['id']}", {"action": "rotate"})
    assert rotated.status == 201
    new = orjson.loads(rotated.body)["key"]
    assert new != old and orjson.loads(rotated.body)["id"] == made["id"]
    assert (await on_route(relay, "chat", old)).status == 401
    assert (await on_route(relay, "chat", new)).status == 200

    await call(relay, "PATCH", f"/v1/keys/{made['id']}", {"expires_at": time.time() - 1})
    expired = await on_route(relay, "chat", new)
    assert expired.status == 401 and error_of(expired)["code"] == "key_expired"
    assert (await call(relay, "PATCH", f"/v1/keys/{made['id']}", {"rpm": -1})).status == 400
    assert (await call(relay, "PATCH", "/v1/keys/key_nope", {"rpm": 1})).status == 404


async def test_only_admin_callers_manage_keys(upstream, relays):
    relay = relays(keys_config(upstream))
    key, _ = await create_key(relay)
    for method, path in (("GET", "/v1/keys"), ("POST", "/v1/keys"), ("GET", "/v1/key_limits")):
        refused = await call(relay, method, path, {"owner": "eve"}, key=key)
        assert refused.status == 403, (method, path)
    assert (await call(relay, "GET", "/v1/keys", key="not-a-key")).status == 401
    unmanaged = relays(keys_config(upstream, storage={"keys": ""}))
    assert (await call(unmanaged, "GET", "/v1/keys")).status == 404


@pytest.mark.parametrize("route", list(ROUTES))
async def test_every_route_enforces_the_keys_models(upstream, relays, route):
    relay = relays(keys_config(upstream))
    key, _ = await create_key(relay, models=["test-*", "emb-*", "claude-*"])
    allowed = await on_route(relay, route, key)
    assert allowed.status == 200, allowed.body
    other = "other-model"
    refused = await on_route(relay, route, key, other)
    assert refused.status == 403, refused.body
    assert "other-model" in error_of(refused)["message"]
    sent = len(upstream.requests)
    await on_route(relay, route, key, other)
    assert len(upstream.requests) == sent  # nothing refused reaches the provider


@pytest.mark.parametrize("route", list(ROUTES))
@pytest.mark.parametrize("whose", ["key", "owner", "team"])
async def test_every_route_enforces_a_spent_budget_of_key_owner_and_team(upstream, relays, route, whose):
    relay = relays(keys_config(upstream))
    fields = {"team": "research"}
    if whose == "key":
        fields["daily"] = "0"
    key, _ = await create_key(relay, **fields)
    if whose != "key":
        subject = "owner:ada" if whose == "owner" else "team:research"
        assert (await call(relay, "PUT", f"/v1/key_limits/{subject}", {"monthly": "0"})).status == 200
    refused = await on_route(relay, route, key)
    assert refused.status == 429, refused.body
    assert "budget" in error_of(refused)["message"]
    assert upstream.requests == []


async def test_a_keys_budget_is_spent_by_its_requests_and_then_refuses(upstream, relays):
    relay = relays(keys_config(upstream))
    key, made = await create_key(relay, daily="0.0005")
    statuses = [(await on_route(relay, "chat", key)).status for _ in range(12)]
    assert statuses[0] == 200 and statuses[-1] == 429 and statuses.count(429) == 12 - statuses.index(429)
    spent = sum(r.cost_usd for r in relay.ledger.rows() if r.status == 200)
    assert spent <= 0.0005 + 0.0002  # at most the last admitted request's estimate error over
    other, _ = await create_key(relay)  # the owner's other key has its own key budget
    assert (await on_route(relay, "chat", other)).status == 200


async def test_the_strictest_rate_limit_of_key_owner_and_team_wins(upstream, relays):
    relay = relays(keys_config(upstream))
    first, _ = await create_key(relay, rpm=100, team="research")
    second, _ = await create_key(relay, rpm=100, team="research")
    await call(relay, "PUT", "/v1/key_limits/owner:ada", {"rpm": 2})
    await call(relay, "PUT", "/v1/key_limits/team:research", {"rpm": 3})
    assert [(await on_route(relay, "chat", k)).status for k in (first, second)] == [200, 200]
    refused = await on_route(relay, "chat", first)
    assert refused.status == 429 and "retry-after" in refused.headers
    # another owner on the same team is held by the team's limit, not ada's
    grace, _ = await create_key(relay, "grace", team="research")
    assert (await on_route(relay, "chat", grace)).status == 200
    assert (await on_route(relay, "chat", grace)).status == 429


async def test_a_users_session_and_keys_share_the_users_budget(upstream, relays):
    async def session(request):
        return Caller(id="ada") if request.headers.get("x-session") == "ada" else None

    relay = relays(keys_config(upstream), auth=session)
    key, _ = await create_key(relay)
    await call(relay, "PUT", "/v1/key_limits/owner:ada", {"daily": "0.0005"})
    statuses = [(await on_route(relay, "chat", key)).status for _ in range(12)]
    assert statuses[0] == 200 and statuses[-1] == 429
    from asgi_ai_relay import RelayRequest

    body = orjson.dumps({"model": "test-model", **ROUTES["chat"][1]("test-model")})
    by_session = await relay.handle(RelayRequest("POST", "/v1/chat/completions", {"x-session": "ada"}, body))
    assert by_session.status == 429 and "'ada'" in error_of(by_session)["message"]


async def test_a_host_hook_may_return_a_caller_with_its_own_limits(upstream, relays):
    async def hook(request):
        return limited_caller("bob", models=["test-*"], rpm=1)

    relay = relays(keys_config(upstream), auth=hook)
    ok = await on_route(relay, "chat", "host-session-token")
    assert ok.status == 200, ok.body
    assert (await on_route(relay, "chat", "host-session-token")).status == 429
    assert (await on_route(relay, "chat", "host-session-token", "other-model")).status == 403


async def test_the_store_keeps_digests_only_and_hmac_under_a_secret(upstream, relays, tmp_path, monkeypatch):
    monkeypatch.setenv("RELAY_KEYS_SECRET", "pepper")
    path = tmp_path / "keys.db"
    relay = relays(keys_config(upstream, f"sqlite:///{path}", keys={"secret": "env:RELAY_KEYS_SECRET"}))
    key, made = await create_key(relay)
    assert (await on_route(relay, "chat", key)).status == 200
    stored = path.read_bytes()
    assert key.encode() not in stored and key[11:].encode() not in stored
    assert Hasher("pepper").digest(key).encode() in stored and Hasher().digest(key).encode() not in stored
    await relay.shutdown()
    unpeppered = relays(keys_config(upstream, f"sqlite:///{path}"))
    assert (await on_route(unpeppered, "chat", key)).status == 401


@pytest.mark.parametrize("route", ["chat", "messages"])
async def test_models_route_stays_open_and_the_key_caller_id_is_the_owner(upstream, relays, route):
    relay = relays(keys_config(upstream))
    key, made = await create_key(relay, "carol")
    assert (await on_route(relay, route, key, model_for(route))).status == 200
    await relay.shutdown()
    assert {r.caller for r in relay.ledger.rows() if r.model == "test-model"} == {"carol"}
    assert ADMIN_KEY not in orjson.dumps([r.as_dict() for r in relay.ledger.rows()], default=str).decode()


async def test_the_model_list_shows_a_key_only_its_models(upstream, relays):
    relay = relays(keys_config(upstream))
    key, _ = await create_key(relay, models=["test-*"])
    from tests.relay_calls import get

    listed = orjson.loads((await get(relay, "/v1/models", key=key)).body)["data"]
    assert [m["id"] for m in listed] == ["test-model"]
    assert len(orjson.loads((await get(relay, "/v1/models", key=ADMIN_KEY)).body)["data"]) > 1


@pytest.mark.parametrize("body", [
    {"owner": ""}, {"owner": "ada", "rpm": "many"}, {"owner": "ada", "rpm": True}, {"owner": "ada", "daily": "lots"},
    {"owner": "ada", "daily": "-1"}, {"owner": "ada", "models": [1]}, {"owner": "ada", "expires_at": "someday"},
    {"owner": "ada", "enabled": "yes"}, {"owner": "ada", "metadata": []}, {"owner": "ada", "colour": "red"},
    {"owner": "ada", "name": 5}, {"owner": ["ada"]},
])
async def test_bad_key_fields_are_refused_naming_the_field(upstream, relays, body):
    relay = relays(keys_config(upstream))
    refused = await call(relay, "POST", "/v1/keys", body)
    assert refused.status == 400, refused.body
    assert error_of(refused)["type"] == "invalid_request_error"
    assert (await call(relay, "GET", "/v1/keys")).body == b'{"object":"list","data":[]}'


async def test_bad_json_and_bad_subjects_are_refused(upstream, relays):
    relay = relays(keys_config(upstream))
    from asgi_ai_relay import RelayRequest

    raw = await relay.handle(RelayRequest("POST", "/v1/keys", {"authorization": f"Bearer {ADMIN_KEY}"}, b"{nope"))
    assert raw.status == 400
    assert (await call(relay, "PUT", "/v1/key_limits/group:x", {"rpm": 1})).status == 400
    _, made = await create_key(relay)
    assert (await call(relay, "POST", f"/v1/keys/{made['id']}", {"action": "explode"})).status == 400


async def test_hook_budgets_count_once_caller_limits_are_on(upstream, relays, caplog):
    async def hook(request):
        return limited_caller("dan", daily="0")

    off = relays(keys_config(upstream, storage={"keys": ""}), auth=hook)
    with caplog.at_level("WARNING", logger="asgi_ai_relay"):
        assert (await on_route(off, "chat", "host-token")).status == 200
        assert (await on_route(off, "chat", "host-token")).status == 200
    assert sum("keys.caller_limits" in r.getMessage() for r in caplog.records) == 1
    on = relays(keys_config(upstream, storage={"keys": ""}, keys={"caller_limits": True}), auth=hook)
    assert (await on_route(on, "chat", "host-token")).status == 429
