"""Per-hour sums of the SQLite ledger, kept by each batch's writer, so a report reads hours,
not rows.

SQLite groups by sorting, and sorting a million rows with a dozen sums each takes seconds;
``relay_usage_hourly`` holds one row per (UTC hour, endpoint, caller, model, provider, key,
team) with the sums a report needs, updated in the same transaction as the rows it sums. A
report takes the whole hours inside its range from there and the minutes at either edge from
the rows themselves (over the index on ``ts``). A file written before the table existed is
summed into it once, when it is first opened; so is one whose table predates a grouping column
(the primary key cannot be altered: the table is summed again).

Rows of writers that do not sum their own (an older version's, without ``summed``) are summed
by this version's writer: ``relay_usage_hourly_mark`` holds the highest row id whose sums are
settled, and each write transaction first sums the unsummed rows above it (:func:`catch_up`),
then moves it past its own rows (:func:`settle`); an idle writer looks every second. Versions
before this one kept those sums with a trigger on every insert, about 10k instructions a row
even for the rows it skipped; this version drops it when it finds it (the rows added while it
stood were summed by it).

The key and the team are groupings, not filters over the rows, because the dashboard groups by
them on every page: a key belongs to one owner (the caller) and a team to the key, so they add
about one row per hour per key in use, and a report per key reads hours, not rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from functools import lru_cache
from operator import itemgetter, or_
from typing import Any

from .base import COUNT_COLUMNS, LedgerQuery
from .totals import Source

__all__ = ["HOURLY", "SUMMED", "batch_sums", "behind", "catch_up", "create_hourly", "hourly_parts", "settle", "store_sums", "sum_rows"]

_TABLE = "relay_usage_hourly"
_KEYS = ("endpoint", "caller", "model", "provider", "key_id", "team")
#: Each sum and what one row adds to it (``{r}``: empty over the rows; ``NEW.`` in the per-row
#: trigger of earlier versions, which the tests rebuild to write as they did).
_ADDS = (
    ("requests", "1"),
    ("errors", "COALESCE({r}status >= 400, 0)"),
    ("prompt_tokens", "COALESCE({r}prompt_tokens, 0)"),
    ("completion_tokens", "COALESCE({r}completion_tokens, 0)"),
    ("cached_tokens", "COALESCE({r}cached_tokens, 0)"),
    ("cache_hits", "COALESCE({r}cache_hit, 0)"),
    ("estimated", "COALESCE({r}estimated, 0)"),
    ("token_rows", "(COALESCE({r}prompt_tokens, 0) > 0 OR COALESCE({r}completion_tokens, 0) > 0)"),
    ("cached_prompt", "CASE WHEN COALESCE({r}prompt_tokens, 0) > 0 OR COALESCE({r}completion_tokens, 0) > 0 "
                      "THEN MIN(COALESCE({r}cached_tokens, 0), COALESCE({r}prompt_tokens, 0)) ELSE 0 END"),
    ("cost_u", "COALESCE({r}cost_u, 0)"),
    ("cost_f", "COALESCE({r}cost_f, 0)"),
    ("saved_u", "COALESCE({r}saved_u, 0)"),
    ("saved_f", "COALESCE({r}saved_f, 0)"),
    ("unfixed", "({r}cost_u IS NULL)"),
    *((name, f"COALESCE({{r}}{name}, 0)") for name in COUNT_COLUMNS[3:]),
    ("usage_flagged", "({r}usage_flag IS NOT NULL)"),
)
#: Sums added by newer versions: an older file gets them as columns of zeros (its rows had none).
_ADDED = (*COUNT_COLUMNS[3:], "usage_flagged")
_HOUR = "CAST({r}ts AS INTEGER) / 3600 * 3600"  # integers: a row's hour is exactly floor(ts)
_F = 10**12  # the 1e-18 parts carried into micro-dollars, so no sum overflows


def _set(name: str) -> str:
    if name in ("cost_u", "saved_u"):
        f = name[:-1] + "f"
        return f"{name} = {name} + excluded.{name} + ({f} + excluded.{f}) / {_F}"
    if name in ("cost_f", "saved_f"):
        return f"{name} = ({name} + excluded.{name}) % {_F}"
    return f"{name} = {name} + excluded.{name}"


_NAMES = ("hour", *_KEYS, *(name for name, _ in _ADDS))
_SCHEMA = (
    f"CREATE TABLE {_TABLE} (hour INTEGER NOT NULL, "
    + ", ".join(f"{k} TEXT NOT NULL" for k in _KEYS) + ", "
    + ", ".join(f"{name} INTEGER NOT NULL" for name, _ in _ADDS)
    + f", PRIMARY KEY (hour, {', '.join(_KEYS)})) WITHOUT ROWID"
)
#: The column this version's rows carry (``1``): their writer sums them a batch at a time
#: (:func:`sum_rows`, then :func:`store_sums`: one upsert per hour and keys, not one per row).
#: Rows without it are an older version's, summed by :func:`catch_up`.
SUMMED = "summed"
_CONFLICT = (f" ON CONFLICT (hour, {', '.join(_KEYS)}) DO UPDATE SET "
             + ", ".join(_set(name) for name, _ in _ADDS))
#: The per-row trigger of earlier versions (dropped wherever it is found).
_TRIGGER_NAME = "relay_usage_hourly_add"
_MARK = "relay_usage_hourly_mark"
_STATE = (f"SELECT (SELECT id FROM {_MARK}), (SELECT MAX(id) FROM relay_usage), "
          f"EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'trigger' AND name = '{_TRIGGER_NAME}')")
_SETTLE = f"UPDATE {_MARK} SET id = (SELECT COALESCE(MAX(id), 0) FROM relay_usage)"


def catch_up(conn: Any) -> None:
    """Sum the rows added above the mark that no one summed (a writer's own rows carry
    ``summed``), or, when an older version's trigger stands again (it made it on opening the
    file), drop it: the rows added while it stood were summed by it. Called in a write
    transaction, before the writer's own rows (which the trigger must not see)."""
    mark, newest, trigger = conn.execute(_STATE).fetchone()
    if trigger:
        conn.execute(f"DROP TRIGGER {_TRIGGER_NAME}")
    elif newest is not None and newest > mark:
        conn.execute(_CATCH_UP, (mark,))


