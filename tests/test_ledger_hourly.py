"""SQLite's per-hour sums, kept by each batch's writer for this version's rows and caught up by
it for an older version's (which do not sum their own, and once had a trigger that did): every
row summed exactly once, whoever wrote it, equal to the sums made from the rows themselves."""

from __future__ import annotations

import sqlite3
import time
from decimal import Decimal

from asgi_ai_relay.storage import LedgerRow, ledger_from_uri
from asgi_ai_relay.storage import hourly
from tests.test_ledger_report import sample_rows

HOUR = 1_796_137_200.0


def rows(start: int) -> list[LedgerRow]:
    """A mix: errors, hits, estimates, flags, token classes, money finer than a micro-dollar and
    a cost summed from its text, across two hours and keys."""
    out = []
    for i in range(40):
        out.append(LedgerRow(
            ts=HOUR + (i % 2) * 3600 + i, request_id=f"r{start + i}", caller=f"c{i % 3}", endpoint="chat.completions",
            model=("m1", "m2", None)[i % 3], provider="p", status=(200, 429, 502, 200)[i % 4],
            prompt_tokens=i * 7, completion_tokens=(i * 3) % 11, cached_tokens=(i * 5) % 9, cache_hit=i % 5 == 0,
            estimated=i % 7 == 0, cost_usd=Decimal(f"0.{i:02d}0000000000000017") if i % 9 else Decimal("1e13"),
            cache_saved_usd=Decimal("0.000001") * i, reasoning_tokens=i % 4, web_search_requests=i % 2,
            usage_flag="prompt" if i % 6 == 0 else None, key_id=f"key_{i % 2}" if i % 4 else None,
        ))
    return out


def older_trigger(*, when: bool) -> str:
    """The per-row trigger of the versions before this one: with ``when``, the one that skipped
    rows carrying ``summed``; without, the one before it, which added every row."""
    body = (f"INSERT INTO {hourly._TABLE} ({', '.join(hourly._NAMES)}) VALUES ({hourly._HOUR.format(r='NEW.')}, "
            + ", ".join(f"COALESCE(NEW.{k}, '')" for k in hourly._KEYS) + ", "
            + ", ".join(add.format(r="NEW.") for _, add in hourly._ADDS) + ")" + hourly._CONFLICT)
    condition = f" WHEN NEW.{hourly.SUMMED} IS NULL" if when else ""
    return f"CREATE TRIGGER {hourly._TRIGGER_NAME} AFTER INSERT ON relay_usage{condition} BEGIN {body}; END"


