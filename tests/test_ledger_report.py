"""Reports and budget seeding summed by the ledger's backend (SQL on SQLite and PostgreSQL):
the same exact numbers as summing the rows, over a million rows too."""

from __future__ import annotations

import sqlite3
import time
import uuid
from decimal import Decimal, localcontext

import psycopg
import pytest

from asgi_ai_relay.config import RelayConfig, load_config
from asgi_ai_relay.report import summarize, usage_report
from asgi_ai_relay.storage import LedgerQuery, LedgerRow, ledger_from_uri, spend_totals

DAY = 86_400
T0 = 1_767_225_600  # 2026-01-01 00:00 UTC


def sample_rows() -> list[LedgerRow]:
    rows = []
    for i in range(400):
        rows.append(LedgerRow(
            ts=T0 + (i % 40) * DAY + i, request_id=f"r{i}", caller=f"c{i % 3}", endpoint="chat.completions",
            model=("m1", "m2", None)[i % 3 if i % 7 else 2], provider=f"p{i % 2}", status=(200, 200, 429, 502)[i % 4],
            prompt_tokens=i * 3, completion_tokens=i % 50, cached_tokens=(i * 5) % 7 if i % 5 else i * 4,
            cost_usd=Decimal(i) * Decimal("1.5E-20") if i % 13 == 0 else Decimal(i) * Decimal("0.0000025"),  # some finer than 1e-18
            cache_hit=i % 9 == 0, latency_ms=float((i * 37) % 1000) + 0.25, estimated=i % 11 == 0,
            cache_saved_usd=Decimal("0.0003") if i % 9 == 0 else Decimal(0),
        ))
    return rows


@pytest.fixture
def config() -> RelayConfig:
    return load_config({"pricing": {"currency": "CNY", "exchange_rate": "7.3",
                                    "lists": {"direct": {"m1": {"input": 5, "output": 20, "cached_input": 1}}}}})


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def ledger(request, tmp_path):
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_url")
        table = f"relay_usage_{uuid.uuid4().hex}"
        built = ledger_from_uri(f"{url}?table={table}&spool={tmp_path}/spool.db")
    else:
        built = ledger_from_uri("memory://" if request.param == "memory" else f"sqlite:///{tmp_path}/u.db")
    yield built
    built.close()
    if request.param == "postgres":
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {table}")


@pytest.mark.parametrize("group_by", [(), ("caller",), ("model", "day"), ("month", "provider")])
def test_the_backend_sums_what_the_rows_sum(config, ledger, group_by):
    rows = sample_rows()
    for r in rows:
        ledger.record(r)
    ledger.flush()
    query = LedgerQuery(since=T0 + 3 * DAY, until=T0 + 35 * DAY, endpoints=("chat.completions",))
    chosen = [r for r in rows if query.matches(r)]
    report = usage_report(config, ledger, query, group_by, "direct")
    assert report.pop("ledger_behind_rows") == 0
    assert report == summarize(config, chosen, group_by, "direct")
    mine = LedgerQuery(caller="c1", model="m2")
    report = usage_report(config, ledger, mine, group_by)
    assert report.pop("ledger_behind_rows") == 0
    assert report == summarize(config, [r for r in rows if mine.matches(r)], group_by)


def test_spend_totals(ledger):
    rows = sample_rows()
    for r in rows:
        ledger.record(r)
    month, day = T0 + 31 * DAY, T0 + 38 * DAY  # February, and its 8th day
    totals = spend_totals(ledger, month, day)
    expected = {}
    for r in rows:
        if r.ts >= month:
            m, d = expected.get(r.caller, (Decimal(0), Decimal(0)))
            expected[r.caller] = (m + r.cost_usd, d + (r.cost_usd if r.ts >= day else 0))
    assert totals == expected and set(totals) == {"c0", "c1", "c2"}


def test_rows_from_before_the_integer_money_columns_are_summed_from_their_text(config, tmp_path):
    path = tmp_path / "old.db"
    ledger = ledger_from_uri(f"sqlite:///{path}")
    rows = sample_rows()[:50]
    for r in rows:
        ledger.record(r)
    ledger.close()
    with sqlite3.connect(path) as conn:  # as an older version wrote them: no integer columns, no hourly sums
        conn.execute("DROP TABLE relay_usage_hourly_mark")
        conn.execute("DROP TABLE relay_usage_hourly")
        conn.execute("UPDATE relay_usage SET cost_u = NULL, cost_f = NULL, saved_u = NULL, saved_f = NULL WHERE id % 2 = 0")
    ledger = ledger_from_uri(f"sqlite:///{path}")
    try:
        report = usage_report(config, ledger, LedgerQuery(), ("caller",))
        assert report.pop("ledger_behind_rows") == 0
        assert report == summarize(config, rows, ("caller",))
        assert Decimal(report["cost_usd"]) == sum(r.cost_usd for r in rows)
    finally:
        ledger.close()


