"""The ledger: one row per answer under load, survival across restarts, PostgreSQL for real."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from decimal import Decimal

import pytest

from asgi_ai_relay.storage import LEDGER_COLUMNS, LedgerQuery, LedgerRow, ledger_from_uri
from tests.conftest import make_config
from tests.fake_upstream import plan_reply
from tests.relay_calls import relays, chat, get, pieces


def body(i: int, stream: bool = False) -> dict:
    return {"model": "test-model", "messages": [{"role": "user", "content": f"question number {i}"}], "stream": stream}


async def test_200_concurrent_requests_make_200_rows(upstream, tmp_path, relays):
    relay = relays(make_config(upstream, storage={"ledger": f"sqlite:///{tmp_path}/usage.db"}))

    async def one(i: int):
        response = await chat(relay, body(i, stream=i % 4 == 0))
        if response.stream is not None:
            await pieces(response)
        return response.status

    statuses = await asyncio.gather(*(one(i) for i in range(200)))
    await relay.shutdown()
    assert statuses == [200] * 200
    rows = relay.ledger.rows()
    assert len(rows) == 200 and len({r.request_id for r in rows}) == 200
    assert sum(r.stream for r in rows) == 50
    expected = sum(plan_reply(body(i), "openai").completion_tokens for i in range(200))
    assert sum(r.completion_tokens for r in rows) == expected


async def test_ledger_survives_restart(upstream, tmp_path, relays):
    uri = f"sqlite:///{tmp_path}/usage.db"
    first = relays(make_config(upstream, storage={"ledger": uri}))
    for i in range(3):
        await chat(first, body(i))
    await first.shutdown()  # flushes the writer thread
    second = relays(make_config(upstream, storage={"ledger": uri}))
    await chat(second, body(3))
    report = await get(second, "/v1/usage")
    await second.shutdown()
    rows = [r for r in ledger_from_uri(uri).rows() if r.endpoint == "chat.completions"]
    assert len(rows) == 4 and [r.model for r in rows] == ["test-model"] * 4
    assert sum(r.cost_usd for r in rows) > 0
    import orjson

    assert orjson.loads(report.body)["requests"] == 4


def test_old_sqlite_file_gains_new_columns(tmp_path):
    path = tmp_path / "old.db"
    old_columns = [c for c in LEDGER_COLUMNS if c != "cache_saved_usd"]
    with sqlite3.connect(path) as conn:
        conn.execute(f"CREATE TABLE relay_usage (id INTEGER PRIMARY KEY AUTOINCREMENT, {', '.join(old_columns)})")
        conn.execute(
            "INSERT INTO relay_usage (ts, request_id, caller, endpoint, cost_usd, stream, cache_hit, estimated)"
            " VALUES (1, 'r', 'c', 'chat.completions', '0.5', 0, 0, 0)"
        )
    ledger = ledger_from_uri(f"sqlite:///{path}")
    ledger.record(LedgerRow(ts=2, request_id="s", caller="c", endpoint="chat.completions", cache_saved_usd=Decimal("0.25")))
    rows = ledger.rows()
    ledger.close()
    assert [(r.request_id, r.cost_usd, r.cache_saved_usd) for r in rows] == [("r", Decimal("0.5"), 0), ("s", 0, Decimal("0.25"))]


@pytest.fixture
def pg_uri(postgres_url):
    import psycopg

    table = f"relay_usage_{uuid.uuid4().hex}"
    yield f"{postgres_url}?table={table}", table
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table}")


@pytest.mark.postgres
async def test_postgres_ledger(upstream, pg_uri, relays):
    uri, table = pg_uri
    keys = [{"key": "key-a", "caller": "a"}, {"key": "key-admin", "caller": "ops", "admin": True}]
    relay = relays(make_config(upstream, storage={"ledger": uri}, api_keys=keys))
    await asyncio.gather(*(chat(relay, body(i), key="key-a") for i in range(20)))
    await pieces(await chat(relay, body(99, stream=True), key="key-admin"))
    await relay.shutdown()

    ledger = ledger_from_uri(uri)  # a restart: a new connection to the same table
    try:
        rows = ledger.rows()
        assert len(rows) == 21 and ledger.table == table
        assert isinstance(rows[0].cost_usd, Decimal)
        mine = ledger.query(LedgerQuery(caller="a"))
        assert len(mine) == 20
        expected = sum(
            Decimal(plan_reply(body(i), "openai").prompt_tokens) * Decimal("2.5") / 10**6
            + Decimal(plan_reply(body(i), "openai").completion_tokens) * 10 / 10**6
            for i in range(20)
        )
        assert sum(r.cost_usd for r in mine) == expected
        later = ledger.query(LedgerQuery(since=rows[-1].ts))
        assert rows[-1].request_id in {r.request_id for r in later}
    finally:
        ledger.close()


@pytest.mark.postgres
def test_postgres_table_name_is_checked(postgres_url):
    from asgi_ai_relay.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="plain identifier"):
        ledger_from_uri(f"{postgres_url}?table=x;drop")


def test_sqlite_rows_with_nulls_in_different_columns_come_back_whole_and_in_order(tmp_path):
    """The writer inserts runs of rows with their NULLs in the same columns by a statement of the
    others: rows of every pattern, interleaved, come back exactly as recorded, in order."""
    ledger = ledger_from_uri(f"sqlite:///{tmp_path / 'usage.db'}")
    recorded = []
    for i in range(60):
        recorded.append(LedgerRow(
            ts=1_796_137_200.0 + i, request_id=f"r{i}", caller="c", endpoint="chat.completions",
            model=None if i % 3 == 0 else "m", provider=None if i % 5 == 0 else "p",
            error_type="upstream_error" if i % 4 == 0 else None, ttfb_ms=None if i % 2 else 1.5 + i,
            counted_prompt_tokens=i if i % 7 == 0 else None, key_id=f"key_{i}" if i % 6 == 0 else None,
            stream=i % 2 == 0, cache_hit=i % 9 == 0, estimated=i % 11 == 0,
            cost_usd=Decimal("1e13") if i == 13 else Decimal(i) / 1000,
        ))
        ledger.record(recorded[-1])
    stored = ledger.rows()
    ledger.close()
    assert stored == recorded
    assert {type(r.stream) for r in stored} == {bool}
