"""Prometheus metrics at ``{prefix}/metrics``, through ``prometheus-client`` (the ``metrics``
extra). Each relay has its own registry, so two relays in one process do not mix numbers.

Counted once per finished request: requests, tokens, cost, latency, cache results. Values
that other parts of the relay own (queue depth, circuit-breaker state) are read when scraped,
from callables registered with :meth:`Metrics.watch`; nothing polls.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .call import Call

__all__ = ["CONTENT_TYPE", "Metrics", "metrics_or_none"]

logger = logging.getLogger("asgi_ai_relay")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

#: A watched value: labels -> value, read at scrape time.
Reading = Callable[[], Mapping[tuple[str, ...], float]]


class Metrics:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("relay_requests", "Answered requests.", ("endpoint", "model", "provider", "status", "cache"), registry=r)
        self.tokens = Counter("relay_tokens", "Tokens by kind (prompt, completion, cached).", ("model", "kind"), registry=r)
        self.cost = Counter("relay_cost_usd", "Cost in USD.", ("model", "provider"), registry=r)
        self.saved = Counter("relay_cache_saved_usd", "USD cache hits saved.", ("model",), registry=r)
        self.cache = Counter("relay_cache", "Cache results (hit, miss, bypass).", ("result",), registry=r)
        self.latency = Histogram("relay_request_latency_seconds", "Whole-request latency.", ("endpoint", "model"), buckets=_BUCKETS, registry=r)
        self.ttfb = Histogram("relay_time_to_first_byte_seconds", "Time to the first streamed byte.", ("model",), buckets=_BUCKETS, registry=r)
        self._watched: dict[str, tuple[str, tuple[str, ...], Reading]] = {}
        r.register(_Watched(self._watched))
        self._series: dict[tuple[str, str, str, int, str], _Series] = {}

    def watch(self, name: str, documentation: str, labels: Iterable[str], read: Reading) -> None:
        """Expose a gauge whose values ``read()`` returns at each scrape, e.g.
        ``watch("relay_pool_size", "Open connections.", ("provider",), pools.sizes)``."""
        self._watched[name] = (documentation, tuple(labels), read)

    def watch_queue_depth(self, read: Reading) -> None:
        """Hook for the request queue: ``read() -> {("waiting",): n, ("in_flight",): n, ...}``."""
        self.watch("relay_queue_depth", "Requests in the relay's queue and slots, by state.", ("state",), read)

    def watch_breaker_state(self, read: Reading) -> None:
        """Hook for circuit breakers: ``read() -> {(provider,): 0 closed, 1 half-open, 2 open}``."""
        self.watch("relay_breaker_state", "Circuit state per provider (0 closed, 1 half-open, 2 open).", ("provider",), read)

    def observe(self, call: Call) -> None:
        model = call.model.alias if call.model is not None else ""
        key = (call.endpoint, model, call.provider or "", call.status, call.cache or "")
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = self._children(*key)
        series.requests.inc()
        series.latency.observe(call.elapsed_ms() / 1000)
        if series.cache is not None:
            series.cache.inc()
        usage = call.usage
        if usage is not None:
            series.prompt.inc(usage.prompt_tokens)
            series.completion.inc(usage.completion_tokens)
            if usage.cached_tokens:
                series.cached.inc(usage.cached_tokens)
        if call.cost:
            series.cost.inc(float(call.cost))
        if call.saved:
            series.saved.inc(float(call.saved))
        if call.stream and call.ttfb_ms is not None:
            series.ttfb.observe(call.ttfb_ms / 1000)

    def _children(self, endpoint: str, model: str, provider: str, status: int, cache: str) -> _Series:
        """The labelled children one kind of request updates; looking them up is most of the
        cost of ``labels()``, so each combination is looked up once."""
        return _Series(
            requests=self.requests.labels(endpoint, model, provider, str(status), cache),
            latency=self.latency.labels(endpoint, model),
            cache=self.cache.labels(cache) if cache else None,
            prompt=self.tokens.labels(model, "prompt"),
            completion=self.tokens.labels(model, "completion"),
            cached=self.tokens.labels(model, "cached"),
            cost=self.cost.labels(model, provider),
            saved=self.saved.labels(model),
            ttfb=self.ttfb.labels(model),
        )

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


@dataclass(frozen=True, slots=True)
class _Series:
    requests: Any
    latency: Any
    cache: Any
    prompt: Any
    completion: Any
    cached: Any
    cost: Any
    saved: Any
    ttfb: Any


class _Watched:
    """A collector over the watched callables."""

    def __init__(self, watched: dict[str, tuple[str, tuple[str, ...], Reading]]) -> None:
        self.watched = watched

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterable[Any]:
        from prometheus_client.core import GaugeMetricFamily

        for name, (documentation, labels, read) in list(self.watched.items()):
            family = GaugeMetricFamily(name, documentation, labels=labels)
            try:
                values = read()
            except Exception:
                logger.exception("metrics: reading %s failed", name)
                continue
            for label_values, value in values.items():
                family.add_metric(list(label_values), value)
            yield family


def metrics_or_none(enabled: bool) -> Metrics | None:
    """A :class:`Metrics`, or ``None`` when disabled or prometheus-client is not installed."""
    if not enabled:
        return None
    try:
        return Metrics()
    except ImportError:
        logger.info("metrics: prometheus-client is not installed; %s/metrics is off", "{prefix}")
        return None
