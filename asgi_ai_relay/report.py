"""Usage and savings reports computed from the ledger, for ``GET {prefix}/v1/usage`` and the
command line::

    python -m asgi_ai_relay.report --config relay.toml --group-by month --compare catalog
    python -m asgi_ai_relay.report --ledger sqlite:///relay-usage.db --from 2025-01-01 --caller team-a

The ledger backend selects the rows (SQL ``WHERE`` on SQLite and PostgreSQL); the sums are
taken here, in :class:`~decimal.Decimal`, so every backend gives the same exact numbers and
the same percentiles. ``--compare LIST`` prices the same tokens at another price list
(``catalog``: the model prices without provider multipliers, or one of ``pricing.lists``), per
group, and shows what the relay and its cache saved against it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson

from .config import RelayConfig, load_config
from .errors import InvalidRequest
from .pricing import CATALOG, cost_at, list_price, to_currency
from .stages.usage import percentile
from .storage import Ledger, LedgerQuery, LedgerRow, ledger_from_uri
from .types import Usage

__all__ = ["GROUPS", "Summary", "main", "parse_time", "read_rows", "summarize"]

GROUPS = ("model", "caller", "day", "month", "provider")
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


def _group_key(row: LedgerRow, group_by: Sequence[str]) -> str:
    parts = []
    for name in group_by:
        if name == "day":
            parts.append(datetime.fromtimestamp(row.ts, UTC).strftime("%Y-%m-%d"))
        elif name == "month":
            parts.append(datetime.fromtimestamp(row.ts, UTC).strftime("%Y-%m"))
        else:
            parts.append(str(getattr(row, name) or ""))
    return "|".join(parts)


@dataclass
class Summary:
    """Totals over a set of ledger rows."""

    requests: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cost_usd: Decimal = _ZERO
    cache_hits: int = 0
    saved_usd: Decimal = _ZERO
    estimated: int = 0
    compare_usd: Decimal = _ZERO
    unpriced: int = 0
    latencies: list[float] = field(default_factory=list)

    def add(self, row: LedgerRow, config: RelayConfig, compare: str | None) -> None:
        self.requests += 1
        self.errors += row.status >= 400
        self.prompt_tokens += row.prompt_tokens
        self.completion_tokens += row.completion_tokens
        self.cached_tokens += row.cached_tokens
        self.cost_usd += row.cost_usd
        self.cache_hits += row.cache_hit
        self.saved_usd += row.cache_saved_usd
        self.estimated += row.estimated
        self.latencies.append(row.latency_ms)
        if compare is not None and (row.prompt_tokens or row.completion_tokens):
            price = list_price(config, compare, row.model)
            if price is None:
                self.unpriced += 1
            else:
                usage = Usage(row.prompt_tokens, row.completion_tokens, row.cached_tokens)
                self.compare_usd += cost_at(price, usage)

    def report(self, config: RelayConfig, compare: str | None) -> dict[str, Any]:
        ordered = sorted(self.latencies)
        out: dict[str, Any] = {
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": round(self.errors / self.requests, 6) if self.requests else 0.0,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cached_tokens": self.cached_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "cost_usd": str(self.cost_usd),
            "cost": str(to_currency(config, self.cost_usd)),
            "currency": config.pricing.currency,
            "cache_hits": self.cache_hits,
            "cache_hit_rate": round(self.cache_hits / self.requests, 6) if self.requests else 0.0,
            "cache_saved_usd": str(self.saved_usd),
            "estimated_rows": self.estimated,
            "latency_ms": {p: percentile(ordered, n) for p, n in (("p50", 50), ("p95", 95), ("p99", 99))},
        }
        if compare is not None:
            out["compare"] = {
                "price_list": compare,
                "cost_usd": str(self.compare_usd),
                "savings_usd": str(self.compare_usd - self.cost_usd),
                "savings": str(to_currency(config, self.compare_usd - self.cost_usd)),
                "unpriced_rows": self.unpriced,
            }
        return out


def summarize(
    config: RelayConfig, rows: Iterable[LedgerRow], group_by: Sequence[str] = (), compare: str | None = None
) -> dict[str, Any]:
    """The usage report: totals, and per group when ``group_by`` names any of :data:`GROUPS`.

    :raises InvalidRequest: for an unknown group or price list.
    """
    for name in group_by:
        if name not in GROUPS:
            raise InvalidRequest(f"'group_by' must be among {', '.join(GROUPS)}; got {name!r}.", param="group_by")
    if compare is not None and compare != CATALOG and compare not in config.pricing.lists:
        known = ", ".join([CATALOG, *config.pricing.lists])
        raise InvalidRequest(f"Unknown price list {compare!r} (known: {known}).", param="compare")
    total = Summary()
    models: dict[str, Summary] = {}
    groups: dict[str, Summary] = {}
    for row in rows:
        total.add(row, config, compare)
        models.setdefault(row.model or "(none)", Summary()).add(row, config, compare)
        if group_by:
            key = _group_key(row, group_by)
            groups.setdefault(key, Summary()).add(row, config, compare)
    report: dict[str, Any] = {"object": "relay.usage", **total.report(config, compare)}
    report["models"] = {name: summary.report(config, compare) for name, summary in sorted(models.items())}
    if group_by:
        report["group_by"] = list(group_by)
        report["groups"] = [
            {"key": dict(zip(group_by, key.split("|"), strict=True)), **summary.report(config, compare)}
            for key, summary in sorted(groups.items())
        ]
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
                       since=since, until=until, endpoints=endpoints)


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m asgi_ai_relay.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="relay config (TOML); its storage.ledger and prices are used")
    parser.add_argument("--ledger", help="ledger URI, overriding the config's")
    parser.add_argument("--from", dest="since", help="start (2025-01-01, ISO datetime or Unix seconds)")
    parser.add_argument("--to", dest="until", help="end (a bare date includes that day)")
    parser.add_argument("--caller")
    parser.add_argument("--model")
    parser.add_argument("--group-by", default="month", help=f"comma-separated: {', '.join(GROUPS)} (default month)")
    parser.add_argument("--compare", help=f"price list to compare against ({CATALOG} or one of pricing.lists)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _arguments(argv)
    config = load_config(args.config)
    ledger = ledger_from_uri(args.ledger or config.storage.ledger)
    params = {"from": args.since, "to": args.until, "caller": args.caller, "model": args.model}
    try:
        rows = read_rows(ledger, query_from({k: v for k, v in params.items() if v}, None))
        group_by = [g for g in args.group_by.split(",") if g]
        report = summarize(config, rows, group_by, args.compare)
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
