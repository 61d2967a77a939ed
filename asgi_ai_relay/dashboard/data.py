"""What the dashboard shows, read from the ledger through the report code (:mod:`..report`,
:mod:`..storage.totals`): the same sums ``GET /v1/usage`` gives, per day, per model, per caller,
per managed key and per team, and the spend of each budgeted caller, key and team against its
budgets (by the ledger, as the budgets' counters are seeded: their spend counters' names)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

from ..errors import StorageError
from ..report import parse_time
from ..stages.budget import day_start, month_start
from ..storage import LedgerQuery, aggregate, spend_totals
from ..storage.totals import Totals

if TYPE_CHECKING:
    from ..config.settings import Budget
    from ..relay import Relay

__all__ = ["Board", "BudgetUse", "KeyBook", "collect", "key_book"]

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
class KeyBook:
    """What the key store tells the page: each key's label (its visible prefix and name, never
    more) and the budgets of keys and teams, by spend counter (``key:<id>``, ``team:<name>``)."""

    labels: dict[str, str] = field(default_factory=dict)
    budgets: dict[str, tuple[Decimal | None, Decimal | None]] = field(default_factory=dict)
    #: visible prefix -> key id, so the page's ``key`` filter takes either
    prefixes: dict[str, str] = field(default_factory=dict)

    def label(self, counter: str) -> str:
        """``rk-AbCdEfGh (name)`` (a key: its visible prefix, or its id when the store does not
        know it), ``team research`` or the caller's id."""
        kind, _, name = counter.partition(":")
        if kind == "key" and name:
            return self.labels.get(name, name)
        return f"team {name}" if kind == "team" and name else counter


async def key_book(relay: Relay) -> KeyBook:
    """The :class:`KeyBook` of ``relay``'s key store (empty without one, or when it cannot be read)."""
    book = KeyBook()
    admin = relay.key_admin
    if admin is None:
        return book
    try:
        records, limits = await admin.store.records(), await admin.store.all_limits()
    except StorageError:
        return book
    for record in records:
        book.labels[record.id] = f"{record.prefix}" + (f" ({record.name})" if record.name else "")
        book.prefixes[record.prefix] = record.id
        if record.quota.budgeted:
            book.budgets[f"key:{record.id}"] = (record.quota.daily, record.quota.monthly)
    for subject in limits:
        if subject.subject.startswith("team:") and subject.quota.budgeted:
            book.budgets[subject.subject] = (subject.quota.daily, subject.quota.monthly)
    return book


@dataclass
class Board:
    """The page's numbers: ``days`` in order, totals per day, model, caller and model-day."""

    since: float
    until: float
    caller: str | None
    model: str | None
    days: list[str]
    key: str | None = None
    team: str | None = None
    total: Totals = field(default_factory=Totals)
    by_day: dict[str, Totals] = field(default_factory=dict)
    by_model: dict[str, Totals] = field(default_factory=dict)
    by_caller: dict[str, Totals] = field(default_factory=dict)
    #: Per managed key (by its label) and per team; rows without one are left out.
    by_key: dict[str, Totals] = field(default_factory=dict)
    by_team: dict[str, Totals] = field(default_factory=dict)
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


def collect(relay: Relay, params: Mapping[str, str], now: float, book: KeyBook | None = None) -> Board:
    """The board for ``params`` (``from``, ``to``, ``caller``, ``model``, ``key``, ``team``),
    keys labelled by ``book``. Blocking: call it from a thread.

    :raises InvalidRequest: for a bad time.
    :raises StorageError: when the ledger's database cannot be read.
    """
    since, until = _range(params, relay.config.dashboard.days, now)
    book = book or KeyBook()
    caller, model = params.get("caller") or None, params.get("model") or None
    key, team = params.get("key") or None, params.get("team") or None
    key = book.prefixes.get(key, key) if key is not None else None
    query = LedgerQuery(caller=caller, model=model, since=since, until=until, endpoints=tuple(sorted(relay.model_endpoints)),
                        key_id=key, team=team)
    board = Board(since, until, caller, model, _day_names(since, until), key, team)
    # One pass over the (hourly) sums: per model, day, caller, key and team, rolled up here.
    for (name, day, who, key_id, team_name), totals in aggregate(relay.ledger, query, ("day", "caller", "key", "team")).items():
        model_days = board.model_days.setdefault(name or "(none)", {})
        model_days[day] = model_days.get(day, Decimal(0)) + totals.cost_usd
        for into, group in ((board.by_day, day), (board.by_model, name or "(none)"), (board.by_caller, who),
                            (board.by_key, book.label(f"key:{key_id}") if key_id else ""),
                            (board.by_team, team_name)):
            if group:
                _add(into, group, totals)
        board.total.merge(totals)
    board.budgets = budget_use(relay, now, caller, book, key, team)
    return board


def _add(into: dict[str, Totals], key: str, totals: Totals) -> None:
    mine = into.get(key)
    if mine is None:
        mine = into[key] = Totals()
    mine.merge(totals)


def budget_use(relay: Relay, now: float, only: str | None = None, book: KeyBook | None = None,
               key: str | None = None, team: str | None = None) -> list[BudgetUse]:
    """Spend today and this month (by the ledger) of every caller with a budget (those
    configured by name, and every caller seen this month when there is a default budget), and of
    every managed key and team with one (``book``); ``only``, ``key``, ``team`` narrow the list."""
    settings = relay.config.budgets
    book = book or KeyBook()
    if not settings.active and not book.budgets:
        return []
    spent = spend_totals(relay.ledger, month_start(now), day_start(now))
    callers = set(settings.callers) | set(book.budgets)
    if settings.default.daily is not None or settings.default.monthly is not None:
        callers |= {name for name in spent if not name.startswith(("key:", "team:"))}
    wanted = {f"key:{key}"} if key else {f"team:{team}"} if team else None
    out = []
    for who in sorted(callers):
        if (only is not None and who != only) or (wanted is not None and who not in wanted):
            continue
        daily, monthly = _limits(settings.for_caller(who) if who in settings.callers or not who.startswith(("key:", "team:")) else None,
                                 book.budgets.get(who))
        if daily is None and monthly is None:
            continue
        month, day = spent.get(who, (Decimal(0), Decimal(0)))
        out.append(BudgetUse(book.label(who), daily, day, monthly, month))
    return out


def _limits(configured: Budget | None, own: tuple[Decimal | None, Decimal | None] | None) -> tuple[Decimal | None, Decimal | None]:
    """The stricter of a configured budget and a key's or team's own (as the budget stage holds)."""
    pairs = [p for p in ((configured.daily, configured.monthly) if configured else None, own) if p is not None]
    daily = [p[0] for p in pairs if p[0] is not None]
    monthly = [p[1] for p in pairs if p[1] is not None]
    return (min(daily) if daily else None), (min(monthly) if monthly else None)
