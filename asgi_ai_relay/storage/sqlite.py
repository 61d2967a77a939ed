"""The embedded ledger: a SQLite file, written in batches by one thread off the request path
(see :mod:`.batch`: no system call per row, a crash loses at most the last ``linger``
seconds). Columns added by newer versions are added to an older file on open. Reports sum in
SQL (:mod:`.totals`), over per-hour sums the writer keeps (:mod:`.hourly`) and an index on
``(ts, caller)`` for the minutes at the edges of a range."""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from functools import lru_cache
from operator import attrgetter
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError, StorageError
from .totals import Dialect, Key, Totals, fixed_money, sql_aggregate, where_clause
from .base import COUNT_COLUMNS, LEDGER_COLUMNS, LedgerQuery, LedgerRow
from .batch import BatchWriter
from .hourly import SUMMED, behind, catch_up, create_hourly, hourly_parts, settle, store_sums, sum_rows

__all__ = ["SQLITE", "SQLiteLedger", "row_from_values", "where_clause"]

logger = logging.getLogger("asgi_ai_relay")

_TYPES = {
    "ts": "REAL NOT NULL", "stream": "INTEGER", "status": "INTEGER", "prompt_tokens": "INTEGER",
    "completion_tokens": "INTEGER", "cached_tokens": "INTEGER", "cost_usd": "TEXT", "cache_hit": "INTEGER",
    "latency_ms": "REAL", "ttfb_ms": "REAL", "upstream_ms": "REAL", "attempts": "INTEGER", "estimated": "INTEGER",
    "cache_saved_usd": "TEXT", "counted_prompt_tokens": "INTEGER",
    **{name: "INTEGER" for name in COUNT_COLUMNS[3:]},
}
_DEFAULTS = {"cache_saved_usd": "'0'", "estimated": "0", "attempts": "0", **{name: "0" for name in COUNT_COLUMNS[3:]}}
#: Each cost as two integers SQLite sums exactly (see :func:`.totals.fixed_money`).
_FIXED = ("cost_u", "cost_f", "saved_u", "saved_f")
_COLUMNS = (*LEDGER_COLUMNS, *_FIXED, SUMMED)
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS relay_usage (id INTEGER PRIMARY KEY AUTOINCREMENT, "
    + ", ".join(f"{name} {_TYPES.get(name, 'TEXT')}" for name in LEDGER_COLUMNS)
    + ", " + ", ".join(f"{name} INTEGER" for name in (*_FIXED, SUMMED))
    + ")"
)
#: Rows stored by one statement, before the writer thread yields the processor. Written in one
#: go, a batch kept the event loop's thread waiting for the GIL for the whole batch (about 5 us
#: a row; 1.3 ms for the 240 rows of 50 ms at 4,800 requests/s), and the requests that ran
#: meanwhile carried it: at one connection the p99 was 1.6 ms against 0.6 ms with the in-memory
#: ledger. Yielding every few rows lets the loop thread in within about 100 us (p99 0.6 ms); the
#: rows stay one transaction.
_YIELD_EVERY = 16
_yield: Callable[[], object] = getattr(os, "sched_yield", None) or (lambda: time.sleep(0))
_SELECT = f"SELECT {', '.join(LEDGER_COLUMNS)} FROM relay_usage"
_FLAGS = ("stream", "cache_hit", "estimated")
#: Seconds a statement waits for another process's write lock on the same file.
BUSY_TIMEOUT = 5.0
#: Seconds between an idle writer's looks for rows other writers added unsummed.
CATCH_UP_EVERY = 1.0
#: Seconds a reader waits for the writer to store what was recorded before it reads.
READ_WAIT = 2.0
SQLITE = Dialect(
    mark="?", least="MIN", period=lambda name, ts: f"strftime('{'%Y-%m-%d' if name == 'day' else '%Y-%m'}', {ts}, 'unixepoch')",
    flag=lambda expr: f"({expr})",
    money=lambda name: f"SUM({name}_u), SUM({name}_f / 1000000), SUM({name}_f % 1000000), COUNT({name}_u)",
    unfixed="cost_u IS NULL",
)


_COLUMN_VALUES = attrgetter(*LEDGER_COLUMNS)
_FLAGS_OF = attrgetter(*_FLAGS)
_COST, _SAVED = LEDGER_COLUMNS.index("cost_usd"), LEDGER_COLUMNS.index("cache_saved_usd")
_STREAM, _HIT, _ESTIMATED = (LEDGER_COLUMNS.index(name) for name in _FLAGS)
_UNFIXED = (None, None, None, None, 1)


def _values(row: LedgerRow) -> tuple[object, ...]:
    values = list(_COLUMN_VALUES(row))
    cost, saved = row.cost_usd, row.cache_saved_usd
    values[_COST], values[_SAVED] = str(cost), str(saved)
    # Flags as plain ints: sqlite3 binds only exact int/float/str/bytes/None directly; a bool
    # goes through its adaptation protocol, which looks up (and fails to find) ``__conform__``
    # and formats an AttributeError: about 13k instructions per flag, per row.
    values[_STREAM], values[_HIT], values[_ESTIMATED] = map(int, _FLAGS_OF(row))
    fixed = (*fixed_money(cost), *fixed_money(saved), 1)
    # (one of them summed from the text: both are)
    values += fixed if None not in fixed else _UNFIXED
    return tuple(values)