def triggers(path: str) -> list[str]:
    with sqlite3.connect(path) as conn:
        return [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")]


def old_row(conn: sqlite3.Connection, request_id: str, ts: float) -> None:
    """A row as an older writer inserts it: no ``summed``, sums left to someone else."""
    conn.execute("INSERT INTO relay_usage (ts, request_id, caller, endpoint, model, status, prompt_tokens, cost_u, cost_f) "
                 "VALUES (?, ?, 'c1', 'chat.completions', 'm1', 200, 12, 3, 500000000000)", (ts, request_id))


def table(conn: sqlite3.Connection, name: str) -> list[tuple[object, ...]]:
    return sorted(conn.execute(f"SELECT * FROM {name}").fetchall(), key=repr)


def made_from_the_rows(path: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as conn:
        conn.execute(f"CREATE TEMP TABLE fresh AS SELECT * FROM {hourly._TABLE} WHERE 0")
        conn.execute(hourly._backfill().replace(f"INSERT INTO {hourly._TABLE}", "INSERT INTO fresh", 1))
        return table(conn, "fresh")


def test_rows_of_this_version_and_of_an_older_writer_are_each_summed_once(tmp_path):
    path = str(tmp_path / "usage.db")
    ledger = ledger_from_uri(f"sqlite:///{path}")
    for row in rows(0) + sample_rows():
        ledger.record(row)
    ledger.close()
    assert triggers(path) == []  # no per-row trigger: the writer sums its own rows
    # An older version's writer opens the file (its trigger, adding every row) and writes a row
    # without the column this version sets.
    with sqlite3.connect(path) as conn:
        conn.execute(older_trigger(when=False))
        old_row(conn, "old-1", HOUR + 5)
    # This version opens the file again (the trigger goes; the row it summed is not summed again)
    # and writes more.
    ledger = ledger_from_uri(f"sqlite:///{path}")
    assert triggers(path) == []
    for row in rows(100):
        ledger.record(row)
    ledger.close()
    with sqlite3.connect(path) as conn:  # an older writer once more, with no trigger standing
        conn.execute("INSERT INTO relay_usage (ts, request_id, caller, endpoint, status, completion_tokens) "
                     "VALUES (?, 'old-2', 'c2', 'messages', 500, 4)", (HOUR + 3601,))
    ledger_from_uri(f"sqlite:///{path}").close()  # summed by this version on its next opening
    with sqlite3.connect(path) as conn:
        kept = table(conn, hourly._TABLE)
        assert conn.execute("SELECT COUNT(*) FROM relay_usage").fetchone()[0] == 80 + len(sample_rows()) + 2
    assert kept == made_from_the_rows(path)
    assert sum(r[len(hourly._KEYS) + 1] for r in kept) == 80 + len(sample_rows()) + 2  # requests


def test_a_running_writer_sums_an_older_writers_rows_and_drops_the_trigger_it_makes_again(tmp_path):
    """Another process of an older version, beside this one on the same file: its rows are
    summed once whether its trigger stands (it makes it on opening the file) or not."""
    path = str(tmp_path / "usage.db")
    ledger = ledger_from_uri(f"sqlite:///{path}")
    try:
        batches = [rows(0), rows(100), rows(200)]
        for row in batches[0]:
            ledger.record(row)
        ledger.flush()
        with sqlite3.connect(path) as conn:  # the older process opens the file, then writes
            conn.execute(older_trigger(when=True))
            old_row(conn, "old-1", HOUR + 5)
        for row in batches[1]:  # this version's next batch: the trigger goes first
            ledger.record(row)
        ledger.flush()
        assert triggers(path) == []
        with sqlite3.connect(path) as conn:  # the older process again, no trigger standing now
            old_row(conn, "old-2", HOUR + 6)
            old_row(conn, "old-3", HOUR + 3700)
        for row in batches[2]:  # summed by this version's next batch, before its own rows
            ledger.record(row)
        ledger.flush()
        with sqlite3.connect(path) as conn:
            kept = table(conn, hourly._TABLE)
        assert kept == made_from_the_rows(path)
        assert sum(r[len(hourly._KEYS) + 1] for r in kept) == 123
    finally:
        ledger.close()


def test_an_idle_writer_sums_an_older_writers_rows_within_seconds(tmp_path):
    path = str(tmp_path / "usage.db")
    ledger = ledger_from_uri(f"sqlite:///{path}")
    try:
        ledger.record(rows(0)[0])
        ledger.flush()
        with sqlite3.connect(path) as conn:
            old_row(conn, "old-1", HOUR + 5)
        deadline = time.monotonic() + 10 * hourly_every()
        while time.monotonic() < deadline and made_from_the_rows(path) != hourly_table(path):
            time.sleep(0.05)
        assert hourly_table(path) == made_from_the_rows(path)
        assert sum(r[len(hourly._KEYS) + 1] for r in hourly_table(path)) == 2
    finally:
        ledger.close()


def hourly_every() -> float:
    from asgi_ai_relay.storage.sqlite import CATCH_UP_EVERY

    return CATCH_UP_EVERY


def hourly_table(path: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as conn:
        return table(conn, hourly._TABLE)


def test_a_batch_of_one_hour_and_the_same_keys_and_one_around_zero_sum_as_the_rows_do(tmp_path):
    """The writer's two ways of grouping: a batch whose rows share their hour and keys (one group,
    found by column) and one whose times straddle zero and the hours around it (grouped by row)."""
    path = str(tmp_path / "usage.db")
    ledger = ledger_from_uri(f"sqlite:///{path}")
    for i in range(70):  # more than the writer takes by column at a time
        ledger.record(LedgerRow(
            ts=HOUR + 10 + i * 0.5, request_id=f"same-{i}", caller="c", endpoint="chat.completions", model="m",
            provider="p", status=(200, 503)[i % 2], prompt_tokens=i, completion_tokens=i % 3, cached_tokens=i % 5,
            cost_usd=Decimal(f"0.{i:03d}000000000000001"), estimated=i % 4 == 0, usage_flag="output" if i == 3 else None,
        ))
    ledger.flush()
    for i, ts in enumerate((-7200.5, -3601.0, -3599.9, -0.5, 0.0, 0.5, 3599.9, 3600.0, HOUR, HOUR + 1)):
        ledger.record(LedgerRow(ts=ts, request_id=f"odd-{i}", caller="c", endpoint="chat.completions", model="m",
                                prompt_tokens=i, completion_tokens=0 if i % 2 else 3, cost_usd=Decimal("0.25")))
    ledger.close()
    with sqlite3.connect(path) as conn:
        kept = table(conn, hourly._TABLE)
    assert kept == made_from_the_rows(path)
    assert len(kept) == 6  # HOUR with and without a provider; -7200, -3600, 0 (-3599.9 included: towards zero), 3600
    assert sum(r[len(hourly._KEYS) + 1] for r in kept) == 80
