"""What the dashboard shows, read from the ledger through the report code (:mod:`..report`,
:mod:`..storage.totals`): the same sums ``GET /v1/usage`` gives, per day, per model and per
caller, and each budgeted caller's spend against its budgets."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

from ..report import parse_time
from ..stages.budget import day_start, month_start
from ..storage import LedgerQuery, aggregate, spend_totals
from ..storage.totals import Totals

if TYPE_CHECKING:
    from ..relay import Relay

__all__ = ["Board", "BudgetUse", "collect"]

#: The longest range one page shows, in days.
MAX_DAYS = 400


@dataclass(frozen=True, slots=True)
class BudgetUse:
    caller: str
    daily: Decimal | None
    day: Decimal
    monthly: Decimal | None
    month: Decimal


@dataclass
class Board:
    """The page's numbers: ``days`` in order, totals per day, model, caller and model-day."""

    since: float
    until: float
    caller: str | None
    model: str | None
    days: list[str]
    total: Totals = field(default_factory=Totals)
    by_day: dict[str, Totals] = field(default_factory=dict)
    by_model: dict[str, Totals] = field(default_factory=dict)
    by_caller: dict[str, Totals] = field(default_factory=dict)
    #: model -> day -> cost in USD
    model_days: dict[str, dict[str, Decimal]] = field(default_factory=dict)
    budgets: list[BudgetUse] = field(default_factory=list)


def _range(params: Mapping[str, str], days: int, now: float) -> tuple[float, float]:
    """``from``/``to`` of the query (as ``/v1/usage`` reads them), by default the last ``days``
    UTC days, today included; at most :data:`MAX_DAYS`.

    :raises InvalidRequest: for a bad time.
    """
    until = parse_time(params["to"], end=True) if params.get("to") else day_start(now) + 86_400
    since = parse_time(params["from"]) if params.get("from") else until - days * 86_400
    return max(since, until - MAX_DAYS * 86_400), until


def _day_names(since: float, until: float) -> list[str]:
    first = datetime.fromtimestamp(since, UTC).date()
    last = datetime.fromtimestamp(max(since, until - 1e-6), UTC).date()
    return [(first + timedelta(days=n)).isoformat() for n in range((last - first).days + 1)]


def collect(relay: Relay, params: Mapping[str, str], now: float) -> Board:
    """The board for ``params`` (``from``, ``to``, ``caller``, ``model``). Blocking: call it
    from a thread.

    :raises InvalidRequest: for a bad time.
    :raises StorageError: when the ledger's database cannot be read.
    """
    since, until = _range(params, relay.config.dashboard.days, now)
    caller, model = params.get("caller") or None, params.get("model") or None
    query = LedgerQuery(caller=caller, model=model, since=since, until=until, endpoints=tuple(sorted(relay.model_endpoints)))
    board = Board(since, until, caller, model, _day_names(since, until))
    # One pass over the rows: per model, day and caller, rolled up here.
    for (name, day, who), totals in aggregate(relay.ledger, query, ("day", "caller")).items():
        model_days = board.model_days.setdefault(name or "(none)", {})
        model_days[day] = model_days.get(day, Decimal(0)) + totals.cost_usd
        for into, key in ((board.by_day, day), (board.by_model, name or "(none)"), (board.by_caller, who)):
            _add(into, key, totals)
        board.total.merge(totals)
    board.budgets = budget_use(relay, now, caller)
    return board


def _add(into: dict[str, Totals], key: str, totals: Totals) -> None:
    mine = into.get(key)
    if mine is None:
        mine = into[key] = Totals()
    mine.merge(totals)


def budget_use(relay: Relay, now: float, only: str | None = None) -> list[BudgetUse]:
    """Spend today and this month (by the ledger) of every caller with a budget: those
    configured by name, and every caller seen this month when there is a default budget."""
    settings = relay.config.budgets
    if not settings.active:
        return []
    spent = spend_totals(relay.ledger, month_start(now), day_start(now))
    callers = set(settings.callers)
    if settings.default.daily is not None or settings.default.monthly is not None:
        callers |= set(spent)
    out = []
    for who in sorted(callers):
        if only is not None and who != only:
            continue
        budget = settings.for_caller(who)
        if budget.daily is None and budget.monthly is None:
            continue
        month, day = spent.get(who, (Decimal(0), Decimal(0)))
        out.append(BudgetUse(who, budget.daily, day, budget.monthly, month))
    return out

