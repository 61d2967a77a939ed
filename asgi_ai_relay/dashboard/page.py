"""The dashboard as one HTML page: a filter form (plain GET, no script), headline numbers,
charts per day (:mod:`.svg`) and tables per model, caller, managed key and team."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from html import escape
from typing import TYPE_CHECKING

from ..pricing import to_currency
from ..storage.totals import Totals, percentiles
from .data import Board, BudgetUse
from .svg import PALETTE, bar_chart, hbar_chart, line_chart

if TYPE_CHECKING:
    from ..config import RelayConfig

__all__ = ["render"]

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#111827;background:#f9fafb}
header{background:#111827;color:#f9fafb;padding:12px 24px}header h1{font-size:18px;margin:0}
main{padding:16px 24px;max-width:1540px}form{margin:0 0 16px}form input{width:10em}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin-bottom:16px}
.card{background:#fff;border:1px solid #e5e7eb;border-radius:6px;padding:10px 14px;min-width:140px}
.card b{display:block;font-size:20px}.card span{color:#6b7280;font-size:12px}
.grid{display:flex;flex-wrap:wrap;gap:16px}
section{background:#fff;border:1px solid #e5e7eb;border-radius:6px;padding:8px 12px;margin-bottom:16px}
section h2{font-size:14px;margin:4px 0 8px}table{border-collapse:collapse;font-size:13px}
th,td{padding:3px 10px;text-align:right;border-bottom:1px solid #f3f4f6}th:first-child,td:first-child{text-align:left}
.legend span{display:inline-block;margin-right:12px;font-size:12px}.legend i{display:inline-block;width:10px;height:10px;margin-right:4px}
"""

_PERCENT = Decimal(100)


def _usd(value: float | Decimal) -> str:
    return f"${Decimal(value):,.4f}"


def _day(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


def _card(label: str, value: str) -> str:
    return f'<div class="card"><b>{escape(value)}</b><span>{escape(label)}</span></div>'


def _section(title: str, body: str, legend: Sequence[str] = ()) -> str:
    keys = "".join(f'<span><i style="background:{PALETTE[n % len(PALETTE)]}"></i>{escape(name)}</span>'
                   for n, name in enumerate(legend))
    return f'<section><h2>{escape(title)}</h2>{body}{f"<div class=legend>{keys}</div>" if keys else ""}</section>'


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} ms"


def _cards(config: RelayConfig, t: Totals) -> str:
    p50, p95, p99 = percentiles(t.latencies)
    cost = to_currency(config, t.cost_usd)
    spend = _usd(t.cost_usd) + ("" if config.pricing.currency == "USD" else f" ({cost:,.2f} {config.pricing.currency})")
    return '<div class="cards">' + "".join((
        _card("spend", spend), _card("requests", f"{t.requests:,}"),
        _card("tokens (prompt + completion)", f"{t.prompt_tokens + t.completion_tokens:,}"),
        _card("cache hits", f"{t.cache_hits:,}"), _card("cache savings", _usd(t.saved_usd)),
        _card("error rate", f"{t.errors / t.requests:.1%}" if t.requests else "-"),
        _card("latency p50 / p95 / p99", f"{_ms(p50)} / {_ms(p95)} / {_ms(p99)}"),
    )) + "</div>"


