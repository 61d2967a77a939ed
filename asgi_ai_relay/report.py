"""Usage and savings reports computed from the ledger, for ``GET {prefix}/v1/usage`` and the
command line::

    python -m asgi_ai_relay.report --config relay.toml --group-by month --compare catalog
    python -m asgi_ai_relay.report --ledger sqlite:///relay-usage.db --from 2025-01-01 --caller team-a

The ledger backend sums the rows per model and group (``SUM ... GROUP BY`` on SQLite and
PostgreSQL, see :mod:`.storage.totals`), exactly, in :class:`~decimal.Decimal`; the report
rolls those groups up, so every backend gives the same numbers. ``--compare LIST`` prices the
same tokens at another price list (``catalog``: the model prices without provider multipliers,
or one of ``pricing.lists``), per group, and shows what the relay and its cache saved against it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson

from .config import RelayConfig, load_config
from .errors import InvalidRequest
from .pricing import CATALOG, cost_at, list_price, to_currency
from .storage import Ledger, LedgerQuery, LedgerRow, aggregate, health, ledger_from_uri
from .storage.totals import GROUPS, Key, Totals, aggregate_rows, percentiles
from .types import Usage

__all__ = ["GROUPS", "Summary", "main", "parse_time", "read_rows", "summarize", "usage_report"]

_ZERO = Decimal(0)


def parse_time(value: str, *, end: bool = False) -> float:
    """Unix seconds from ``1735689600``, ``2025-01-01`` or ``2025-01-01T12:00:00[+00:00]``
    (UTC unless an offset is given). A bare date as an ``end`` includes that whole day.

    :raises InvalidRequest: for anything else.
    """
    try:
        return float(value)
    except ValueError:
        pass
    try:
        if len(value) == 10:
            day = datetime.combine(date.fromisoformat(value), datetime.min.time(), UTC)
            return (day + timedelta(days=1) if end else day).timestamp()
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise InvalidRequest(f"Not a time: {value!r} (use 2025-01-31, an ISO datetime or Unix seconds).") from exc
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _plain(usd: Decimal) -> str:
    """``usd`` without trailing zeros nor exponent, so every backend prints a sum alike."""
    normal = usd.normalize()
    return str(normal.quantize(Decimal(1)) if normal.as_tuple().exponent > 0 else normal)  # type: ignore[operator]


@dataclass
class Summary:
    """Totals over a set of ledger rows, and what they cost at a comparison price list."""

    totals: Totals = field(default_factory=Totals)
    compare_usd: Decimal = _ZERO
    unpriced: int = 0

    def add(self, model: str, totals: Totals, config: RelayConfig, compare: str | None) -> None:
        self.totals.merge(totals)
        if compare is None or not totals.token_rows:
            return
        price = list_price(config, compare, model or None)
        if price is None:
            self.unpriced += totals.token_rows
            return
        # Each class at the list's flat rates (tiers and long-context steps are per request,
        # which a group's sums no longer tell apart).
        flat = replace(price, tiers={}, long_context=None, long_context_above=None)
        self.compare_usd += cost_at(flat, Usage(
            totals.prompt_tokens, totals.completion_tokens, totals.cached_prompt,
            totals.cache_write_5m_tokens + totals.cache_write_1h_tokens,
            cache_write_1h_tokens=totals.cache_write_1h_tokens, reasoning_tokens=totals.reasoning_tokens,
            audio_input_tokens=totals.audio_input_tokens, image_input_tokens=totals.image_input_tokens,
            web_search_requests=totals.web_search_requests,
        ))

    def report(self, config: RelayConfig, compare: str | None) -> dict[str, Any]:
        t = self.totals
        out: dict[str, Any] = {
            "requests": t.requests,
            "errors": t.errors,
            "error_rate": round(t.errors / t.requests, 6) if t.requests else 0.0,
            "prompt_tokens": t.prompt_tokens,
            "completion_tokens": t.completion_tokens,
            "cached_tokens": t.cached_tokens,
            "cache_write_5m_tokens": t.cache_write_5m_tokens,
            "cache_write_1h_tokens": t.cache_write_1h_tokens,
            "reasoning_tokens": t.reasoning_tokens,
            "audio_input_tokens": t.audio_input_tokens,
            "image_input_tokens": t.image_input_tokens,
            "web_search_requests": t.web_search_requests,
            "total_tokens": t.prompt_tokens + t.completion_tokens,
            "cost_usd": _plain(t.cost_usd),
            "cost": _plain(to_currency(config, t.cost_usd)),
            "currency": config.pricing.currency,
            "cache_hits": t.cache_hits,
            "cache_hit_rate": round(t.cache_hits / t.requests, 6) if t.requests else 0.0,
            "cache_saved_usd": _plain(t.saved_usd),
            "estimated_rows": t.estimated,
            "usage_flagged_rows": t.usage_flagged,
            "latency_ms": dict(zip(("p50", "p95", "p99"), percentiles(t.latencies), strict=True)),
        }
        if compare is not None:
            out["compare"] = {
                "price_list": compare,
                "cost_usd": _plain(self.compare_usd),
                "savings_usd": _plain(self.compare_usd - t.cost_usd),
                "savings": _plain(to_currency(config, self.compare_usd - t.cost_usd)),
                "unpriced_rows": self.unpriced,
            }
        return out


def check_report(config: RelayConfig, group_by: Sequence[str], compare: str | None) -> None:
    """:raises InvalidRequest: for an unknown group or price list."""
    for name in group_by:
        if name not in GROUPS:
            raise InvalidRequest(f"'group_by' must be among {', '.join(GROUPS)}; got {name!r}.", param="group_by")
    if compare is not None and compare != CATALOG and compare not in config.pricing.lists:
        known = ", ".join([CATALOG, *config.pricing.lists])
        raise InvalidRequest(f"Unknown price list {compare!r} (known: {known}).", param="compare")


def report_of(
    config: RelayConfig, groups: Mapping[Key, Totals], group_by: Sequence[str], compare: str | None
) -> dict[str, Any]:
    """The usage report from per-model (and ``group_by``) totals."""
    total = Summary()
    models: dict[str, Summary] = {}
    by_group: dict[Key, Summary] = {}
    for key, totals in groups.items():
        model = key[0]
        total.add(model, totals, config, compare)
        models.setdefault(model or "(none)", Summary()).add(model, totals, config, compare)
        if group_by:
            by_group.setdefault(key[1:], Summary()).add(model, totals, config, compare)
    report: dict[str, Any] = {"object": "relay.usage", **total.report(config, compare)}
    report["models"] = {name: summary.report(config, compare) for name, summary in sorted(models.items())}
    if group_by:
        report["group_by"] = list(group_by)
        report["groups"] = [
            {"key": dict(zip(group_by, key, strict=True)), **summary.report(config, compare)}
            for key, summary in sorted(by_group.items(), key=lambda item: "|".join(item[0]))
        ]
    return report


def summarize(
    config: RelayConfig, rows: Iterable[LedgerRow], group_by: Sequence[str] = (), compare: str | None = None
) -> dict[str, Any]:
    """The usage report of ``rows``: totals, and per group when ``group_by`` names any of :data:`GROUPS`.

    :raises InvalidRequest: for an unknown group or price list.
    """
    check_report(config, group_by, compare)
    return report_of(config, aggregate_rows(rows, group_by), group_by, compare)


def usage_report(
    config: RelayConfig, ledger: Ledger, query: LedgerQuery, group_by: Sequence[str] = (), compare: str | None = None
) -> dict[str, Any]:
    """:func:`summarize` over the rows ``query`` selects, summed by the ledger's backend (in SQL
    for SQLite and PostgreSQL), with ``ledger_behind_rows``: rows recorded that the report cannot
    count yet (queued, or spooled while the database is unreachable). Blocking: call it from a
    thread in async code.

    :raises InvalidRequest: for an unknown group or price list.
    :raises StorageError: when the ledger's database cannot be read.
    """
    check_report(config, group_by, compare)
    report = report_of(config, aggregate(ledger, query, group_by), group_by, compare)
    # Rows recorded but not yet in the database (queued, or spooled while it is unreachable).
    report["ledger_behind_rows"] = health(ledger)["behind"]
    return report


def read_rows(ledger: Ledger, query: LedgerQuery) -> list[LedgerRow]:
    """The rows ``query`` selects (blocking: call from a thread in async code)."""
    select = getattr(ledger, "query", None)
    if select is not None:
        return list(select(query))
    return [row for row in ledger.rows() if query.matches(row)]


def query_from(params: Mapping[str, str], endpoints: tuple[str, ...] | None) -> LedgerQuery:
    """:raises InvalidRequest: for a bad time."""
    since = parse_time(params["from"]) if params.get("from") else None
    until = parse_time(params["to"], end=True) if params.get("to") else None
    return LedgerQuery(caller=params.get("caller") or None, model=params.get("model") or None,
                       since=since, until=until, endpoints=endpoints,
                       key_id=params.get("key") or None, team=params.get("team") or None)


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m asgi_ai_relay.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="relay config (TOML); its storage.ledger and prices are used")
    parser.add_argument("--ledger", help="ledger URI, overriding the config's")
    parser.add_argument("--from", dest="since", help="start (2025-01-01, ISO datetime or Unix seconds)")
    parser.add_argument("--to", dest="until", help="end (a bare date includes that day)")
    parser.add_argument("--caller")
    parser.add_argument("--model")
    parser.add_argument("--key", help="a managed key's id (key_...)")
    parser.add_argument("--team")
    parser.add_argument("--group-by", default="month", help=f"comma-separated: {', '.join(GROUPS)} (default month)")
    parser.add_argument("--compare", help=f"price list to compare against ({CATALOG} or one of pricing.lists)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _arguments(argv)
    config = load_config(args.config)
    ledger = ledger_from_uri(args.ledger or config.storage.ledger)
    params = {"from": args.since, "to": args.until, "caller": args.caller, "model": args.model, "key": args.key,
              "team": args.team}
    try:
        group_by = [g for g in args.group_by.split(",") if g]
        report = usage_report(config, ledger, query_from({k: v for k, v in params.items() if v}, None), group_by, args.compare)
    except InvalidRequest as error:
        print(f"error: {error.message}", file=sys.stderr)
        return 2
    finally:
        ledger.close()
    if args.json:
        sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(_table(report))
    return 0


def _table(report: dict[str, Any]) -> str:
    currency = report["currency"]
    header = ["group", "requests", "tokens", f"cost {currency}", "cache hits", "cache saved USD"]
    compare = "compare" in report
    if compare:
        header += [f"at {report['compare']['price_list']} USD", f"saved {currency}"]
    lines = [header]
    for item in [*report.get("groups", []), {"key": {"": "total"}, **report}]:
        line = [" ".join(item["key"].values()), str(item["requests"]), str(item["total_tokens"]),
                f"{Decimal(item['cost']):.6f}", str(item["cache_hits"]), f"{Decimal(item['cache_saved_usd']):.6f}"]
        if compare:
            line += [f"{Decimal(item['compare']['cost_usd']):.6f}", f"{Decimal(item['compare']['savings']):.6f}"]
        lines.append(line)
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    return "".join("  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) + "\n" for row in lines)


if __name__ == "__main__":
    raise SystemExit(main())
