"""The multi-host ledger: PostgreSQL through psycopg 3, written in batches off the request path.

    storage.ledger = "postgresql://user@db.internal:5432/relay?table=relay_usage&spool=/var/lib/relay/spool.db"

``table`` (default ``relay_usage``) and ``spool`` are the query parameters the relay reads; every
other one goes to libpq. Costs are ``NUMERIC``, so sums stay exact.

Only the writer thread connects for writing, so neither building the ledger nor recording a row
waits on the network. Batches go in with ``COPY`` into a temporary table and one
``INSERT ... ON CONFLICT (row_id) DO NOTHING``: every row carries a unique id made when it is
recorded, so a batch tried twice (its commit lost with the connection) is stored once. While
the database cannot be reached, rows go to a bounded local spool (:mod:`.spool`; by default a
file in the temporary directory named after the database and table) and the writer retries in
the background with a growing pause; when the database answers, the spool is written, oldest
first, before any newer row. One log line marks each change between reachable and not.
:meth:`PostgresLedger.health` and :meth:`PostgresLedger.wait_ready` tell the relay where it stands.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

from ..errors import StorageError
from .base import LEDGER_COLUMNS, LedgerQuery, LedgerRow
from .batch import BatchWriter
from .postgres_schema import DEFAULTS, INCOMING, MONEY, POSTGRES, create_table, default_spool, incoming_table, split_options, split_table
from .spool import Spool
from .sqlite import row_from_values
from .totals import Key, Totals, sql_aggregate, where_clause

__all__ = ["POSTGRES", "PostgresLedger", "split_options", "split_table"]

logger = logging.getLogger("asgi_ai_relay")

#: libpq settings that let a dead peer be noticed in seconds rather than the system's hours.
_KEEPALIVE: dict[str, Any] = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3,
              "tcp_user_timeout": 10_000}
_FIRST_RETRY, _LAST_RETRY = 0.5, 15.0
#: Spooled rows written to the database per transaction while catching up.
_REPLAY = 5000
#: Seconds a reader waits for the writer before it reads.
READ_WAIT = 2.0


class PostgresLedger:
    """:param connect_timeout: seconds one connection attempt may take (libpq rounds to >= 2)."""

    def __init__(self, uri: str, *, batch: int = 500, linger: float = 0.05, connect_timeout: int = 3) -> None:
        import psycopg  # the postgres extra; imported only when this backend is named

        self._psycopg = psycopg
        self.dsn, options = split_options(uri)
        self.table = options["table"]
        self.spool = Spool(options.get("spool") or default_spool(self.dsn, self.table), money=MONEY, defaults=DEFAULTS)
        self.connect_timeout = connect_timeout
        #: "starting", "up" (the database answers) or "down" (rows spool).
        self.state = "starting"
        self.last_error: str | None = None
        self._conn: Any = None  # the writer thread's
        self._reader: Any = None
        self._reader_lock = threading.Lock()
        self._ready = threading.Event()
        self._retry_at = 0.0
        self._pause = _FIRST_RETRY
        self._ids = f"{uuid.uuid4().hex}-"
        self._counter = itertools.count()
        names = ", ".join(LEDGER_COLUMNS)
        self._copy_sql = f"COPY {INCOMING} (row_id, {names}) FROM STDIN"
        self._merge_sql = (f"INSERT INTO {self.table} (row_id, {names}) SELECT row_id, {names} FROM {INCOMING} "
                           "ON CONFLICT (row_id) DO NOTHING")
        self._writer: BatchWriter[tuple[Any, ...]] = BatchWriter(
            self._write, name="asgi-ai-relay-ledger-pg", batch=batch, linger=linger, idle=self._tick
        )

    # -- the writer thread ---------------------------------------------------------------

    def _connect(self) -> Any:
        conn = self._psycopg.connect(self.dsn, autocommit=True, connect_timeout=self.connect_timeout, **_KEEPALIVE)
        try:
            for attempt in (1, 2):
                try:
                    create_table(conn, self.table)
                    break
                except (self._psycopg.errors.UniqueViolation, self._psycopg.errors.DuplicateTable):
                    if attempt == 2:  # two processes created the table at once: the second try sees it
                        raise
            conn.execute(incoming_table(self.table))
        except BaseException:
            conn.close()
            raise
        return conn

    def _reachable(self) -> bool:
        """Connected, or connected now (when the pause after the last failure is over)."""
        if self._conn is not None:
            return True
        if time.monotonic() < self._retry_at:
            return False
        try:
            self._conn = self._connect()
        except Exception as exc:
            self._lost(exc)
            return False
        self._pause = _FIRST_RETRY
        self._set_state("up")
        return True

    def _lost(self, exc: BaseException) -> None:
        self.last_error = f"{type(exc).__name__}: {str(exc).strip()}"
        self._retry_at = time.monotonic() + self._pause
        self._pause = min(self._pause * 2, _LAST_RETRY)
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:
                pass
            self._conn = None
        self._set_state("down")

    def _set_state(self, state: str) -> None:
        previous, self.state = self.state, state
        if state == previous:
            return
        if state == "up":
            self._ready.set()
            if previous == "down":
                logger.warning("ledger: PostgreSQL table %s is reachable again; writing %d spooled rows",
                               self.table, len(self.spool))
        else:
            self._ready.clear()
            logger.error("ledger: PostgreSQL table %s is unreachable (%s); spooling rows to %s and retrying",
                         self.table, self.last_error, self.spool.path)

    def _copy(self, rows: Sequence[tuple[Any, ...]]) -> None:
        with self._conn.transaction(), self._conn.cursor() as cursor:
            with cursor.copy(self._copy_sql) as copy:
                for row in rows:
                    copy.write_row(row)
            cursor.execute(self._merge_sql)

    def _write(self, rows: list[tuple[Any, ...]]) -> None:
        if self._writer.closed and threading.current_thread().name != self._writer.name:
            self.spool.add(rows)  # recorded after close: never a connection on the caller's thread
            return
        if not len(self.spool) and self._reachable():
            try:
                self._copy(rows)
                return
            except self._psycopg.OperationalError as exc:
                self._lost(exc)
        self.spool.add(rows)
        self._replay()

    def _tick(self) -> None:
        if (self.spool.count() or self._conn is None) and self._reachable():
            self._replay()

    def _replay(self) -> None:
        while len(self.spool) and self._reachable():
            found = self.spool.oldest(_REPLAY)
            if not found:
                self.spool.count()
                return
            done = self._replay_rows(found)
            self.spool.remove(done)
            if len(done) < len(found):
                return

    def _replay_rows(self, found: list[tuple[int, tuple[Any, ...]]]) -> list[int]:
        """Write spooled rows; the sequence numbers of those stored (or dropped as unstorable)."""
        try:
            self._copy([row for _, row in found])
            return [seq for seq, _ in found]
        except self._psycopg.OperationalError as exc:
            self._lost(exc)
            return []
        except self._psycopg.Error:
            pass
        done: list[int] = []
        for seq, row in found:  # one bad row: the others go in alone, it is dropped
            try:
                self._copy([row])
            except self._psycopg.OperationalError as exc:
                self._lost(exc)
                return done
            except self._psycopg.Error as exc:
                self._writer.dropped += 1
                logger.error("ledger: dropped a spooled row PostgreSQL refused: %s", exc)
            done.append(seq)
        return done

    # -- the relay's side ----------------------------------------------------------------

    def record(self, row: LedgerRow) -> None:
        # A tuple of plain values, as the SQLite ledger queues (untracked by the collector).
        self._writer.put((f"{self._ids}{next(self._counter)}", *(getattr(row, c) for c in LEDGER_COLUMNS)))

    @property
    def dropped(self) -> int:
        """Rows lost: refused by the database, or past the spool's bound."""
        return self._writer.dropped + self.spool.dropped

    def health(self) -> dict[str, Any]:
        """``ok`` (the database answers), ``state``, ``behind`` (rows recorded and not yet in the
        database: queued or spooled), ``spooled``, ``dropped``, ``last_error``."""
        spooled = len(self.spool)
        return {"ok": self.state == "up", "state": self.state, "behind": self._writer.queued + spooled,
                "spooled": spooled, "dropped": self.dropped, "last_error": self.last_error}

    def wait_ready(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the database to answer; whether it does."""
        return self._ready.wait(timeout)

    def flush(self) -> None:
        self._writer.flush()

    def _fetch(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """:raises StorageError: when the database cannot be read."""
        self._writer.flush(timeout=READ_WAIT)
        psycopg = self._psycopg
        with self._reader_lock:
            try:
                if self._reader is None:
                    self._reader = psycopg.connect(self.dsn, autocommit=True, connect_timeout=self.connect_timeout, **_KEEPALIVE)
                return [tuple(values) for values in self._reader.execute(sql, params).fetchall()]
            except psycopg.Error as exc:
                if self._reader is not None:
                    self._reader.close()
                    self._reader = None
                raise StorageError(f"cannot read the PostgreSQL ledger table {self.table}: {exc}") from exc

    def query(self, query: LedgerQuery) -> list[LedgerRow]:
        where, params = where_clause(query, "%s")
        sql = f"SELECT {', '.join(LEDGER_COLUMNS)} FROM {self.table}{where} ORDER BY id"
        return [row_from_values(values) for values in self._fetch(sql, params)]

    def aggregate(self, query: LedgerQuery, group_by: Sequence[str], *, latencies: bool = True) -> dict[Key, Totals]:
        """See :func:`.totals.sql_aggregate`."""
        return sql_aggregate(self._fetch, POSTGRES, self.table, query, group_by, latencies=latencies)

    def rows(self) -> list[LedgerRow]:
        return self.query(LedgerQuery())

    def close(self) -> None:
        if self._writer.closed:
            return
        self._writer.close()
        with self._reader_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self.spool.close()
