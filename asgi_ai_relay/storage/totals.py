"""Usage totals per group, computed where the rows are: ``SUM ... GROUP BY`` in SQLite and
PostgreSQL (one pass over the matching rows, no row reaches Python), a loop in memory
(:mod:`.sums`, which also holds :class:`Totals`).

A group is keyed by the model (``""`` for none) and then the value of each ``group_by`` name;
reports and budget seeding roll those finest groups up. Money stays exact: PostgreSQL sums
``NUMERIC``; SQLite sums each cost as two integers (whole micro-dollars, and the rest in units of
1e-18 USD) and adds in Python the few costs finer than that (or rows written before those columns
existed). Latency percentiles are nearest-rank over every matching row up to :data:`SAMPLE` rows;
past that, over a sample of that size picked by a hash of the row id (each group weighted to its
full count, a group no sampled row falls in read whole): within about a percent of rank.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from .base import COUNT_COLUMNS, LedgerQuery
from .sums import COLUMN_OF, EXTRA_SUMS, GROUPS, Key, Totals, aggregate_rows, percentiles

__all__ = ["GROUPS", "SAMPLE", "Dialect", "Key", "Source", "Totals", "add_sums", "aggregate", "aggregate_rows", "fixed_money", "percentiles",
           "spend_totals", "sql_aggregate", "where_clause"]

#: Latencies read for the percentiles of one report, at most (about).
SAMPLE = 50_000
_ZERO = Decimal(0)
_MICRO = 10**12  # units of 1e-18 USD in one micro-dollar
_ATTO = 10**18  # units of 1e-18 USD in one dollar

Fetch = Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]


def fixed_money(usd: Decimal) -> tuple[int, int] | tuple[None, None]:
    """``usd`` as (whole micro-dollars, rest in 1e-18 USD), which SQLite sums exactly as
    integers; ``(None, None)`` when finer than 1e-18, negative, not finite or 1e12 and more
    (summed from the text)."""
    if not usd:
        return 0, 0
    # (exact whatever its digits: a ratio, no rounding to the context's precision; bounded
    # first by its leading digit, so no huge integer is ever made)
    if usd.is_finite() and -19 < usd.adjusted() < 12:  # (a trillion dollars and more: not in a 64-bit sum either)
        numerator, denominator = usd.as_integer_ratio()
        per, rest = divmod(_ATTO, denominator)
        if not rest and numerator > 0:
            return divmod(numerator * per, _MICRO)
    return None, None


def where_clause(query: LedgerQuery, mark: str = "?", time: str = "ts") -> tuple[str, list[Any]]:
    """`` WHERE ...`` for ``query`` with ``mark`` placeholders, and its parameters."""
    parts: list[str] = []
    params: list[Any] = []
    for column, op, value in (
        ("caller", "=", query.caller), ("model", "=", query.model),
        (time, ">=", query.since), (time, "<", query.until),
        ("key_id", "=", query.key_id), ("team", "=", query.team),
    ):
        if value is not None:
            parts.append(f"{column} {op} {mark}")
            params.append(value)
    if query.endpoints is not None:
        parts.append(f"endpoint IN ({', '.join(mark for _ in query.endpoints)})" if query.endpoints else "1 = 0")
        params.extend(query.endpoints)
    return (" WHERE " + " AND ".join(parts) if parts else ""), params


@dataclass(frozen=True, slots=True)
class Dialect:
    """What differs between the SQL of SQLite and of PostgreSQL."""

    mark: str
    least: str
    #: ``day`` or ``month``, and a column of Unix seconds -> the expression of its UTC day or month.
    period: Callable[[str, str], str]
    #: A boolean expression as 0/1.
    flag: Callable[[str], str]
    #: ``cost`` or ``saved`` -> four expressions: micro-dollars, 1e-12 and 1e-18 parts, rows counted.
    money: Callable[[str], str]
    #: Rows whose money the integer sums do not hold (SQLite), or ``None``.
    unfixed: str | None
    #: The modulo operator as written in a statement with parameters.
    modulo: str = "%"


@dataclass(frozen=True, slots=True)
class Source:
    """Where sums are read: the ledger's rows, or a table of sums of them (SQLite's per hour)."""

    table: str
    #: Its column of Unix seconds.
    time: str = "ts"
    #: The aggregate expressions in :class:`Totals`' order (``None``: those of the rows).
    sums: str | None = None


def row_sums(dialect: Dialect) -> str:
    flag = dialect.flag
    return (
        f"COUNT(*), SUM({flag('status >= 400')}), SUM(prompt_tokens), SUM(completion_tokens), SUM(cached_tokens), "
        f"SUM({flag('cache_hit')}), SUM({flag('estimated')}), SUM({flag('prompt_tokens > 0 OR completion_tokens > 0')}), "
        f"SUM(CASE WHEN prompt_tokens > 0 OR completion_tokens > 0 THEN {dialect.least}(cached_tokens, prompt_tokens) END), "
        f"{dialect.money('cost')}, {dialect.money('saved')}, "
        + ", ".join(f"SUM({name})" for name in COUNT_COLUMNS[3:]) + f", SUM({flag('usage_flag IS NOT NULL')})"
    )


def _key_sql(dialect: Dialect, group_by: Sequence[str], time: str = "ts") -> list[str]:
    keys = ["COALESCE(model, '')"]
    for name in group_by:
        if name in ("day", "month"):
            keys.append(dialect.period(name, time))
        else:
            keys.append(f"COALESCE({COLUMN_OF.get(name, name)}, '')")
    return keys


def _and(where: str, condition: str) -> str:
    return f"{where} AND {condition}" if where else f" WHERE {condition}"


def _decimal(parts: Sequence[Any]) -> Decimal:
    micro, mid, low = (Decimal(p or 0) for p in parts)
    return micro.scaleb(-6) + mid.scaleb(-12) + low.scaleb(-18)


def add_sums(
    fetch: Fetch, dialect: Dialect, source: Source, rows: str, query: LedgerQuery, group_by: Sequence[str],
    out: dict[Key, Totals],
) -> None:
    """Add to ``out`` the sums ``source`` holds for ``query``; ``rows`` is the table of the rows
    themselves (read for money the integer sums do not hold)."""
    keys = _key_sql(dialect, group_by, source.time)
    width = len(keys)
    where, params = where_clause(query, dialect.mark, source.time)
    grouping = ", ".join(str(i) for i in range(1, width + 1))
    sql = f"SELECT {', '.join(keys)}, {source.sums or row_sums(dialect)} FROM {source.table}{where} GROUP BY {grouping}"
    unfixed = False
    for values in fetch(sql, params):
        key, (count, errors, prompt, completion, cached, hits, estimated, token_rows, cached_prompt) = (
            tuple(values[:width]), (int(v or 0) for v in values[width:width + 9]))
        money = values[width + 9:width + 17]
        totals = Totals(count, errors, prompt, completion, cached, _decimal(money[0:3]), hits, _decimal(money[4:7]),
                        estimated, token_rows, cached_prompt)
        for name, value in zip(EXTRA_SUMS, values[width + 17:], strict=True):
            setattr(totals, name, int(value or 0))
        if key in out:
            out[key].merge(totals)
        else:
            out[key] = totals
        unfixed = unfixed or int(money[3] or 0) < count
    if unfixed and dialect.unfixed is not None:
        keys = _key_sql(dialect, group_by)
        where, params = where_clause(query, dialect.mark)
        sql = f"SELECT {', '.join(keys)}, cost_usd, cache_saved_usd FROM {rows}{_and(where, dialect.unfixed)}"
        for values in fetch(sql, params):
            totals = out[tuple(values[:width])]
            totals.cost_usd += Decimal(values[width] or 0)
            totals.saved_usd += Decimal(values[width + 1] or 0)


def sql_aggregate(
    fetch: Fetch, dialect: Dialect, table: str, query: LedgerQuery, group_by: Sequence[str], *,
    latencies: bool = True, parts: Sequence[tuple[Source, LedgerQuery]] | None = None,
) -> dict[Key, Totals]:
    """:func:`aggregate_rows` in SQL, over the rows of ``table`` (or over ``parts`` that
    together cover ``query`` exactly). ``group_by`` must hold only :data:`GROUPS` (checked by
    the caller: the names go into the statement)."""
    out: dict[Key, Totals] = {}
    for source, part in parts if parts is not None else [(Source(table), query)]:
        add_sums(fetch, dialect, source, table, part, group_by, out)
    if latencies and out:
        where, params = where_clause(query, dialect.mark)
        _sample_latencies(fetch, dialect, table, _key_sql(dialect, group_by), where, params, out)
    return out


def _sample_latencies(
    fetch: Fetch, dialect: Dialect, table: str, keys: list[str], where: str, params: list[Any], out: dict[Key, Totals]
) -> None:
    width = len(keys)
    total = sum(t.requests for t in out.values())
    select = f"SELECT {', '.join(keys)}, latency_ms FROM {table}"
    sampled = where
    if total > SAMPLE:
        # A multiplicative hash of the id picks the rows: every n-th id would alias with
        # traffic that repeats (a caller on every 50th request never sampled at n = 20).
        threshold = SAMPLE * 2**32 // total
        sampled = _and(where, f"(id * 2654435761) {dialect.modulo} 4294967296 < {threshold}")
    seen: dict[Key, list[float]] = {}
    for values in fetch(select + sampled, params):
        seen.setdefault(tuple(values[:width]), []).append(float(values[width] or 0.0))
    missing = [key for key in out if key not in seen]
    for start in range(0, len(missing), 200):
        chunk = missing[start:start + 200]
        row = "(" + ", ".join(dialect.mark for _ in keys) + ")"
        condition = f"({', '.join(keys)}) IN (VALUES {', '.join(row for _ in chunk)})"
        for values in fetch(select + _and(where, condition), [*params, *(v for key in chunk for v in key)]):
            seen.setdefault(tuple(values[:width]), []).append(float(values[width] or 0.0))
    for key, totals in out.items():
        got = seen.get(key, [])
        weight = totals.requests / len(got) if got else 0.0
        totals.latencies = [(latency, weight) for latency in got]


def aggregate(ledger: Any, query: LedgerQuery, group_by: Sequence[str] = (), *, latencies: bool = True) -> dict[Key, Totals]:
    """The totals of the rows ``query`` selects, per model and ``group_by`` values: summed by
    the ledger when it can (``ledger.aggregate``), else over its rows here. Blocking."""
    own = getattr(ledger, "aggregate", None)
    if own is not None:
        result: dict[Key, Totals] = own(query, group_by, latencies=latencies)
        return result
    select = getattr(ledger, "query", None)
    rows = select(query) if select is not None else [row for row in ledger.rows() if query.matches(row)]
    return aggregate_rows(rows, group_by)


def spend_totals(ledger: Any, month_start: float, day_start: float) -> dict[str, tuple[Decimal, Decimal]]:
    """What each caller spent since ``month_start`` and since ``day_start`` (Unix seconds), in
    USD, over every endpoint: ``{caller: (month, day)}``, for seeding budgets; each managed key
    and team too, under the names of their spend counters (``key:<id>``, ``team:<name>``). Blocking.

    :raises StorageError: when the ledger's database cannot be read.
    """
    out: dict[str, tuple[Decimal, Decimal]] = {}
    for since, index in ((month_start, 0), (day_start, 1)):
        for key, totals in aggregate(ledger, LedgerQuery(since=since), ("caller", "key", "team"), latencies=False).items():
            _, caller, key_id, team = key
            for name in (caller, key_id and f"key:{key_id}", team and f"team:{team}"):
                if name:
                    pair = list(out.get(name, (_ZERO, _ZERO)))
                    pair[index] += totals.cost_usd
                    out[name] = (pair[0], pair[1])
    return out
