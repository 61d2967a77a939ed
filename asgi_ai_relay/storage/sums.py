"""What one group of ledger rows sums to (:class:`Totals`), its latency percentiles, and the
totals of rows summed here in Python (the memory ledger, and ledgers that cannot sum in SQL).
:mod:`.totals` sums the same in SQL where the rows are.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

from .base import COUNT_COLUMNS, LedgerRow

__all__ = ["COLUMN_OF", "EXTRA_SUMS", "GROUPS", "Key", "Totals", "aggregate_rows", "percentiles"]

#: The names a report may group by.
GROUPS = ("model", "caller", "day", "month", "provider", "key", "team")
#: The ledger column of a group whose name is not its column's.
COLUMN_OF = {"key": "key_id"}
_ZERO = Decimal(0)

#: Sums beyond the first ones, in the order SQL reads them (after the money): the token classes
#: priced apart, then the rows flagged by the usage check.
EXTRA_SUMS = (*COUNT_COLUMNS[3:], "usage_flagged")

#: ``(model or "", *values of group_by)``
Key = tuple[str, ...]


@dataclass(slots=True)
class Totals:
    """Sums over the ledger rows of one group."""

    requests: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cost_usd: Decimal = _ZERO
    cache_hits: int = 0
    saved_usd: Decimal = _ZERO
    estimated: int = 0
    #: Rows with any tokens, and their prompt tokens read from a provider cache (at most the
    #: row's prompt tokens): what a comparison price list prices.
    token_rows: int = 0
    cached_prompt: int = 0
    #: ``(latency ms, weight)``: every row's latency, or a sample weighted to the row count.
    latencies: list[tuple[float, float]] = field(default_factory=list)
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    reasoning_tokens: int = 0
    audio_input_tokens: int = 0
    image_input_tokens: int = 0
    web_search_requests: int = 0
    #: Rows whose provider-reported usage did not fit the traffic (``usage_flag``).
    usage_flagged: int = 0

    def add_row(self, row: LedgerRow) -> None:
        self.requests += 1
        self.errors += row.status >= 400
        self.prompt_tokens += row.prompt_tokens
        self.completion_tokens += row.completion_tokens
        self.cached_tokens += row.cached_tokens
        self.cost_usd += row.cost_usd
        self.cache_hits += row.cache_hit
        self.saved_usd += row.cache_saved_usd
        self.estimated += row.estimated
        for name in EXTRA_SUMS[:-1]:
            setattr(self, name, getattr(self, name) + getattr(row, name))
        self.usage_flagged += row.usage_flag is not None
        if row.prompt_tokens or row.completion_tokens:
            self.token_rows += 1
            self.cached_prompt += min(row.cached_tokens, row.prompt_tokens)
        self.latencies.append((row.latency_ms, 1.0))

    def merge(self, other: Totals) -> None:
        for name in ("requests", "errors", "prompt_tokens", "completion_tokens", "cached_tokens", "cost_usd",
                     "cache_hits", "saved_usd", "estimated", "token_rows", "cached_prompt", *EXTRA_SUMS):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.latencies.extend(other.latencies)


def percentiles(samples: list[tuple[float, float]], ranks: Sequence[int] = (50, 95, 99)) -> list[float | None]:
    """Nearest-rank percentiles of weighted samples (all weights 1: the classic definition)."""
    if not samples:
        return [None for _ in ranks]
    ordered = sorted(samples)
    total = round(sum(weight for _, weight in ordered))  # the rows' count: weights add up to it
    out: list[float | None] = []
    for p in ranks:
        rank, seen = max(1, math.ceil(p / 100 * total)) - 1e-6, 0.0
        value = ordered[-1][0]
        for latency, weight in ordered:
            seen += weight
            if seen >= rank:
                value = latency
                break
        out.append(round(value, 3))
    return out


def _value(row: LedgerRow, name: str) -> str:
    if name == "day":
        return datetime.fromtimestamp(row.ts, UTC).strftime("%Y-%m-%d")
    if name == "month":
        return datetime.fromtimestamp(row.ts, UTC).strftime("%Y-%m")
    return str(getattr(row, COLUMN_OF.get(name, name)) or "")


def aggregate_rows(rows: Iterable[LedgerRow], group_by: Sequence[str]) -> dict[Key, Totals]:
    """The totals of ``rows`` per model and ``group_by`` values, in Python."""
    out: dict[Key, Totals] = {}
    for row in rows:
        key = (row.model or "", *(_value(row, name) for name in group_by))
        totals = out.get(key)
        if totals is None:
            totals = out[key] = Totals()
        totals.add_row(row)
    return out
