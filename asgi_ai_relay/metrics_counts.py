"""The per-request numbers of one process, kept as plain numbers and made into Prometheus
families when scraped (a prometheus-client collector).

A labelled child of prometheus-client checks its labels and takes a lock on every update:
about 0.5 us an ``inc`` and 1.1 us a histogram ``observe``, some 35k instructions for the eight
updates of a request. Here a request adds a few numbers to the list of its kind (endpoint,
model, provider, status, cache result); a scrape sums the lists into the families. With
``PROMETHEUS_MULTIPROC_DIR`` the workers' numbers must go through prometheus-client's files,
and :class:`~asgi_ai_relay.metrics.Metrics` updates its children instead.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable
from decimal import Decimal
from operator import add, attrgetter
from typing import Any

from .types import Usage

__all__ = ["BUCKETS", "Counts"]

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_N = len(BUCKETS)
#: Where each number of a kind sits in its list: the sums first (one pass adds a request's).
_REQUESTS, _COST, _SAVED, _LATENCY_SUM, _PROMPT, _COMPLETION, _CACHED, _LATENCY, _TTFB, _TTFB_SUM, _TTFB_COUNT = range(11)
_SUMS = slice(_REQUESTS, _CACHED + 1)
_TOKENS_OF = attrgetter("prompt_tokens", "completion_tokens", "cached_tokens")
_NO_USAGE = Usage()
Key = tuple[str, str, str, int, str]


class Counts:
    """``add`` per finished request; :meth:`collect` per scrape (registered in a registry)."""

    def __init__(self) -> None:
        self.kinds: dict[Key, list[Any]] = {}

    def add(self, key: Key, latency: float, usage: Usage | None, cost: Decimal, saved: Decimal,
            ttfb: float | None) -> None:
        """One request of ``key``: its latency and time to first byte in seconds, its usage
        (``None``: none), cost and saving."""
        kind = self.kinds.get(key)
        if kind is None:
            kind = self.kinds[key] = [0, 0.0, 0.0, 0.0, 0, 0, 0, [0] * (_N + 1), [0] * (_N + 1), 0.0, 0]
        # Each sum plus the request's number, in one pass (float(0) is 0.0 like the zero it adds).
        kind[_SUMS] = map(add, kind[_SUMS], (1, float(cost), float(saved), latency, *_TOKENS_OF(usage or _NO_USAGE)))
        kind[_LATENCY][bisect_left(BUCKETS, latency)] += 1  # the first bound >= it ("le")
        if ttfb is not None:
            kind[_TTFB][bisect_left(BUCKETS, ttfb)] += 1
            kind[_TTFB_SUM] += ttfb
            kind[_TTFB_COUNT] += 1

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterable[Any]:
        from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

        kinds = list(self.kinds.items())
        requests = CounterMetricFamily("relay_requests", "Answered requests.",
                                       labels=("endpoint", "model", "provider", "status", "cache"))
        tokens: dict[str, list[float]] = {}
        cost: dict[tuple[str, str], float] = {}
        saved: dict[str, float] = {}
        cache: dict[str, float] = {}
        latency: dict[tuple[str, str], list[Any]] = {}
        ttfb: dict[str, list[Any]] = {}
        for (endpoint, model, provider, status, result), kind in kinds:
            requests.add_metric([endpoint, model, provider, str(status), result], kind[_REQUESTS])
            sums = tokens.setdefault(model, [0, 0, 0])
            sums[0] += kind[_PROMPT]
            sums[1] += kind[_COMPLETION]
            sums[2] += kind[_CACHED]
            cost[model, provider] = cost.get((model, provider), 0.0) + kind[_COST]
            saved[model] = saved.get(model, 0.0) + kind[_SAVED]
            if result:
                cache[result] = cache.get(result, 0) + kind[_REQUESTS]
            _merge(latency.setdefault((endpoint, model), [[0] * (_N + 1), 0.0, 0]), kind[_LATENCY], kind[_LATENCY_SUM],
                   kind[_REQUESTS])
            _merge(ttfb.setdefault(model, [[0] * (_N + 1), 0.0, 0]), kind[_TTFB], kind[_TTFB_SUM], kind[_TTFB_COUNT])
        yield requests
        family = CounterMetricFamily("relay_tokens", "Tokens by kind (prompt, completion, cached).", labels=("model", "kind"))
        for model, (prompt, completion, cached) in tokens.items():
            for name, value in (("prompt", prompt), ("completion", completion), ("cached", cached)):
                family.add_metric([model, name], value)
        yield family
        yield _counter(CounterMetricFamily("relay_cost_usd", "Cost in USD.", labels=("model", "provider")), cost)
        yield _counter(CounterMetricFamily("relay_cache_saved_usd", "USD cache hits saved.", labels=("model",)), saved)
        yield _counter(CounterMetricFamily("relay_cache", "Cache results (hit, miss, bypass).", labels=("result",)), cache)
        yield _histogram(HistogramMetricFamily("relay_request_latency_seconds", "Whole-request latency.",
                                               labels=("endpoint", "model")), latency)
        yield _histogram(HistogramMetricFamily("relay_time_to_first_byte_seconds", "Time to the first streamed byte.",
                                               labels=("model",)), ttfb)


def _merge(into: list[Any], buckets: list[int], total: float, count: int) -> None:
    into[0] = [a + b for a, b in zip(into[0], buckets, strict=True)]
    into[1] += total
    into[2] += count


def _counter(family: Any, values: dict[Any, float]) -> Any:
    for labels, value in values.items():
        family.add_metric(list(labels) if isinstance(labels, tuple) else [labels], value)
    return family


def _histogram(family: Any, values: dict[Any, list[Any]]) -> Any:
    for labels, (buckets, total, _count) in values.items():
        cumulative, running = [], 0
        for bound, n in zip((*BUCKETS, float("inf")), buckets, strict=True):
            running += n
            cumulative.append((_bound(bound), running))
        family.add_metric(list(labels) if isinstance(labels, tuple) else [labels], cumulative, sum_value=total)
    return family


def _bound(bound: float) -> str:
    """A bucket's ``le`` as prometheus-client spells it (``0.005``, ``1.0``, ``+Inf``)."""
    return "+Inf" if bound == float("inf") else repr(float(bound))
