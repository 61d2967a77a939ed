"""Cost on every row (streamed, cached, partially cached, abandoned, a failed attempt the
provider billed, embeddings) and the usage API's totals equal to the sum of the rows, to the
last Decimal digit, in USD and the reporting currency, on every ledger backend; ledgers written
by an older version gain the new columns when opened."""

from __future__ import annotations

import sqlite3
import uuid
from decimal import Decimal

import orjson
import pytest

from asgi_ai_relay.storage import LedgerQuery, LedgerRow, aggregate, ledger_from_uri
from asgi_ai_relay.storage import hourly
from asgi_ai_relay.storage.base import COUNT_COLUMNS, LEDGER_COLUMNS
from tests.cost_shapes import an_broken_after_start, an_stream, ge_stream, oa_whole
from tests.relay_calls import get, pieces, relays  # noqa: F401 - fixture
from tests.test_cost_truth import AN_DELTA, AN_START, GE_AUDIO, OA_REASONING, post, relay_config

D = Decimal
RATE = D("7.3")
#: The columns an older version wrote (before the token classes, tier, rule, usage check and route).
NEW = ("cache_write_5m_tokens", "cache_write_1h_tokens", "reasoning_tokens", "audio_input_tokens", "image_input_tokens",
       "web_search_requests", "service_tier", "price_rule", "counted_prompt_tokens", "usage_flag", "route")
#: (the columns before those: every column added since comes after them)
OLD = LEDGER_COLUMNS[:LEDGER_COLUMNS.index(NEW[0])]
#: What that version's per-hour sums were grouped by.
OLD_KEYS = ("endpoint", "caller", "model", "provider")


@pytest.fixture
def ledger_uri(request, tmp_path):
    if request.param == "memory":
        yield "memory://"
    elif request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/cost.db"
    else:
        import psycopg

        url = request.getfixturevalue("postgres_url")
        table = f"relay_usage_{uuid.uuid4().hex}"
        yield f"{url}?table={table}&spool={tmp_path}/spool.db"
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {table}")


def chat(model, text="hello there", **extra):
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


async def traffic(relay, upstream):
    upstream.script(oa_whole(OA_REASONING, "flex"), an_stream(AN_START, AN_DELTA), ge_stream(GE_AUDIO))
    assert (await post(relay, "/v1/chat/completions", chat("m-oa"))).status == 200
    await pieces(await post(relay, "/v1/messages", {**chat("m-an"), "max_tokens": 50, "stream": True}))
    await pieces(await post(relay, "/v1/chat/completions", chat("m-ge", stream=True)))
    for _ in range(2):  # a miss, then a hit
        assert (await post(relay, "/v1/chat/completions", chat("m-oa", "same", temperature=0))).status == 200
    # the caller leaves after the first piece: charged an estimate, flagged estimated
    response = await post(relay, "/v1/chat/completions", chat("m-oa", "word " * 200, stream=True))
    assert await response.stream.__anext__()
    await response.stream.aclose()
    # Anthropic reports the input in message_start, then fails before content: billed, and the
    # request goes on to its fallback
    upstream.script(an_broken_after_start({"input_tokens": 1000, "output_tokens": 1}))
    await pieces(await post(relay, "/v1/chat/completions", chat("m-an-falls-back", stream=True)))
    embedded = await post(relay, "/v1/embeddings", {"model": "text-embedding-3-small", "input": ["one", "two"]})
    assert embedded.status == 200
    assert (await post(relay, "/v1/chat/completions", chat("nope"))).status == 404


def config(upstream, ledger):
    cfg = relay_config(upstream, ledger, pricing={"currency": "CNY", "exchange_rate": str(RATE)})
    cfg["models"]["m-an-falls-back"] = {**cfg["models"]["m-an"], "fallbacks": ["m-oa"]}
    return cfg