#: The columns a row may leave NULL (the optional fields and the fixed-point costs); the
#: others are written whatever they hold.
_NULLABLE = tuple(i for i, name in enumerate(_COLUMNS)
                  if name in _FIXED or "None" in str(LedgerRow.__annotations__.get(name, "")))


def _nulls(columns: Sequence[Sequence[object]], n: int) -> tuple[bool, ...]:
    """For each nullable column, whether all ``n`` rows leave it NULL (a tuple compared with
    one of Nones stops at its first value that is not: one comparison for most columns)."""
    nones = _NONES[n]
    return tuple([columns[i] == nones for i in _NULLABLE])


#: Rows taken by column at a time (which columns they all leave NULL, their per-hour sums).
_BY_COLUMN = 64
_NONES = [(None,) * n for n in range(_BY_COLUMN + 1)]


@lru_cache(maxsize=256)
def _insert_for(nulls: tuple[bool, ...], rows: int) -> tuple[str, tuple[int, ...]]:
    """The INSERT of ``rows`` rows of the columns not left NULL by every one of them (the rest
    default to NULL), and those columns' positions. Its values are bound column by column
    (numbered parameters: row ``r`` of the ``j``-th column is ``?(j * rows + r + 1)``), so the
    writer binds the columns it holds as they are, with no row rebuilt.

    sqlite3 binds only exact int, float, str and bytes directly: None goes through its
    adaptation protocol, which looks for ``__conform__`` and formats the AttributeError it does
    not find, several thousand instructions per NULL; a row has ten or so, nearly always the
    same ones as the other rows of its batch. And it steps each row of an ``executemany`` with
    the GIL released and takes it back to bind the next: with the event loop's thread waiting for
    the GIL, every row cost two thread switches (2.4 a request at 64 connections, against 0.2
    with the in-memory ledger); one statement of many rows releases it once for all of them."""
    dropped = {i for i, null in zip(_NULLABLE, nulls) if null}
    kept = tuple(i for i in range(len(_COLUMNS)) if i not in dropped)
    names = ", ".join(_COLUMNS[i] for i in kept)
    values = ", ".join("(" + ", ".join(f"?{j * rows + r + 1}" for j in range(len(kept))) + ")" for r in range(rows))
    return f"INSERT INTO relay_usage ({names}) VALUES {values}", kept


def row_from_values(values: tuple[Any, ...]) -> LedgerRow:
    """A stored row back into a :class:`LedgerRow` (SQLite and PostgreSQL)."""
    data = dict(zip(LEDGER_COLUMNS, values, strict=True))
    for flag in _FLAGS:
        data[flag] = bool(data[flag])
    for money in ("cost_usd", "cache_saved_usd"):
        data[money] = Decimal(data[money] if data[money] is not None else 0)
    return LedgerRow(**data)


