"""Rate limits as GCRA (the generic cell rate algorithm), exact and without timers.

A limit of ``limit`` units per ``period`` seconds with a ``burst`` keeps one number per key,
the *theoretical arrival time* (TAT). A unit costs ``interval = period / limit`` seconds of
it. A request of ``cost`` units at ``now`` is allowed when ``max(TAT, now) + cost * interval
- burst * interval <= now``; otherwise the answer says exactly when it would be:
``retry_after = that left side - now``. Nothing polls and nothing refills in the background:
capacity returning is arithmetic on the next call.

Both backends (:mod:`.storage.memory`, :mod:`.storage.redis`) apply the same arithmetic
(:func:`gcra`) to every key of a request at once, all-or-nothing, so a request refused by one
limit consumes none of the others.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = ["Bucket", "BucketState", "Decision", "Rate", "adjusted", "format_reset", "gcra"]

_EPSILON = 1e-6


@dataclass(frozen=True, slots=True)
class Rate:
    """``limit`` units per ``period`` seconds, of which ``burst`` may come at once."""

    limit: int
    period: float = 60.0
    burst: int = 0
    #: Seconds one unit takes to come back: ``period / limit``.
    interval: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.burst <= 0:
            object.__setattr__(self, "burst", self.limit)
        object.__setattr__(self, "interval", self.period / self.limit)


@dataclass(frozen=True, slots=True)
class Bucket:
    """One limit applied to one key: ``kind`` is ``requests`` or ``tokens``."""

    key: str
    rate: Rate
    kind: str


# The two per-decision values are plain slotted classes, not frozen dataclasses: a frozen
# dataclass sets each field through object.__setattr__, and four of them are made per request.
@dataclass(slots=True)
class BucketState:
    """What a bucket looks like after a decision: units left and seconds until full again."""

    remaining: int
    reset: float


@dataclass(slots=True)
class Decision:
    """The answer for all buckets of one request; ``retry_after`` is ``inf`` when the cost
    exceeds a bucket's burst (it can never pass)."""

    allowed: bool
    retry_after: float
    states: tuple[BucketState, ...]


def gcra(tat: float | None, now: float, rate: Rate, cost: float) -> tuple[float, float, BucketState]:
    """One bucket: ``(new_tat, wait, state)``; ``wait > 0`` means refused (the TAT stays).

    ``state`` describes the bucket as it would be after this request when allowed, and as it
    is now when refused.
    """
    interval = rate.interval
    base = now if tat is None or tat < now else tat
    new_tat = base + cost * interval
    window = rate.burst * interval
    if cost > rate.burst:
        wait = math.inf
    else:
        wait = new_tat - window - now
        if wait <= _EPSILON * interval:  # float rounding must not refuse the last unit
            wait = 0.0
    after = base if wait > 0 else new_tat
    remaining = int((window - (after - now)) / interval + _EPSILON)
    return new_tat, wait, BucketState(max(remaining, 0), after - now)


def adjusted(tat: float | None, now: float, rate: Rate, delta: float) -> float | None:
    """The TAT after charging ``delta`` more units (negative: a refund); ``None`` when full."""
    base = now if tat is None or tat < now else tat
    new_tat = base + delta * rate.interval
    return new_tat if new_tat > now else None


def format_reset(seconds: float) -> str:
    """OpenAI's spelling of a reset delay: ``20ms``, ``1.5s``, ``6m0s``."""
    if seconds < 1:
        return f"{max(0, int(seconds * 1000))}ms"
    if seconds < 60:
        return f"{seconds:.3g}s"
    minutes, rest = divmod(int(math.ceil(seconds)), 60)
    return f"{minutes}m{rest}s"