def settle(conn: Any) -> None:
    """Move the mark past every row so far (the end of a write transaction: its rows are summed)."""
    conn.execute(_SETTLE)


def behind(conn: Any) -> bool:
    """Whether :func:`catch_up` has work (read outside a transaction, by an idle writer)."""
    mark, newest, trigger = conn.execute(_STATE).fetchone()
    return bool(trigger) or (newest is not None and mark is not None and newest > mark)


def store_sums(conn: Any, sums: dict[tuple[Any, ...], list[int]]) -> None:
    """One upsert per (hour, keys) of ``sums`` (as :func:`sum_rows` made them), the same sums as
    the SQL of :func:`_backfill` makes from the rows. Summed in SQL, grouping a batch of rows by
    sorting them cost about 95k instructions a row, more than storing the row."""
    conn.executemany(_UPSERT, batch_sums(sums))


def sum_rows(rows: Sequence[tuple[Any, ...]], columns: Sequence[str], into: dict[tuple[Any, ...], list[int]],
             by_column: Sequence[Sequence[Any]] | None = None) -> None:
    """Add the sums of ``rows`` into ``into`` (``(hour, keys) -> sums`` in ``_ADDS`` order).

    Each sum is taken over a column (C's ``sum``, ``map``, ``count``), not by a Python loop over
    rows. ``by_column`` is ``rows`` by column (``zip(*rows)``), when the caller has it. The
    common batch, every row of one hour and the same keys, is one group found without looking
    at each row; any other is grouped row by row first."""
    if not rows:
        return
    keys_at, values_at = _positions(tuple(columns))
    cols = list(zip(*rows)) if by_column is None else by_column
    n = len(rows)
    stamps = cols[0]  # ts
    total = sum(stamps)
    low, high = min(stamps), max(stamps)  # bounds of them all when every ts is finite
    if (total - total == 0 and -1e18 < low and high < 1e18 and _hour(low) == _hour(high)
            and all(cols[i].count(cols[i][0]) == n for i in keys_at)):
        groups = [((_hour(low), *(cols[i][0] for i in keys_at)), [cols[i] for i in values_at], n)]
    else:
        keys_of, values_of = itemgetter(*keys_at), itemgetter(*values_at)
        grouped: dict[tuple[Any, ...], list[tuple[Any, ...]]] = {}
        for row in rows:
            key = (_hour(row[0]), *keys_of(row))
            group = grouped.get(key)
            if group is None:
                grouped[key] = [row]
            else:
                group.append(row)
        groups = [(key, list(zip(*map(values_of, group))), len(group)) for key, group in grouped.items()]
    for key, values, count in groups:
        sums = _sums(values, count)
        key = (key[0], *("" if k is None else k for k in key[1:]))  # COALESCE(key, ''): NULL and '' are one
        if key in into:
            sums = [a + b for a, b in zip(into[key], sums)]
        into[key] = sums


