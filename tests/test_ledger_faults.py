"""The ledger under faults: hostile numbers, rows after close, a locked SQLite file, and a
PostgreSQL that stops mid-stream or cannot be reached at start-up (private servers)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
import uuid
from decimal import Decimal

import psycopg
import pytest

from asgi_ai_relay.storage import LedgerRow, health, ledger_from_uri, wait_ready
from asgi_ai_relay.storage.base import MAX_COUNT
from asgi_ai_relay.storage.postgres import PostgresLedger
from tests.conftest import make_config
from tests.private_postgres import Blackhole, PrivatePostgres
from tests.relay_calls import chat, relays  # noqa: F401 (relays: a fixture)


def row(i: int, **fields) -> LedgerRow:
    values = {"ts": 1_750_000_000 + i, "request_id": f"r{i}", "caller": "c", "endpoint": "chat.completions",
              "prompt_tokens": 10, "completion_tokens": 5, "cost_usd": Decimal("0.0001"), "latency_ms": 1.5}
    return LedgerRow(**{**values, **fields})


def until(condition, what: str, limit: float = 60.0) -> None:
    """Wait for ``condition`` (polling), failing after ``limit`` seconds."""
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def ledger_uri(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/u.db"
        return
    url = request.getfixturevalue("postgres_url")
    table = f"relay_usage_{uuid.uuid4().hex}"
    yield f"{url}?table={table}&spool={tmp_path}/spool.db"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table}")


@pytest.mark.parametrize("ledger_uri", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
def test_hostile_numbers_are_clamped_and_later_rows_still_written(ledger_uri):
    ledger = ledger_from_uri(ledger_uri)
    try:
        ledger.record(row(0, prompt_tokens=1e30, completion_tokens=-5, cached_tokens=float("nan")))
        ledger.record(row(1, prompt_tokens=float("inf"), cost_usd=Decimal("NaN"), cache_saved_usd=Decimal(-3)))
        ledger.record(row(2, completion_tokens=2**70, cost_usd=Decimal("-0.5"), latency_ms=float("nan")))
        ledger.record(row(3, cost_usd=Decimal("1E+15")))  # past what a 64-bit sum of micro-dollars holds
        for i in range(4, 10):
            ledger.record(row(i))
        ledger.flush()
        rows = {r.request_id: r for r in ledger.rows()}
        assert sorted(rows) == sorted(f"r{i}" for i in range(10))
        assert (rows["r0"].prompt_tokens, rows["r0"].completion_tokens, rows["r0"].cached_tokens) == (MAX_COUNT, 0, 0)
        assert rows["r1"].prompt_tokens == MAX_COUNT and rows["r1"].cost_usd == 0 and rows["r1"].cache_saved_usd == 0
        assert rows["r2"].completion_tokens == MAX_COUNT and rows["r2"].cost_usd == 0 and rows["r2"].latency_ms == 0
        assert rows["r3"].cost_usd == Decimal("1E+15")
        assert all(rows[f"r{i}"].cost_usd == Decimal("0.0001") for i in range(4, 10))
        assert health(ledger)["dropped"] == 0
    finally:
        ledger.close()


def test_a_row_that_cannot_be_stored_is_dropped_alone_and_counted(tmp_path):
    ledger = ledger_from_uri(f"sqlite:///{tmp_path}/u.db")
    try:
        for i in range(5):
            # A lone surrogate cannot be encoded for SQLite (UnicodeEncodeError, not sqlite3.Error).
            ledger.record(row(i, error_type="bad\ud800" if i == 2 else None))
        ledger.flush()
        ledger.record(row(5))
        ledger.flush()
        assert [r.request_id for r in ledger.rows()] == ["r0", "r1", "r3", "r4", "r5"]
        status = health(ledger)
        assert status["dropped"] == 1 and "UnicodeEncodeError" in status["last_error"] and status["behind"] == 0
    finally:
        ledger.close()


def test_a_row_recorded_after_close_is_written(tmp_path):
    uri = f"sqlite:///{tmp_path}/u.db"
    ledger = ledger_from_uri(uri)
    ledger.record(row(0))
    ledger.close()
    ledger.record(row(1))  # e.g. a request that finished after the host's shutdown hook ran
    ledger.close()
    reopened = ledger_from_uri(uri)
    try:
        assert [r.request_id for r in reopened.rows()] == ["r0", "r1"]
    finally:
        reopened.close()


def test_a_batch_meeting_another_process_lock_is_retried(tmp_path):
    from asgi_ai_relay.storage.sqlite import SQLiteLedger

    path = f"{tmp_path}/u.db"
    ledger = SQLiteLedger(path, busy_timeout=0.1)  # gives up on the lock fast, for the test
    other = sqlite3.connect(path, isolation_level=None)  # another worker, holding the write lock
    try:
        other.execute("BEGIN IMMEDIATE")
        ledger.record(row(0))
        until(lambda: "locked" in (health(ledger)["last_error"] or ""), "the writer to meet the lock")
        other.execute("COMMIT")
        ledger.flush()
        assert [r.request_id for r in ledger.rows()] == ["r0"]
        assert health(ledger)["dropped"] == 0
    finally:
        other.close()
        ledger.close()


def test_a_report_does_not_wait_for_a_writer_stuck_on_a_lock(tmp_path):
    from asgi_ai_relay.config import load_config
    from asgi_ai_relay.report import usage_report
    from asgi_ai_relay.storage import LedgerQuery
    from asgi_ai_relay.storage.sqlite import SQLiteLedger

    path = f"{tmp_path}/u.db"
    ledger = SQLiteLedger(path, busy_timeout=120)  # the writer would wait two minutes for the lock
    other = sqlite3.connect(path, isolation_level=None)
    try:
        ledger.record(row(0))
        ledger.flush()
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        for i in range(1, 4):
            ledger.record(row(i))
        report = usage_report(load_config({}), ledger, LedgerQuery())  # answers while the writer waits
        assert report["requests"] == 1 and report["ledger_behind_rows"] == 3
        other.execute("COMMIT")
        ledger.flush()
        assert [r.request_id for r in ledger.rows()] == ["r0", "r1", "r2", "r3"]
    finally:
        other.close()
        ledger.close()


# -- PostgreSQL outages, on a private server -------------------------------------------------


@pytest.fixture
def private_pg():
    server = PrivatePostgres()
    yield server
    server.remove()


def stored_ids(url: str, table: str) -> list[str]:
    with psycopg.connect(url, autocommit=True) as conn:
        return [r[0] for r in conn.execute(f"SELECT request_id FROM {table} ORDER BY id").fetchall()]


@pytest.mark.postgres
async def test_postgres_stopped_under_a_stream_of_rows_loses_none(private_pg, tmp_path, caplog):
    private_pg.start()
    table = "usage_outage"
    ledger = PostgresLedger(f"{private_pg.url}?table={table}&spool={tmp_path}/spool.db", connect_timeout=2)
    assert await asyncio.to_thread(ledger.wait_ready, 30)
    total = 600
    spooled_at_most = 0
    back = asyncio.Event()

    async def stream():  # at least ``total`` rows, and rows all through the outage however long it takes
        nonlocal total
        i = 0
        while i < total or not back.is_set():
            ledger.record(row(i))
            i += 1
            await asyncio.sleep(0.005)
        total = i

    async def outage():
        nonlocal spooled_at_most
        try:
            await asyncio.sleep(0.5)
            await asyncio.to_thread(private_pg.stop)
            await asyncio.to_thread(until, lambda: ledger.health()["spooled"] > 0, "rows to spool")
            await asyncio.sleep(2)  # the database stays away for a few seconds of traffic
            spooled_at_most = ledger.health()["spooled"]
            assert ledger.health()["ok"] is False and not ledger.wait_ready(0)
            await asyncio.to_thread(private_pg.start)
        finally:
            back.set()

    await asyncio.gather(stream(), outage())
    await asyncio.to_thread(until, lambda: ledger.health()["behind"] == 0 and ledger.health()["ok"], "the spool to drain")
    ids = stored_ids(private_pg.url, table)
    assert spooled_at_most > 0
    assert sorted(ids) == sorted(f"r{i}" for i in range(total))  # each row exactly once
    assert ledger.health()["dropped"] == 0
    # One line when the database went away, one when it came back: not one per batch.
    lines = [r.getMessage() for r in caplog.records if r.name == "asgi_ai_relay" and r.levelno >= 30]
    assert len(lines) == 2 and "unreachable" in lines[0] and "reachable again" in lines[1], lines

    # A spooled row the database already holds (a batch whose commit was lost) is not stored twice.
    again = [(f"replayed-{i}", *(getattr(row(i), c) for c in ledger_columns())) for i in range(3)]
    ledger.spool.add(again)
    ledger.spool.add(again)
    await asyncio.to_thread(until, lambda: ledger.spool.count() == 0, "the replay")
    ids = stored_ids(private_pg.url, table)
    assert len(ids) == total + 3 and sorted(ids) == sorted([*(f"r{i}" for i in range(total)), "r0", "r1", "r2"])
    ledger.close()


def ledger_columns():
    from asgi_ai_relay.storage import LEDGER_COLUMNS

    return LEDGER_COLUMNS


@pytest.mark.postgres
def test_postgres_unreachable_at_start_up_spools_then_flushes(tmp_path):
    hole = Blackhole()  # accepts, never answers: libpq would wait for its whole timeout
    server = PrivatePostgres(port=hole.port)
    table = "usage_late"
    try:
        uri = f"postgresql://postgres@127.0.0.1:{hole.port}/postgres?table={table}&spool={tmp_path}/spool.db"
        ledger = ledger_from_uri(uri)  # returns at once: no connection on the caller's thread
        assert not wait_ready(ledger, 0)
        for i in range(50):
            ledger.record(row(i))
        until(lambda: ledger.health()["spooled"] == 50, "the rows to spool")
        status = ledger.health()
        assert status["ok"] is False and status["behind"] == 50 and status["last_error"]
        hole.close()
        server.start()
        assert wait_ready(ledger, 60)
        until(lambda: ledger.health()["behind"] == 0, "the spool to drain")
        assert stored_ids(server.url, table) == [f"r{i}" for i in range(50)]  # in order, once each
        ledger.record(row(50))
        ledger.flush()
        assert len(ledger.rows()) == 51
        ledger.close()
    finally:
        hole.close()
        server.remove()


@pytest.mark.postgres
def test_rows_spooled_by_a_stopped_process_are_written_by_the_next(private_pg, tmp_path):
    """A ledger closed during an outage leaves its rows in the spool; the next one writes them."""
    table = "usage_restart"
    uri = f"{private_pg.url}?table={table}&spool={tmp_path}/spool.db"
    first = ledger_from_uri(uri)  # the server is not started yet: everything spools
    for i in range(20):
        first.record(row(i))
    first.close()
    first.record(row(20))  # after close: spooled on the caller's thread, never connected there
    assert first.spool.count() == 21
    private_pg.start()
    second = ledger_from_uri(uri)
    try:
        assert wait_ready(second, 60)
        until(lambda: second.health()["behind"] == 0, "the spool to drain")
        assert stored_ids(private_pg.url, table) == [f"r{i}" for i in range(21)]
    finally:
        second.close()


# -- several processes on one ledger ---------------------------------------------------------


def _write_rows(uri: str, worker: int, count: int) -> None:
    async def serve():  # rows recorded from an event loop, as the relay does, in batches
        ledger = ledger_from_uri(uri)
        for i in range(count):
            ledger.record(row(i, request_id=f"w{worker}-{i}", caller=f"c{i % 7}", latency_ms=float(i % 100)))
            if i % 20 == 0:
                await asyncio.sleep(0.002)  # a trickle, as requests come, so the two writers interleave
        ledger.close()

    asyncio.run(serve())


def _two_workers(uri: str, count: int) -> None:
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_write_rows, args=(uri, w, count)) for w in (1, 2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0


@pytest.mark.parametrize("ledger_uri", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
def test_two_processes_write_one_ledger(ledger_uri):
    from asgi_ai_relay.config import load_config
    from asgi_ai_relay.report import summarize, usage_report
    from asgi_ai_relay.storage import LedgerQuery

    count = 3000
    _two_workers(ledger_uri, count)  # both create the table at once, then write side by side
    ledger = ledger_from_uri(ledger_uri)
    try:
        rows = ledger.rows()
        assert sorted(r.request_id for r in rows) == sorted(f"w{w}-{i}" for w in (1, 2) for i in range(count))
        config = load_config({})
        report = usage_report(config, ledger, LedgerQuery(), ("caller",))
        assert report.pop("ledger_behind_rows") == 0
        assert report == summarize(config, rows, ("caller",))  # the hourly sums kept up with both writers
    finally:
        ledger.close()


@pytest.mark.postgres
async def test_a_relay_serves_while_its_ledger_database_is_blackholed(upstream, tmp_path, relays):
    """The relay starts and answers with PostgreSQL unreachable; the rows arrive when it returns."""
    hole = Blackhole()
    server = await asyncio.to_thread(PrivatePostgres, hole.port)
    table = "usage_relay"
    try:
        uri = f"postgresql://postgres@127.0.0.1:{hole.port}/postgres?table={table}&spool={tmp_path}/spool.db"
        relay = relays(make_config(upstream, storage={"ledger": uri}))
        await relay.startup()
        answers = await asyncio.gather(*(chat(relay, {"model": "test-model", "messages": [
            {"role": "user", "content": f"question {i}"}]}) for i in range(20)))
        assert [a.status for a in answers] == [200] * 20
        await asyncio.to_thread(until, lambda: relay.ledger.health()["spooled"] == 20, "the rows to spool")
        hole.close()
        await asyncio.to_thread(server.start)
        await asyncio.to_thread(until, lambda: relay.ledger.health()["behind"] == 0, "the spool to drain")
        ids = await asyncio.to_thread(stored_ids, server.url, table)
        assert len(ids) == 20 and len(set(ids)) == 20
        await relay.shutdown()
    finally:
        hole.close()
        await asyncio.to_thread(server.remove)
