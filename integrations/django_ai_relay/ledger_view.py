"""What the ledger admin shows, read from the relay's own ledger (``storage.ledger``) through
its ledger API and report code, never through Django's database: the ledger may be a SQLite
file, a PostgreSQL table of another database, or memory, and its columns are the relay's.

Filters: ``caller``, ``model``, ``key`` (a managed key's id), ``team``, ``from``, ``to`` go to the ledger as a
:class:`~asgi_ai_relay.storage.LedgerQuery` (the filters of ``/v1/usage``); ``provider``,
``status`` (``2xx``, ``4xx``, ``5xx`` or a code) and ``q`` (a request id, or its start) are
applied to the rows that query returns. Totals are :func:`asgi_ai_relay.report.usage_report`
when only the first kind is used (the very numbers of ``/v1/usage``), else
:func:`asgi_ai_relay.report.summarize` over the filtered rows (the same sums, in Python).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from asgi_ai_relay import Relay
from asgi_ai_relay.report import parse_time, read_rows, summarize, usage_report
from asgi_ai_relay.storage import LEDGER_COLUMNS, LedgerQuery, LedgerRow, aggregate

__all__ = ["COLUMNS", "LedgerPage", "columns", "ledger_page", "usage_groups"]

#: The columns the change list shows, in order, where the ledger has them; every token count
#: the ledger keeps (``*_tokens``) is shown too.
COLUMNS = ("ts", "request_id", "caller", "key_id", "team", "endpoint", "model", "provider", "status", "cost_usd", "cache_hit",
           "latency_ms")
#: Rows on one page of the change list.
PER_PAGE = 100
#: Days shown when no ``from`` is given.
DEFAULT_DAYS = 31


def columns() -> list[str]:
    tokens = [name for name in LEDGER_COLUMNS if name.endswith("_tokens")]
    shown = [name for name in COLUMNS if name in LEDGER_COLUMNS]
    at = shown.index("cost_usd") if "cost_usd" in shown else len(shown)
    return shown[:at] + tokens + shown[at:]


@dataclass
class LedgerPage:
    rows: list[LedgerRow]
    count: int
    page: int
    pages: int
    totals: dict[str, Any]
    #: Values seen in the range, for the filter choices.
    choices: dict[str, list[str]] = field(default_factory=dict)
    filters: dict[str, str] = field(default_factory=dict)


def query_of(relay: Relay, params: Mapping[str, str], now: float | None = None) -> LedgerQuery:
    """:raises InvalidRequest: for a bad ``from`` or ``to``."""
    until = parse_time(params["to"], end=True) if params.get("to") else None
    since = parse_time(params["from"]) if params.get("from") else (now or time.time()) - DEFAULT_DAYS * 86_400
    return LedgerQuery(caller=params.get("caller") or None, model=params.get("model") or None, since=since, until=until,
                       endpoints=tuple(sorted(relay.model_endpoints)), key_id=params.get("key") or None,
                       team=params.get("team") or None)


def _status_matches(status: int, wanted: str) -> bool:
    if len(wanted) == 3 and wanted.endswith("xx") and wanted[0].isdigit():
        return status // 100 == int(wanted[0])
    return wanted.isdigit() and status == int(wanted)


def filtered(rows: list[LedgerRow], params: Mapping[str, str]) -> list[LedgerRow]:
    provider, status, q = params.get("provider") or None, params.get("status") or None, (params.get("q") or "").strip()
    return [row for row in rows
            if (provider is None or (row.provider or "") == provider)
            and (status is None or _status_matches(row.status, status))
            and (not q or row.request_id.startswith(q))]


def ledger_page(relay: Relay, params: Mapping[str, str], page: int = 1) -> LedgerPage:
    """The change list's rows (newest first), page ``page``, and the totals of every filtered row.
    Blocking.

    :raises InvalidRequest: for a bad ``from`` or ``to``.
    :raises StorageError: when the ledger's database cannot be read.
    """
    query = query_of(relay, params)
    rows = read_rows(relay.ledger, query)
    narrowed = any(params.get(name) for name in ("provider", "status", "q"))
    if narrowed:
        rows = filtered(rows, params)
        totals = summarize(relay.config, rows)
    else:
        totals = usage_report(relay.config, relay.ledger, query)
    rows.reverse()
    pages = max(1, -(-len(rows) // PER_PAGE))
    page = min(max(1, page), pages)
    choices: dict[str, set[str]] = {"caller": set(), "model": set(), "provider": set(), "key": set(), "team": set()}
    wide = LedgerQuery(since=query.since, until=query.until, endpoints=query.endpoints)
    for model, caller, provider, key, team in aggregate(relay.ledger, wide, ("caller", "provider", "key", "team"),
                                                        latencies=False):
        for name, value in (("model", model), ("caller", caller), ("provider", provider), ("key", key), ("team", team)):
            if value:
                choices[name].add(value)
    return LedgerPage(rows[(page - 1) * PER_PAGE:page * PER_PAGE], len(rows), page, pages, totals,
                      {name: sorted(values) for name, values in choices.items()},
                      {k: v for k, v in params.items() if v and k != "p"})


def usage_groups(relay: Relay, params: Mapping[str, str]) -> tuple[list[str], dict[str, dict[str, dict[str, float]]]]:
    """Days in the range and spend (USD) per day: ``{"model": {model: {day: usd}}, "caller": {...}}``.
    Blocking.

    :raises InvalidRequest: for a bad ``from`` or ``to``.
    """
    query = query_of(relay, params)
    out: dict[str, dict[str, dict[str, float]]] = {"model": {}, "caller": {}}
    seen: set[str] = set()
    for (model, day, caller), totals in aggregate(relay.ledger, query, ("day", "caller"), latencies=False).items():
        seen.add(day)
        for kind, name in (("model", model or "(none)"), ("caller", caller)):
            per_day = out[kind].setdefault(name, {})
            per_day[day] = per_day.get(day, 0.0) + float(totals.cost_usd)
    start = datetime.fromtimestamp(query.since or time.time(), UTC).date()
    end = datetime.fromtimestamp(query.until - 1, UTC).date() if query.until else datetime.now(UTC).date()
    days = sorted(seen | {start.fromordinal(n).isoformat() for n in range(start.toordinal(), end.toordinal() + 1)})
    return days[-400:], out