@pytest.mark.parametrize("ledger_uri", ["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
async def test_usage_totals_equal_the_rows_to_the_last_digit(upstream, relays, ledger_uri):
    relay = relays(config(upstream, ledger_uri))
    await traffic(relay, upstream)
    relay.ledger.flush()
    rows = relay.ledger.rows()
    assert len(rows) == 9
    flex, split, gemini, miss, hit, abandoned, failed_over, embedding, refused = rows

    assert flex.cost_usd == D("0.003975")  # flex: half of 0.00795
    assert split.cost_usd == D("0.05415")
    assert gemini.cost_usd == D("0.0173")
    assert miss.cost_usd > 0 and (hit.cache_hit, hit.cost_usd, hit.cache_saved_usd) == (True, 0, miss.cost_usd)
    assert (abandoned.status, abandoned.estimated) == (499, True) and abandoned.cost_usd > 0
    attempts = orjson.loads(failed_over.attempt_log)
    assert [a["model"] for a in attempts] == ["m-an-falls-back", "m-oa"]
    assert attempts[0]["cost_usd"] == "0.003015"  # 1000 input tokens at 3, 1 output at 15, per million
    served = D(failed_over.prompt_tokens * 3 + failed_over.completion_tokens * 15) / 10**6
    assert failed_over.cost_usd == served + D("0.003015")
    assert embedding.model == "text-embedding-3-small"
    assert embedding.cost_usd == D(embedding.prompt_tokens) * D("0.02") / 10**6 > 0
    assert (refused.status, refused.cost_usd) == (404, 0)
    assert all(r.cost_usd > 0 for r in rows if r.prompt_tokens and not r.cache_hit)

    report = orjson.loads((await get(relay, "/v1/usage", "group_by=model")).body)
    for summary, selected in [(report, rows), *((g, [r for r in rows if r.model == g["key"]["model"]]) for g in report["groups"])]:
        usd = sum((r.cost_usd for r in selected), D(0))
        assert D(summary["cost_usd"]) == usd
        assert D(summary["cost"]) == usd * RATE
        assert D(summary["cache_saved_usd"]) == sum((r.cache_saved_usd for r in selected), D(0))
        for name in COUNT_COLUMNS:
            assert summary[name] == sum(getattr(r, name) for r in selected), name
        assert summary["usage_flagged_rows"] == sum(r.usage_flag is not None for r in selected)
        assert summary["estimated_rows"] == sum(r.estimated for r in selected)
    assert report["cache_write_1h_tokens"] == 2000 and report["web_search_requests"] == 3


def _old_sqlite(path):
    """A file as the version before the token classes wrote it: its columns, its per-hour
    sums and their trigger, and one row."""
    conn = sqlite3.connect(path, isolation_level=None)
    fixed = ("cost_u", "cost_f", "saved_u", "saved_f")
    conn.execute(f"CREATE TABLE relay_usage (id INTEGER PRIMARY KEY AUTOINCREMENT, {', '.join(OLD)}, "
                 f"{', '.join(f'{name} INTEGER' for name in fixed)})")
    adds = [(name, add) for name, add in hourly._ADDS if name not in hourly._ADDED]
    names = ("hour", *OLD_KEYS, *(name for name, _ in adds))
    conn.execute(f"CREATE TABLE relay_usage_hourly (hour INTEGER NOT NULL, {', '.join(f'{k} TEXT NOT NULL' for k in OLD_KEYS)}, "
                 f"{', '.join(f'{n} INTEGER NOT NULL' for n, _ in adds)}, PRIMARY KEY (hour, {', '.join(OLD_KEYS)})) WITHOUT ROWID")
    conn.execute(
        f"CREATE TRIGGER relay_usage_hourly_add AFTER INSERT ON relay_usage BEGIN INSERT INTO relay_usage_hourly "
        f"({', '.join(names)}) VALUES ({hourly._HOUR.format(r='NEW.')}, {', '.join(f'COALESCE(NEW.{k}, {chr(39) * 2})' for k in OLD_KEYS)}, "
        f"{', '.join(add.format(r='NEW.') for _, add in adds)}) ON CONFLICT (hour, {', '.join(OLD_KEYS)}) DO UPDATE SET "
        f"{', '.join(hourly._set(n) for n, _ in adds)}; END")
    row = LedgerRow(ts=7200.5, request_id="old", caller="a", endpoint="chat.completions", model="m", prompt_tokens=10,
                    completion_tokens=5, cost_usd=D("0.000125"))
    values = [getattr(row, c) for c in OLD]
    values[OLD.index("cost_usd")], values[OLD.index("cache_saved_usd")] = "0.000125", "0"
    conn.execute(f"INSERT INTO relay_usage ({', '.join(OLD)}, {', '.join(fixed)}) VALUES ({', '.join('?' for _ in OLD)}, 125, 0, 0, 0)",
                 values)
    conn.close()


NEWER = LedgerRow(ts=7300.0, request_id="new", caller="a", endpoint="chat.completions", model="m", prompt_tokens=100,
                  completion_tokens=50, cached_tokens=10, cost_usd=D("0.0011"), cache_write_5m_tokens=20,
                  cache_write_1h_tokens=30, reasoning_tokens=40, audio_input_tokens=5, web_search_requests=2,
                  service_tier="flex", price_rule="tier:flex", counted_prompt_tokens=99, usage_flag="prompt",
                  route="POST /ai/v9/unknown")


def _check_migrated(ledger):
    ledger.record(NEWER)
    old, new = ledger.rows()
    assert (old.request_id, old.prompt_tokens, old.cost_usd, old.reasoning_tokens, old.usage_flag, old.route) == (
        "old", 10, D("0.000125"), 0, None, None)
    assert new == NEWER
    for query in (LedgerQuery(), LedgerQuery(since=0, until=86400)):  # rows, and (SQLite) the per-hour sums
        (totals,) = aggregate(ledger, query, latencies=False).values()
        assert (totals.requests, totals.prompt_tokens, totals.cost_usd) == (2, 110, D("0.001225"))
        assert (totals.cache_write_5m_tokens, totals.cache_write_1h_tokens, totals.reasoning_tokens) == (20, 30, 40)
        assert (totals.audio_input_tokens, totals.web_search_requests, totals.usage_flagged) == (5, 2, 1)


def test_an_older_sqlite_ledger_gains_the_new_columns(tmp_path):
    path = tmp_path / "old.db"
    _old_sqlite(path)
    ledger = ledger_from_uri(f"sqlite:///{path}")
    try:
        _check_migrated(ledger)
    finally:
        ledger.close()
    columns = {r[1] for r in sqlite3.connect(path).execute("PRAGMA table_info(relay_usage)")}
    assert set(NEW) <= columns


@pytest.mark.postgres
def test_an_older_postgresql_ledger_gains_the_new_columns(postgres_url, tmp_path):
    import psycopg

    from asgi_ai_relay.storage.postgres_schema import _TYPES

    table = f"relay_usage_{uuid.uuid4().hex}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        columns = ", ".join(f"{name} {_TYPES.get(name, 'TEXT')}" for name in ("row_id", *OLD))
        conn.execute(f"CREATE TABLE {table} (id BIGSERIAL PRIMARY KEY, {columns})")
        conn.execute(f"INSERT INTO {table} (row_id, ts, request_id, caller, endpoint, model, prompt_tokens, completion_tokens, "
                     "cost_usd, cache_saved_usd, stream, cache_hit, estimated, status, attempts) "
                     "VALUES ('x-0', 7200.5, 'old', 'a', 'chat.completions', 'm', 10, 5, 0.000125, 0, false, false, false, 200, 0)")
    ledger = ledger_from_uri(f"{postgres_url}?table={table}&spool={tmp_path}/spool.db")
    try:
        _check_migrated(ledger)
    finally:
        ledger.close()
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {table}")


@pytest.mark.postgres
def test_rows_an_older_version_spooled_are_written_with_the_new_columns(postgres_url, tmp_path):
    """Rows spooled while PostgreSQL was down, by a version with fewer columns, are written
    when a newer version reaches the database (completed with the new columns' defaults)."""
    import psycopg

    from asgi_ai_relay.storage.spool import Spool

    table = f"relay_usage_{uuid.uuid4().hex}"
    path = str(tmp_path / "spool.db")
    old = Spool(path, money=tuple(1 + OLD.index(c) for c in ("cost_usd", "cache_saved_usd")))
    row = LedgerRow(ts=7200.5, request_id="spooled", caller="a", endpoint="chat.completions", model="m",
                    prompt_tokens=10, completion_tokens=5, cost_usd=D("0.000125"))
    old.add([("old-0", *(getattr(row, c) for c in OLD))])
    old.close()
    ledger = ledger_from_uri(f"{postgres_url}?table={table}&spool={path}")
    try:
        assert ledger.wait_ready(10)
        ledger.record(NEWER)
        ledger.flush()
        assert [(r.request_id, r.cost_usd, r.reasoning_tokens) for r in ledger.rows()] == [
            ("spooled", D("0.000125"), 0), ("new", D("0.0011"), 40)]
    finally:
        ledger.close()
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {table}")


async def test_a_comparison_list_prices_each_class(upstream, relays):
    """``compare=LIST`` prices the same classes at the list's rates: cache writes at 5 minutes
    and 1 hour, cache reads, output and searches, not all input at one price."""
    from tests.cost_shapes import an_whole
    from tests.test_cost_truth import AN_FULL

    direct = {"m-an": {"input": 1, "output": 2, "cached_input": "0.1", "cache_write": "1.25", "cache_write_1h": 2,
                       "web_search": "0.005"}}
    relay = relays(relay_config(upstream, pricing={"lists": {"direct": direct}}))
    upstream.script(an_whole(AN_FULL))
    assert (await post(relay, "/v1/messages", {**chat("m-an"), "max_tokens": 50})).status == 200
    report = orjson.loads((await get(relay, "/v1/usage", "compare=direct")).body)
    # (100 * 1 + 2000 * 0.1 + 1000 * 1.25 + 2000 * 2 + 500 * 2) / 1e6 + 3 * 0.005
    assert D(report["compare"]["cost_usd"]) == D("0.02155")
    assert D(report["compare"]["savings_usd"]) == D("0.02155") - D("0.05415")
