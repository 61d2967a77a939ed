"""The PostgreSQL ledger's table: the relay's URI options, the columns and indexes, and the
SQL dialect its reports are summed in. :mod:`.postgres` writes and reads it.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..errors import ConfigurationError
from .base import COUNT_COLUMNS, LEDGER_COLUMNS, LedgerRow
from .totals import Dialect

__all__ = ["DEFAULTS", "INCOMING", "MONEY", "POSTGRES", "create_table", "default_spool", "incoming_table", "split_options", "split_table"]

_TABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_TYPES = {
    "ts": "DOUBLE PRECISION NOT NULL", "stream": "BOOLEAN", "status": "INTEGER", "prompt_tokens": "BIGINT",
    "completion_tokens": "BIGINT", "cached_tokens": "BIGINT", "cost_usd": "NUMERIC", "cache_hit": "BOOLEAN",
    "latency_ms": "DOUBLE PRECISION", "ttfb_ms": "DOUBLE PRECISION", "upstream_ms": "DOUBLE PRECISION",
    "attempts": "INTEGER", "estimated": "BOOLEAN", "cache_saved_usd": "NUMERIC NOT NULL DEFAULT 0",
    "counted_prompt_tokens": "BIGINT", **{name: "BIGINT NOT NULL DEFAULT 0" for name in COUNT_COLUMNS[3:]},
}
_COLUMNS = ("row_id", *LEDGER_COLUMNS)
#: A queued row's default values (``row_id`` and every ledger column), completing older spooled rows.
DEFAULTS = (None, *(None if f.default is MISSING else f.default for f in fields(LedgerRow)))
#: Positions of the money columns in a queued row (spooled as text).
MONEY = tuple(i for i, name in enumerate(_COLUMNS) if name in ("cost_usd", "cache_saved_usd"))
INCOMING = "relay_ledger_incoming"
POSTGRES = Dialect(
    mark="%s", least="LEAST",
    period=lambda name, ts: f"to_char(to_timestamp({ts}) AT TIME ZONE 'UTC', '{'YYYY-MM-DD' if name == 'day' else 'YYYY-MM'}')",
    flag=lambda expr: f"({expr})::int",
    money=lambda name: f"SUM({'cost_usd' if name == 'cost' else 'cache_saved_usd'}) * 1000000, 0, 0, COUNT(*)",
    unfixed=None, modulo="%%",
)


def split_options(uri: str) -> tuple[str, dict[str, str]]:
    """The libpq URI without the relay's parameters, and those (``table``, ``spool``).

    :raises ConfigurationError: for a table name that is not a plain SQL identifier.
    """
    parts = urlsplit(uri)
    params = parse_qsl(parts.query, keep_blank_values=True)
    options = {"table": "relay_usage", **{k: v for k, v in params if k in ("table", "spool")}}
    if not _TABLE.fullmatch(options["table"]):
        raise ConfigurationError(f"storage.ledger: table must be a plain identifier, got {options['table']!r}")
    rest = urlencode([(k, v) for k, v in params if k not in ("table", "spool")])
    return urlunsplit(parts._replace(query=rest)), options


def split_table(uri: str) -> tuple[str, str]:
    """The libpq URI without ``table=`` (and ``spool=``), and the table name.

    :raises ConfigurationError: for a table name that is not a plain SQL identifier.
    """
    dsn, options = split_options(uri)
    return dsn, options["table"]


def default_spool(dsn: str, table: str) -> str:
    """The spool file when the URI names none: in the temporary directory, one per database and table."""
    digest = hashlib.sha256(f"{dsn}|{table}".encode()).hexdigest()[:16]
    return str(Path(tempfile.gettempdir()) / f"asgi-ai-relay-spool-{table}-{digest}.db")


def create_table(conn: Any, t: str) -> None:
    """Create ``t`` with every column and index the ledger needs, or add those it lacks."""
    columns = ", ".join(f"{name} {_TYPES.get(name, 'TEXT')}" for name in _COLUMNS)
    conn.execute(f"CREATE TABLE IF NOT EXISTS {t} (id BIGSERIAL PRIMARY KEY, {columns})")
    for name in _COLUMNS:
        conn.execute(f"ALTER TABLE {t} ADD COLUMN IF NOT EXISTS {name} {_TYPES.get(name, 'TEXT')}")
    conn.execute(f"CREATE INDEX IF NOT EXISTS {t}_ts ON {t} (ts)")
    conn.execute(f"CREATE INDEX IF NOT EXISTS {t}_ts_caller ON {t} (ts, caller)")
    conn.execute(f"CREATE UNIQUE INDEX IF NOT EXISTS {t}_row_id ON {t} (row_id)")


def incoming_table(table: str) -> str:
    """The statement creating this connection's staging table for ``COPY`` (emptied at each commit)."""
    return (f"CREATE TEMP TABLE IF NOT EXISTS {INCOMING} ON COMMIT DELETE ROWS AS "
            f"SELECT row_id, {', '.join(LEDGER_COLUMNS)} FROM {table} WITH NO DATA")
