"""Per-hour sums of the SQLite ledger, kept by a trigger, so a report reads hours, not rows.

SQLite groups by sorting, and sorting a million rows with a dozen sums each takes seconds;
``relay_usage_hourly`` holds one row per (UTC hour, endpoint, caller, model, provider, key,
team) with the sums a report needs, updated in the same transaction as each insert (by any writer of the file,
whatever its version). A report takes the whole hours inside its range from there and the
minutes at either edge from the rows themselves (over the index on ``ts``). A file written
before the table existed is summed into it once, when it is first opened; so is one whose table
predates a grouping column (the primary key cannot be altered: the table is summed again).

The key and the team are groupings, not filters over the rows, because the dashboard groups by
them on every page: a key belongs to one owner (the caller) and a team to the key, so they add
about one row per hour per key in use, and a report per key reads hours, not rows.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from .base import COUNT_COLUMNS, LedgerQuery
from .totals import Source

__all__ = ["HOURLY", "SUMMED", "add_batch", "create_hourly", "hourly_parts"]

_TABLE = "relay_usage_hourly"
_KEYS = ("endpoint", "caller", "model", "provider", "key_id", "team")
#: Each sum and what one row adds to it (``{r}`` is ``NEW.`` in the trigger).
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
#: (:func:`add_batch`: one statement for the batch, not an upsert per row). The trigger
#: adds only rows without it, an older version's, so every row is summed once whoever wrote it.
SUMMED = "summed"
_CONFLICT = (f" ON CONFLICT (hour, {', '.join(_KEYS)}) DO UPDATE SET "
             + ", ".join(_set(name) for name, _ in _ADDS))
_TRIGGER_NAME = "relay_usage_hourly_add"
_TRIGGER = (
    f"CREATE TRIGGER {_TRIGGER_NAME} AFTER INSERT ON relay_usage WHEN NEW.{SUMMED} IS NULL BEGIN "
    f"INSERT INTO {_TABLE} ({', '.join(_NAMES)}) VALUES ({_HOUR.format(r='NEW.')}, "
    + ", ".join(f"COALESCE(NEW.{k}, '')" for k in _KEYS) + ", "
    + ", ".join(add.format(r="NEW.") for _, add in _ADDS)
    + ")" + _CONFLICT + "; END"
)


def add_batch(conn: Any, after: int) -> None:
    """Add the rows this version wrote in the current transaction (``id > after``) to the sums,
    in one statement: the same sums as the trigger's, over the batch, one upsert per (hour, keys)."""
    conn.execute(_BATCH, (after,))


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


_BATCH = _backfill(f" WHERE id > ? AND {SUMMED} = 1") + _CONFLICT


def create_hourly(conn: object) -> None:
    """Create the table (summing the rows already there) and its trigger, inside the caller's
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
    # Made again whatever was there: an older version's trigger adds every row, this version's
    # rows included, which its writer sums itself.
    execute(f"DROP TRIGGER IF EXISTS {_TRIGGER_NAME}")
    execute(_TRIGGER)


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
