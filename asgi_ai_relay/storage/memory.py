"""In-process backends: nothing to install, nothing shared between workers."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from ..limits import Bucket, BucketState, Decision, adjusted, gcra
from .base import LedgerQuery, LedgerRow
from .totals import Key, Totals, aggregate_rows

__all__ = ["MemoryCache", "MemoryLedger", "MemoryRateLimits"]


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

    def query(self, query: LedgerQuery) -> list[LedgerRow]:
        return [row for row in list(self._rows) if query.matches(row)]

    def aggregate(self, query: LedgerQuery, group_by: Sequence[str], *, latencies: bool = True) -> dict[Key, Totals]:
        """The rows' totals per model and ``group_by`` values, summed here."""
        return aggregate_rows(self.query(query), group_by)

    def health(self) -> dict[str, Any]:
        return {"ok": True, "behind": 0, "spooled": 0, "dropped": 0, "last_error": None}

    def wait_ready(self, timeout: float = 0.0) -> bool:
        return True

    def close(self) -> None:
        return None


class MemoryCache:
    """An LRU bounded by entry count and by total bytes, each entry with its own expiry.

    :param clock: monotonic seconds; tests drive time through it.
    """

    def __init__(
        self,
        *,
        maxsize: int = 10_000,
        max_bytes: int = 256 * 1024 * 1024,
        ttl: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.maxsize = maxsize
        self.max_bytes = max_bytes
        self.default_ttl = ttl
        self.clock = clock
        self.bytes = 0
        # Values (in LRU order) and expiry times in two maps rather than one map of tuples: a
        # tuple per entry is a new object for the garbage collector to promote, and a filling
        # cache then set off full collections, the relay's largest latency spikes under load.
        self._entries: OrderedDict[str, bytes] = OrderedDict()
        self._expires: dict[str, float] = {}
        self._lock = threading.Lock()  # WSGI adapters may use one relay from several threads

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: str) -> bytes | None:
        return self.get_now(key)

    def get_now(self, key: str) -> bytes | None:
        """``get`` without awaiting: the relay looks misses up through it directly."""
        with self._lock:
            value = self._entries.get(key)
            if value is None:
                return None
            if self._expires[key] <= self.clock():
                self._drop(key)
                return None
            self._entries.move_to_end(key)
            return value

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        self.set_now(key, value, ttl)

    def set_now(self, key: str, value: bytes, ttl: float) -> None:
        """``set`` without awaiting: the relay stores misses through it directly, no task each."""
        size = len(value)
        if size > self.max_bytes:
            return
        # An exact-size copy: orjson's output keeps its working buffer (4-8 KiB however short the
        # JSON), which made a full cache of small answers several times its counted bytes.
        value = bytes(memoryview(value))
        entries = self._entries
        with self._lock:
            if key in entries:
                self._drop(key)
            entries[key] = value
            self._expires[key] = self.clock() + ttl
            self.bytes += size
            while len(entries) > self.maxsize or self.bytes > self.max_bytes:
                self._drop(next(iter(entries)))

    def _drop(self, key: str) -> None:
        value = self._entries.pop(key)
        del self._expires[key]
        self.bytes -= len(value)

    async def aclose(self) -> None:
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
