"""The key stores behind ``storage.keys`` (memory, SQLite, PostgreSQL, Redis: real servers), a
change seen by a second relay on the same store (within the lookup TTL; at once through Redis),
and the ``python -m asgi_ai_relay.keys`` command."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import orjson
import pytest

from asgi_ai_relay.keys import Hasher, KeyAdmin, keys_from_uri
from tests.keys_helpers import call, create_key, error_of, keys_config, on_route
from tests.relay_calls import relays, until  # noqa: F401 - the fixture

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(params=["memory", "sqlite", "postgres", "redis"])
def store_uri(request, tmp_path):
    unique = uuid.uuid4().hex[:12]
    if request.param == "memory":
        return "memory://"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/keys.db"
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_url")
        import psycopg

        with psycopg.connect(url, autocommit=True) as db:
            db.execute("DROP TABLE IF EXISTS relay_keys")
            db.execute("DROP TABLE IF EXISTS relay_key_limits")
        return url
    return f"{request.getfixturevalue('redis_url')}?prefix=test-keys-{unique}"


async def test_a_store_keeps_records_limits_and_finds_keys_by_digest(store_uri):
    store = keys_from_uri(store_uri)
    admin = KeyAdmin(store, Hasher())
    try:
        record, key = await admin.create("ada", {"team": "research", "models": ["gpt-*"], "rpm": 5, "daily": "1.5",
                                                 "metadata": {"purpose": "ci"}})
        other, _ = await admin.create("bob", {})
        found = await store.by_digest(Hasher().digest(key))
        assert found == record and found.quota.daily is not None and str(found.quota.daily) == "1.5"
        assert await store.by_digest(Hasher().digest(key + "x")) is None
        assert [r.id for r in await store.records(owner="ada")] == [record.id]
        assert sorted(r.id for r in await store.records()) == sorted([record.id, other.id])
        assert [r.id for r in await store.records(team="research")] == [record.id]
        rotated, new = await admin.rotate(record.id)
        assert await store.by_digest(Hasher().digest(key)) is None
        assert (await store.by_digest(Hasher().digest(new))).id == record.id
        assert (await admin.revoke(record.id)).state() == "revoked"
        await admin.set_limits("team:research", {"monthly": "10"})
        await admin.set_limits("team:research", {"rpm": 7})
        team = await store.limits("team:research")
        assert team.quota.rpm == 7 and str(team.quota.monthly) == "10"
        assert [s.subject for s in await store.all_limits()] == ["team:research"]
        with pytest.raises(ValueError, match="subject"):
            await admin.set_limits("group:x", {"rpm": 1})
    finally:
        await store.aclose()


async def test_a_revocation_reaches_a_second_relay_on_the_same_sqlite_file_within_the_ttl(upstream, relays, tmp_path):
    config = keys_config(upstream, f"sqlite:///{tmp_path}/keys.db", keys={"cache_ttl": 30})
    first, second = relays(config), relays(config)
    key, made = await create_key(first)
    assert (await on_route(second, "chat", key)).status == 200  # second now caches the lookup
    clock = [0.0]
    second.key_directory.clock = lambda: clock[0]
    second.key_directory.invalidate()
    assert (await on_route(second, "chat", key)).status == 200
    await call(first, "DELETE", f"/v1/keys/{made['id']}")
    assert (await on_route(first, "chat", key)).status == 401  # at once where it was revoked
    clock[0] = 29.0
    assert (await on_route(second, "chat", key)).status == 200  # the other worker, within its TTL
    clock[0] = 30.0
    refused = await on_route(second, "chat", key)
    assert refused.status == 401 and error_of(refused)["code"] == "key_revoked"


async def test_a_revocation_reaches_a_second_relay_on_redis_at_once(upstream, relays, redis_url):
    store = f"{redis_url}?prefix=test-keys-{uuid.uuid4().hex[:12]}"
    config = keys_config(upstream, store, keys={"cache_ttl": 3600})
    first, second = relays(config), relays(config)
    await second.key_directory.start()
    assert second.key_directory.listening.is_set()
    key, made = await create_key(first)
    assert (await on_route(second, "chat", key)).status == 200
    seen = second.key_directory.pushed
    await call(first, "DELETE", f"/v1/keys/{made['id']}")
    await until(lambda: second.key_directory.pushed > seen)
    refused = await on_route(second, "chat", key)
    assert refused.status == 401 and error_of(refused)["code"] == "key_revoked"
    # an owner's limits too
    other, _ = await create_key(first)
    assert (await on_route(second, "chat", other)).status == 200
    seen = second.key_directory.pushed
    await call(first, "PUT", "/v1/key_limits/owner:ada", {"daily": "0"})
    await until(lambda: second.key_directory.pushed > seen)
    assert (await on_route(second, "chat", other)).status == 429


def keys_cli(*args, check=True):
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'integrations'}"}
    return subprocess.run([sys.executable, "-m", "asgi_ai_relay.keys", *args], capture_output=True, text=True,
                          env=env, timeout=60, check=check)


async def test_the_command_manages_keys_a_relay_then_honours(upstream, relays, tmp_path):
    uri = f"sqlite:///{tmp_path}/keys.db"
    made = keys_cli("--store", uri, "create", "--owner", "ada", "--models", "test-*", "--rpm", "1", "--name", "cli")
    key = next(line.strip() for line in made.stdout.splitlines() if line.strip().startswith("rk-"))
    assert made.stdout.count(key) == 1
    key_id = orjson.loads(made.stdout[made.stdout.index("{"):])["id"]
    listed = orjson.loads(keys_cli("--store", uri, "list").stdout)
    assert [k["id"] for k in listed] == [key_id] and key not in keys_cli("--store", uri, "list").stdout
    assert key.encode() not in (tmp_path / "keys.db").read_bytes()

    relay = relays(keys_config(upstream, uri, keys={"cache_ttl": 0.001}))
    assert (await on_route(relay, "chat", key)).status == 200
    assert (await on_route(relay, "chat", key)).status == 429  # rpm 1
    assert (await on_route(relay, "chat", key, "other-model")).status == 403
    keys_cli("--store", uri, "set", key_id, "--rpm", "0", "--models", "")
    relay.key_directory.invalidate()
    assert (await on_route(relay, "chat", key, "other-model")).status == 200

    rotated = keys_cli("--store", uri, "rotate", key_id).stdout
    new = next(line.strip() for line in rotated.splitlines() if line.strip().startswith("rk-"))
    keys_cli("--store", uri, "limits", "owner:ada", "--daily", "0")
    relay.key_directory.invalidate()
    assert (await on_route(relay, "chat", key)).status == 401
    assert (await on_route(relay, "chat", new)).status == 429  # ada's daily budget of 0
    keys_cli("--store", uri, "revoke", key_id)
    relay.key_directory.invalidate()
    assert error_of(await on_route(relay, "chat", new))["code"] == "key_revoked"
    missing = keys_cli("--store", uri, "revoke", "key_nope", check=False)
    assert missing.returncode == 1 and "key_nope" in missing.stderr
    assert keys_cli("create", check=False).returncode == 2


async def test_an_unreachable_store_serves_the_last_lookup_and_refuses_unknown_keys_with_503(upstream, relays, tmp_path):
    import shutil

    folder = tmp_path / "store"
    folder.mkdir()
    relay = relays(keys_config(upstream, f"sqlite:///{folder}/keys.db", keys={"cache_ttl": 10}))
    key, _ = await create_key(relay)
    assert (await on_route(relay, "chat", key)).status == 200
    shutil.rmtree(folder)
    clock = [1e9]
    relay.key_directory.clock = lambda: clock[0]
    assert (await on_route(relay, "chat", key)).status == 200  # past its TTL: the last lookup serves
    unknown = await on_route(relay, "chat", "rk-" + "x" * 43)
    assert unknown.status == 503 and "retry-after" in unknown.headers