def test_a_million_rows(config, tmp_path):
    path = tmp_path / "big.db"
    ledger_from_uri(f"sqlite:///{path}").close()  # the schema
    n = 1_000_000
    models = ("m1", "m2", "m3", "m4")
    with sqlite3.connect(path) as conn:  # as a file written before the hourly sums: summed into them on open
        conn.execute("DROP TABLE relay_usage_hourly_mark")
        conn.execute("DROP TABLE relay_usage_hourly")
        # Every row costs $0.000125 (125 micro-dollars) for 100 + 20 tokens; latencies 0..999 ms.
        conn.execute(
            "INSERT INTO relay_usage (ts, request_id, caller, endpoint, model, status, stream, cache_hit, estimated,"
            " prompt_tokens, completion_tokens, cached_tokens, attempts, latency_ms, cost_usd, cache_saved_usd,"
            " cost_u, cost_f, saved_u, saved_f)"
            " WITH RECURSIVE g(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM g WHERE i < ? - 1)"
            " SELECT ? + i, 'r' || i, 'c' || (i % 50), 'chat.completions', 'm' || (i % 4 + 1), 200, 0, 0, 0,"
            " 100, 20, 0, 1, i % 1000, '0.000125', '0', 125, 0, 0, 0 FROM g",
            (n, T0),
        )
    started = time.perf_counter()
    ledger = ledger_from_uri(f"sqlite:///{path}")
    print(f"\nopening it (summing {n:,} rows per hour, once): {time.perf_counter() - started:.3f} s")
    try:
        started = time.perf_counter()
        report = usage_report(config, ledger, LedgerQuery(endpoints=("chat.completions",)))
        print(f"report over {n:,} SQLite rows: {time.perf_counter() - started:.3f} s")
        started = time.perf_counter()
        by_caller = usage_report(config, ledger, LedgerQuery(), ("caller",))
        print(f"grouped by caller: {time.perf_counter() - started:.3f} s")
        started = time.perf_counter()
        totals = spend_totals(ledger, T0 + n // 2, T0 + n - DAY)
        print(f"spend_totals: {time.perf_counter() - started:.3f} s")
    finally:
        ledger.close()
    assert report["requests"] == n and report["prompt_tokens"] == 100 * n and report["completion_tokens"] == 20 * n
    assert Decimal(report["cost_usd"]) == Decimal("0.000125") * n
    assert [report["models"][m]["requests"] for m in models] == [n // 4] * 4
    assert len(by_caller["groups"]) == 50 and all(g["requests"] == n // 50 for g in by_caller["groups"])
    # Latencies are 0..999 ms evenly: the exact nearest-rank p50 is 499, p95 949, p99 989; for
    # caller c0 (every 50th row) 0, 50, ..., 950: p50 450, p95 900, p99 950.
    for name, exact, c0 in (("p50", 499, 450), ("p95", 949, 900), ("p99", 989, 950)):
        assert abs(report["latency_ms"][name] - exact) <= 10
        assert abs(by_caller["groups"][0]["latency_ms"][name] - c0) <= 50
    assert sum(month for month, _ in totals.values()) == Decimal("0.000125") * (n - n // 2)
    assert sum(day for _, day in totals.values()) == Decimal("0.000125") * DAY


def test_costs_with_more_digits_than_decimal_precision_sum_exactly(tmp_path):
    """A cost of 30 significant digits (beyond the default context's 28) is stored and summed
    as it is, not rounded on its way into the integer columns."""
    config = RelayConfig()
    costs = [Decimal("999999999999.999999999999999999"), Decimal("0.000000000000000001"), Decimal("12.5")]
    rows = [LedgerRow(ts=T0 + i, request_id=f"d{i}", caller="c", endpoint="chat.completions", cost_usd=cost)
            for i, cost in enumerate(costs)]
    ledger = ledger_from_uri(f"sqlite:///{tmp_path}/digits.db")
    try:
        for r in rows:
            ledger.record(r)
        ledger.flush()
        report = usage_report(config, ledger, LedgerQuery(), ("caller",))
        assert Decimal(report["cost_usd"]) == sum(costs)
        assert {r.request_id: r.cost_usd for r in ledger.rows()} == {r.request_id: r.cost_usd for r in rows}
    finally:
        ledger.close()
    with sqlite3.connect(tmp_path / "digits.db") as conn:  # the integer columns SQL sums
        fixed = {k: (u, f) for k, u, f in conn.execute("SELECT request_id, cost_u, cost_f FROM relay_usage")}
    with localcontext(prec=60):  # wide enough for every digit: no rounding in the check either
        assert {k: u * 10**12 + f for k, (u, f) in fixed.items()} == {r.request_id: int(r.cost_usd.scaleb(18)) for r in rows}