def _hour(ts: Any) -> int:
    """``CAST(ts AS INTEGER) / 3600 * 3600`` as SQLite works it out (towards zero; 0 past any integer)."""
    whole = int(ts) if -1e18 < ts < 1e18 else 0
    return whole // 3600 * 3600 if whole >= 0 else -(-whole // 3600 * 3600)


def batch_sums(sums: dict[tuple[Any, ...], list[int]]) -> list[tuple[Any, ...]]:
    """The ``relay_usage_hourly`` values of ``sums``, in ``_NAMES`` order (micro-dollar carries made)."""
    out = []
    for key, values in sums.items():
        values = list(values)
        for whole_at, rest_at in ((_COST_U, _COST_F), (_SAVED_U, _SAVED_F)):
            values[whole_at] += values[rest_at] // _F
            values[rest_at] %= _F
        out.append((*key, *values))
    return out


def _sums(columns: list[Sequence[Any]], n: int) -> list[int]:
    """The ``_ADDS`` sums of one group of ``n`` rows, by column (as :func:`_positions` picks them).
    Counts are never negative (:class:`~.base.LedgerRow` clamps them), so a row without tokens
    adds nothing to ``cached_prompt`` whether it is counted there or not."""
    status, prompt, completion, cached, hit, estimated, cost_u, cost_f, saved_u, saved_f, flag, *classes = columns
    if None in prompt:
        prompt = [p or 0 for p in prompt]
    if None in completion:
        completion = [c or 0 for c in completion]
    if None in cached:
        cached = [c or 0 for c in cached]
    failed = sum(map(_FAILED.__le__, status)) if None not in status else sum(1 for code in status if code is not None and code >= 400)
    return [
        n, failed, sum(prompt), sum(completion), sum(cached),
        sum(map(bool, hit)), sum(map(bool, estimated)), n - list(map(or_, prompt, completion)).count(0),
        sum(map(min, cached, prompt)),
        sum(filter(None, cost_u)), sum(filter(None, cost_f)), sum(filter(None, saved_u)), sum(filter(None, saved_f)),
        cost_u.count(None), *(sum(filter(None, column)) for column in classes), n - flag.count(None),
    ]


_FAILED = 400


_SUM_NAMES = [name for name, _ in _ADDS]
_COST_U, _COST_F = _SUM_NAMES.index("cost_u"), _SUM_NAMES.index("cost_f")
_SAVED_U, _SAVED_F = _SUM_NAMES.index("saved_u"), _SUM_NAMES.index("saved_f")
_UPSERT = f"INSERT INTO {_TABLE} ({', '.join(_NAMES)}) VALUES ({', '.join('?' for _ in _NAMES)})" + _CONFLICT


