"""In-process backends: nothing to install, nothing shared between workers."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from ..limits import Bucket, BucketState, Decision, adjusted, gcra
from .base import LedgerRow

__all__ = ["MemoryLedger", "MemoryRateLimits"]


class MemoryLedger:
    """Keeps rows in a list; for tests and for hosts that do not want a file."""

    def __init__(self) -> None:
        self._rows: list[LedgerRow] = []

    def record(self, row: LedgerRow) -> None:
        self._rows.append(row)

    def flush(self) -> None:
        return None

    def rows(self) -> list[LedgerRow]:
        return list(self._rows)

    def close(self) -> None:
        return None


class MemoryRateLimits:
    """GCRA state in a dict, for one process. Decisions never await, so each is atomic.

    :param clock: seconds, monotonic; injectable so tests can move time.
    :param max_keys: past this many keys, keys whose buckets are full again are dropped.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000) -> None:
        self.clock = clock
        self.max_keys = max_keys
        self._tats: dict[str, float] = {}

    async def acquire(self, buckets: Sequence[Bucket], costs: Sequence[float]) -> Decision:
        return self.acquire_now(buckets, costs)

    def acquire_now(self, buckets: Sequence[Bucket], costs: Sequence[float]) -> Decision:
        now = self.clock()
        tats = self._tats
        wait = 0.0
        new: list[float] = []
        states: list[BucketState] = []
        for bucket, cost in zip(buckets, costs, strict=True):
            tat, bucket_wait, state = gcra(tats.get(bucket.key), now, bucket.rate, cost)
            wait = max(wait, bucket_wait)
            new.append(tat)
            states.append(state)
        if wait > 0:
            return Decision(False, wait, tuple(states))
        for bucket, tat in zip(buckets, new, strict=True):
            tats[bucket.key] = tat
        if len(tats) > self.max_keys:
            self._prune(now)
        return Decision(True, 0.0, tuple(states))

    async def adjust(self, buckets: Sequence[Bucket], deltas: Sequence[float]) -> None:
        self.adjust_now(buckets, deltas)

    def adjust_now(self, buckets: Sequence[Bucket], deltas: Sequence[float]) -> None:
        now = self.clock()
        for bucket, delta in zip(buckets, deltas, strict=True):
            tat = adjusted(self._tats.get(bucket.key), now, bucket.rate, delta)
            if tat is None:
                self._tats.pop(bucket.key, None)
            else:
                self._tats[bucket.key] = tat

    def _prune(self, now: float) -> None:
        for key in [k for k, tat in self._tats.items() if tat <= now]:
            del self._tats[key]

    async def aclose(self) -> None:
        return None