class SQLiteLedger:
    """One file, written by one thread per process; several processes may share the file (WAL,
    a busy timeout and bounded retries of a batch). ``record`` after :meth:`close` writes the
    row at once, on the caller's thread."""

    def __init__(self, path: str, *, batch: int = 500, linger: float = 0.05, busy_timeout: float = BUSY_TIMEOUT) -> None:
        if not path:
            raise ConfigurationError("storage.ledger: sqlite:///PATH needs a path")
        self.path = path
        self.busy_timeout = busy_timeout
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # the writer's connection
        self._conn: sqlite3.Connection | None = self._connect()
        self._read_lock = threading.Lock()  # the readers' connection
        self._reader: sqlite3.Connection | None = None
        self._writer: BatchWriter[tuple[object, ...]] = BatchWriter(
            self._write, name="asgi-ai-relay-ledger", batch=batch, linger=linger, retry_on=(sqlite3.OperationalError,),
            idle=self._catch_up, interval=CATCH_UP_EVERY,
        )

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout, check_same_thread=False, isolation_level=None)
            _use_wal(conn, self.busy_timeout)
            conn.execute("PRAGMA synchronous=NORMAL")
            with conn:  # one write transaction: a second process opening the file waits, then sees it all
                conn.execute("BEGIN IMMEDIATE")
                conn.execute(_SCHEMA)
                present = {r[1] for r in conn.execute("PRAGMA table_info(relay_usage)")}
                for name in _COLUMNS:
                    if name not in present:
                        default = f" DEFAULT {_DEFAULTS[name]}" if name in _DEFAULTS else ""
                        kind = "INTEGER" if name in _FIXED or name == SUMMED else _TYPES.get(name, "TEXT")
                        conn.execute(f"ALTER TABLE relay_usage ADD COLUMN {name} {kind}{default}")
                conn.execute("CREATE INDEX IF NOT EXISTS relay_usage_ts_caller ON relay_usage (ts, caller)")
                create_hourly(conn)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open the SQLite ledger at {self.path}: {exc}") from exc
        return conn

    def record(self, row: LedgerRow) -> None:
        # Queued as a tuple of plain values: the garbage collector stops tracking it, so rows
        # waiting for their batch do not count towards (and trigger) full collections.
        self._writer.put(_values(row))

    def _write(self, rows: list[tuple[object, ...]]) -> None:
        """Store ``rows`` in one transaction (raises: the writer retries, then drops one by one)."""
        with self._lock:
            conn = self._conn or self._connect()
            try:
                with conn:
                    conn.execute("BEGIN IMMEDIATE")
                    catch_up(conn)  # other writers' unsummed rows, before this batch's own
                    sums: dict[tuple[Any, ...], list[int]] = {}
                    for first in range(0, len(rows), _BY_COLUMN):
                        part = rows[first:first + _BY_COLUMN]
                        columns = list(zip(*part))
                        nulls = _nulls(columns, len(part))
                        start = 0
                        while start < len(part):
                            # 16 rows a statement, the rest in fewer by powers of two (five statements in all)
                            size = min(_YIELD_EVERY, 1 << (len(part) - start).bit_length() - 1)
                            insert, kept = _insert_for(nulls, size)
                            values: list[object] = []
                            if size == len(part):
                                for i in kept:
                                    values += columns[i]
                            else:
                                end = start + size
                                for i in kept:
                                    values += columns[i][start:end]
                            conn.execute(insert, values)
                            start += size
                            _yield()
                        sum_rows(part, _COLUMNS, sums, columns)
                    store_sums(conn, sums)  # the batch's per-hour sums, in the same transaction
                    settle(conn)
            finally:
                if conn is not self._conn:
                    conn.close()

    def _catch_up(self) -> None:
        """The writer thread, idle: sum what other writers added unsummed (see :mod:`.hourly`)."""
        with self._lock:
            conn = self._conn
            if conn is None:
                return
            try:
                if behind(conn):
                    with conn:
                        conn.execute("BEGIN IMMEDIATE")
                        catch_up(conn)
                        settle(conn)
            except sqlite3.OperationalError as exc:  # the file is busy: the next turn or batch does it
                logger.debug("ledger: catching up the per-hour sums failed: %s", exc)

    @property
    def dropped(self) -> int:
        """Rows that could not be written, however often they were tried."""
        return self._writer.dropped

    def health(self) -> dict[str, Any]:
        """``ok`` (the writer runs and its last write succeeded), ``behind`` (rows recorded, not
        yet stored), ``dropped``, ``last_error``."""
        writer = self._writer
        return {"ok": writer.alive and not writer.failing, "behind": writer.queued, "spooled": 0, "dropped": writer.dropped, "last_error": writer.last_error}

    def wait_ready(self, timeout: float = 0.0) -> bool:
        """Whether the file is open (it is opened by the constructor, which raises otherwise)."""
        return True

    def flush(self) -> None:
        self._writer.flush()

    @contextmanager
    def _reading(self) -> Iterator[Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]]:
        """A fetch function over one snapshot of the file, on a connection of the readers' own:
        a reader waits for the writer at most ``READ_WAIT`` seconds, never for its lock."""
        self._writer.flush(timeout=READ_WAIT)
        with self._read_lock:
            if self._reader is None:
                self._reader = sqlite3.connect(self.path, timeout=self.busy_timeout, check_same_thread=False,
                                               isolation_level=None)
            conn = self._reader
            conn.execute("BEGIN")
            try:
                yield lambda sql, params: conn.execute(sql, params).fetchall()
            finally:
                conn.execute("COMMIT")
                if self._writer.closed:
                    conn.close()
                    self._reader = None

    def query(self, query: LedgerQuery) -> list[LedgerRow]:
        where, params = where_clause(query)
        with self._reading() as fetch:
            return [row_from_values(v) for v in fetch(f"{_SELECT}{where} ORDER BY id", params)]

    def aggregate(self, query: LedgerQuery, group_by: Sequence[str], *, latencies: bool = True) -> dict[Key, Totals]:
        """See :func:`.totals.sql_aggregate`."""
        with self._reading() as fetch:
            return sql_aggregate(fetch, SQLITE, "relay_usage", query, group_by, latencies=latencies,
                                 parts=hourly_parts(query))

    def rows(self) -> list[LedgerRow]:
        return self.query(LedgerQuery())

    def close(self) -> None:
        if self._writer.closed:
            return
        self._writer.close()
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
        with self._read_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None


def _use_wal(conn: sqlite3.Connection, patience: float) -> None:
    """Switch the file to WAL. Changing the journal mode takes the whole file, and SQLite does
    not wait on its busy handler for that: two processes opening a new file at once get
    "database is locked" here, so the switch is retried.

    :raises sqlite3.OperationalError: when the file stays locked for ``patience`` seconds.
    """
    deadline = time.monotonic() + patience
    pause = 0.01
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL").fetchone()  # an in-memory file answers "memory"
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
        if time.monotonic() >= deadline:
            raise sqlite3.OperationalError("database is locked (switching to WAL)")
        time.sleep(pause)
        pause = min(pause * 2, 0.2)