def _table(title: str, groups: dict[str, Totals]) -> str:
    head = "<tr><th>" + "</th><th>".join((title, "requests", "errors", "tokens", "cost", "cache hits", "saved", "p95")) + "</th></tr>"
    rows = []
    for name, t in sorted(groups.items(), key=lambda item: (-item[1].cost_usd, item[0])):
        cells = (name, f"{t.requests:,}", f"{t.errors:,}", f"{t.prompt_tokens + t.completion_tokens:,}", _usd(t.cost_usd),
                 f"{t.cache_hits:,}", _usd(t.saved_usd), _ms(percentiles(t.latencies, (95,))[0]))
        rows.append("<tr><td>" + "</td><td>".join(escape(c) for c in cells) + "</td></tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def _budget_rows(budgets: Sequence[BudgetUse]) -> tuple[list[tuple[str, float, str]], list[str]]:
    rows, colours = [], []
    for use in budgets:
        for name, limit, spent in (("day", use.daily, use.day), ("month", use.monthly, use.month)):
            if limit is None:
                continue
            share = spent / limit * _PERCENT if limit else _PERCENT
            rows.append((f"{use.caller} ({name})", float(share), f"{share:.0f}% of {_usd(limit)} ({_usd(spent)})"))
            colours.append(PALETTE[4] if share >= _PERCENT else PALETTE[6] if share >= 80 else PALETTE[2])
    return rows, colours


def _form(board: Board, prefix: str) -> str:
    until = board.until - 1e-6
    fields = (("from", _day(board.since)), ("to", _day(until)), ("caller", board.caller or ""), ("model", board.model or ""),
              ("key", board.key or ""), ("team", board.team or ""))
    inputs = "".join(f' <label>{name} <input name="{name}" value="{escape(value)}"></label>' for name, value in fields)
    return f'<form method="get" action="{escape(prefix)}/dashboard">{inputs} <button>show</button></form>'


def render(config: RelayConfig, board: Board) -> str:
    """The whole page for ``board``."""
    days = board.days
    by_day = [board.by_day.get(d, Totals()) for d in days]
    models = sorted(board.model_days, key=lambda m: -sum(board.model_days[m].values()))
    spend = {m: [float(board.model_days[m].get(d, 0)) for d in days] for m in models}
    lat = {name: [] for name in ("p50", "p95", "p99")}  # type: dict[str, list[float | None]]
    for t in by_day:
        for name, value in zip(lat, percentiles(t.latencies), strict=True):
            lat[name].append(value)
    budget_rows, budget_colours = _budget_rows(board.budgets)
    callers = sorted(board.by_caller.items(), key=lambda item: -item[1].cost_usd)
    keys = sorted(board.by_key.items(), key=lambda item: -item[1].cost_usd)
    teams = sorted(board.by_team.items(), key=lambda item: -item[1].cost_usd)
    charts = "".join((
        _section("Spend per day, per model (USD)", bar_chart("spend per day", days, spend, _usd), models),
        _section("Requests per day", bar_chart("requests per day", days, {"requests": [float(t.requests) for t in by_day]})),
        _section("Tokens per day", bar_chart("tokens per day", days, {
            "prompt": [float(t.prompt_tokens) for t in by_day], "completion": [float(t.completion_tokens) for t in by_day]}),
            ("prompt", "completion")),
        _section("Cache savings per day (USD)", bar_chart("cache savings per day", days, {"saved": [float(t.saved_usd) for t in by_day]}, _usd)),
        _section("Error rate per day (%)", bar_chart("error rate per day", days, {
            "errors": [100.0 * t.errors / t.requests if t.requests else 0.0 for t in by_day]}, lambda v: f"{v:.1f}%")),
        _section("Latency per day (ms)", line_chart("latency percentiles per day", days, lat, lambda v: f"{v:,.1f} ms"), tuple(lat)),
        _section("Spend per model", hbar_chart("spend per model", [(m, float(board.by_model[m].cost_usd), _usd(board.by_model[m].cost_usd)) for m in models])),
        _section("Spend per caller", hbar_chart("spend per caller", [(c, float(t.cost_usd), _usd(t.cost_usd)) for c, t in callers])),
        _section("Spend per key", hbar_chart("spend per key", [(k, float(t.cost_usd), _usd(t.cost_usd)) for k, t in keys])),
        _section("Spend per team", hbar_chart("spend per team", [(k, float(t.cost_usd), _usd(t.cost_usd)) for k, t in teams])),
        _section("Budget use per caller, key and team (today and this month, by the ledger)",
                 hbar_chart("budget use", budget_rows, 100.0, budget_colours) if budget_rows else "<p>No budgets are configured.</p>"),
    ))
    tables = "".join(_section(f"Per {name}", _table(name, groups)) for name, groups in (
        ("model", board.by_model), ("caller", board.by_caller), ("key", board.by_key), ("team", board.by_team)))
    title = f"AI relay spend, {_day(board.since)} to {_day(board.until - 1e-6)}"
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f'<meta name="viewport" content="width=device-width"><style>{_STYLE}</style></head><body>'
        f'<header><h1>{escape(title)}</h1></header><main>{_form(board, config.prefix)}{_cards(config, board.total)}'
        f'<div class="grid">{charts}</div>{tables}</main></body></html>'
    )