@lru_cache(maxsize=4)
def _positions(columns: tuple[str, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Where the keys and the summed values are in a row of ``columns`` (``ts`` first)."""
    at = {name: i for i, name in enumerate(columns)}
    assert at["ts"] == 0
    return (
        tuple(at[k] for k in _KEYS),
        tuple(at[n] for n in ("status", "prompt_tokens", "completion_tokens", "cached_tokens", "cache_hit",
                              "estimated", "cost_u", "cost_f", "saved_u", "saved_f", "usage_flag",
                              *COUNT_COLUMNS[3:])),
    )


def _backfill(where: str = "") -> str:
    sums = []
    for name, add in _ADDS:
        total = f"SUM({add.format(r='')})"
        if name in ("cost_u", "saved_u"):
            total = f"{total} + SUM(COALESCE({name[:-1]}f, 0)) / {_F}"
        elif name in ("cost_f", "saved_f"):
            total = f"{total} % {_F}"
        sums.append(total)
    keys = ", ".join(f"COALESCE({k}, '')" for k in _KEYS)
    return (f"INSERT INTO {_TABLE} ({', '.join(_NAMES)}) SELECT {_HOUR.format(r='')}, {keys}, {', '.join(sums)} "
            f"FROM relay_usage{where} GROUP BY {', '.join(str(n) for n in range(1, len(_KEYS) + 2))}")


_CATCH_UP = _backfill(f" WHERE id > ? AND {SUMMED} IS NULL") + _CONFLICT


def create_hourly(conn: object) -> None:
    """Create the table (summing the rows already there) and the mark, inside the caller's
    write transaction (so a second process opening the file at once waits, then sees both)."""
    execute = conn.execute  # type: ignore[attr-defined]
    exists = execute(f"SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '{_TABLE}'").fetchone() is not None
    present = {r[1] for r in execute(f"PRAGMA table_info({_TABLE})")} if exists else set()
    if exists and not set(_KEYS) <= present:  # a grouping added: the sums are made again
        execute(f"DROP TRIGGER IF EXISTS {_TRIGGER_NAME}")
        execute(f"DROP TABLE {_TABLE}")
        exists = False
    if not exists:
        execute(_SCHEMA)
        execute(_backfill())
    else:
        missing = [name for name in _ADDED if name not in present]
        for name in missing:
            execute(f"ALTER TABLE {_TABLE} ADD COLUMN {name} INTEGER NOT NULL DEFAULT 0")
    execute(f"CREATE TABLE IF NOT EXISTS {_MARK} (id INTEGER NOT NULL)")
    if not exists or execute(f"SELECT COUNT(*) FROM {_MARK}").fetchone()[0] != 1:
        # Every row is summed now: by the backfill just made, or by the trigger of the version
        # that wrote the file (this version's first opening of it).
        execute(f"DELETE FROM {_MARK}")
        execute(f"INSERT INTO {_MARK} VALUES ((SELECT COALESCE(MAX(id), 0) FROM relay_usage))")
        execute(f"DROP TRIGGER IF EXISTS {_TRIGGER_NAME}")
    else:
        catch_up(conn)
        settle(conn)


#: Reports read the sums in :class:`.totals.Totals`' order.
HOURLY = Source(
    table=_TABLE, time="hour",
    sums=", ".join(
        f"SUM({name})" for name in ("requests", "errors", "prompt_tokens", "completion_tokens", "cached_tokens",
                                    "cache_hits", "estimated", "token_rows", "cached_prompt")
    )
    + ", SUM(cost_u), SUM(cost_f / 1000000), SUM(cost_f % 1000000), SUM(requests - unfixed)"
    + ", SUM(saved_u), SUM(saved_f / 1000000), SUM(saved_f % 1000000), SUM(requests - unfixed), "
    + ", ".join(f"SUM({name})" for name in _ADDED),
)
_ROWS = Source("relay_usage")


def hourly_parts(query: LedgerQuery) -> list[tuple[Source, LedgerQuery]]:
    """``query`` as whole hours (read from the sums) and the edges around them (read from the
    rows): disjoint, and together exactly the rows ``query`` selects."""
    since, until = query.since, query.until
    if any(t is not None and not abs(t) < 1e12 for t in (since, until)):
        return [(_ROWS, query)]  # no hour of Unix time that far out (and no integer for SQLite)
    first = last = None
    if since is not None:
        first = math.ceil(since / 3600) * 3600
        first += 3600 if first < since else 0  # the division may have rounded down
    if until is not None:
        last = math.floor(until / 3600) * 3600
        last -= 3600 if last > until else 0
    if first is not None and last is not None and first >= last:
        return [(_ROWS, query)]
    parts = [(HOURLY, replace(query, since=first, until=last))]
    if since is not None and first is not None and since < first:
        parts.append((_ROWS, replace(query, since=since, until=first)))
    if until is not None and last is not None and last < until:
        parts.append((_ROWS, replace(query, since=last, until=until)))
    return parts
