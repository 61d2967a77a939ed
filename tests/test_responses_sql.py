"""Stored Responses in SQLite and PostgreSQL (``storage.responses``): per caller, with a TTL,
shared by two relay instances on the same file or database (two workers' worth)."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid

import openai
import pytest
from starlette.applications import Starlette

from asgi_ai_relay import Relay, RelayMiddleware
from asgi_ai_relay.errors import ConfigurationError, StorageError
from asgi_ai_relay.storage import responses_sql
from asgi_ai_relay.storage.responses import response_store_from_uri
from asgi_ai_relay.storage.responses_sql import SQLResponseStore
from tests.live import LiveServer
from tests.test_formats_e2e import config
from tests.test_responses import echo

KEYS = [{"key": "key-alice-0123456789", "caller": "alice"}, {"key": "key-bob-0123456789", "caller": "bob"}]


@pytest.fixture(params=["sqlite", "postgres"])
def store_uri(request, tmp_path):
    """A store URI of each backend, with a table of this test's own; its rows, read directly."""
    table = f"responses_{uuid.uuid4().hex[:12]}"
    if request.param == "sqlite":
        path = tmp_path / "responses.db"
        yield f"sqlite:///{path}?table={table}", lambda: sqlite3.connect(path).execute(f"SELECT caller, id FROM {table}").fetchall()
        return
    import psycopg

    url = request.getfixturevalue("postgres_url")

    def rows():
        with psycopg.connect(url) as conn:
            return conn.execute(f"SELECT caller, id FROM {table}").fetchall()

    yield f"{url}?table={table}", rows
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table}")


class Clock:
    def __init__(self) -> None:
        self.now = 1_900_000_000.0

    def time(self) -> float:
        return self.now


def test_two_relays_on_one_store_share_each_callers_responses_only(upstream, store_uri):
    uri, rows = store_uri
    settings = {**config(upstream), "api_keys": KEYS, "storage": {"ledger": "memory://", "responses": uri}}
    with LiveServer(RelayMiddleware(Starlette(), relay=Relay(settings))) as one, \
            LiveServer(RelayMiddleware(Starlette(), relay=Relay(settings))) as two:
        def client(server, key):
            return openai.OpenAI(base_url=f"{server.url}/ai/v1", api_key=key, max_retries=0)

        alice_one, alice_two, bob_two = client(one, KEYS[0]["key"]), client(two, KEYS[0]["key"]), client(two, KEYS[1]["key"])
        first = alice_one.responses.create(model="m-an", input="remember this")
        follow = alice_two.responses.create(model="m-an", input="and this", previous_response_id=first.id)
        assert follow.output_text == echo("and this")
        sent = upstream.last_request.json["messages"]
        assert [m["role"] for m in sent] == ["user", "assistant", "user"]
        with pytest.raises(openai.NotFoundError):
            bob_two.responses.retrieve(first.id)
        with pytest.raises(openai.NotFoundError):
            bob_two.responses.create(model="m-an", input="steal", previous_response_id=first.id)
        assert alice_two.responses.retrieve(first.id).output_text == echo("remember this")
        with alice_one.responses.stream(model="m-oa", input="streamed", previous_response_id=follow.id) as events:
            streamed = events.get_final_response()
        # The final event went out once the response was stored: the other worker finds it at once.
        assert alice_two.responses.retrieve(streamed.id).output_text == echo("streamed")
        assert sorted(rows()) == sorted([("alice", first.id), ("alice", follow.id), ("alice", streamed.id)])
        alice_two.responses.delete(first.id)
        with pytest.raises(openai.NotFoundError):
            alice_one.responses.retrieve(first.id)
        bob_two.responses.create(model="m-oa", input="forget me", store=False)
        assert len(rows()) == 2  # store: false kept nothing


def test_records_are_per_caller_and_expire(store_uri, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(responses_sql, "time", clock)
    uri, rows = store_uri
    store = response_store_from_uri(uri.replace("?", "?ttl=60&"))

    async def run():
        await store.put("alice", "resp_1", {"response": {"id": "resp_1", "who": "alice"}})
        await store.put("bob", "resp_1", {"response": {"id": "resp_1", "who": "bob"}})
        assert (await store.get("alice", "resp_1"))["response"]["who"] == "alice"
        assert (await store.get("bob", "resp_1"))["response"]["who"] == "bob"
        assert await store.get("carol", "resp_1") is None
        assert not await store.delete("carol", "resp_1")
        clock.now += 59
        assert await store.get("alice", "resp_1") is not None
        clock.now += 2
        assert await store.get("alice", "resp_1") is None
        assert not await store.delete("alice", "resp_1")  # expired: as if never stored
        await store.put("alice", "resp_2", {"response": {}})  # a later write sweeps expired rows
        for _ in range(responses_sql._SWEEP_EVERY - 1):
            await store.put("alice", "resp_2", {"response": {}})
        assert rows() == [("alice", "resp_2")]
        await store.aclose()

    asyncio.run(run())


def test_bad_options_and_an_unreachable_database(tmp_path):
    for bad in ("sqlite:///x.db?ttl=0", "sqlite:///x.db?ttl=soon", "sqlite:///x.db?table=a;drop"):
        with pytest.raises(ConfigurationError, match="storage.responses"):
            response_store_from_uri(bad)
    store = SQLResponseStore.postgres("postgresql://nobody@127.0.0.1:1/none?connect_timeout=1")

    async def run():
        with pytest.raises(StorageError, match="storage.responses"):
            await store.get("alice", "resp_1")

    asyncio.run(run())
