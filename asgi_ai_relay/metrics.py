"""Prometheus metrics at ``{prefix}/metrics``, through ``prometheus-client`` (the ``metrics``
extra). Each relay has its own registry, so two relays in one process do not mix numbers.

Counted once per finished request: requests, tokens, cost, latency, cache results. Values
that other parts of the relay own (queue depth, circuit-breaker state) are read when scraped,
from callables registered with :meth:`Metrics.watch` (or, for a reading that awaits, such as
breakers kept in Redis, :meth:`Metrics.watch_breakers`, read by :meth:`Metrics.scrape`);
nothing polls.

Several worker processes (gunicorn ``-w N``, uvicorn ``--workers N``): set
``PROMETHEUS_MULTIPROC_DIR`` to an empty directory before the server starts (prometheus-client
picks its value store when it is imported). Each worker then writes its counters there, and a
scrape, whichever worker answers it, reports the sum of all of them (``MultiProcessCollector``).
Watched values become gauges in the same files, each with the multiprocess mode its watch
names (queue depth: ``livesum`` over live workers; breaker state: ``livemostrecent``), written by
a worker when it finishes a request and when it answers a scrape. A gunicorn ``child_exit`` hook
calling ``prometheus_client.multiprocess.mark_process_dead(worker.pid)`` drops a dead worker's
gauges.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .metrics_counts import BUCKETS, Counts

if TYPE_CHECKING:
    from .call import Call

__all__ = ["BREAKER_VALUES", "CONTENT_TYPE", "MULTIPROCESS_ENV", "Metrics", "metrics_or_none"]

logger = logging.getLogger("asgi_ai_relay")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: A watched value: labels -> value, read at scrape time.
Reading = Callable[[], Mapping[tuple[str, ...], float]]
#: A watched value that awaits (a shared store), read by :meth:`Metrics.scrape`.
AsyncReading = Callable[[], Awaitable[Mapping[tuple[str, ...], float]]]
#: What ``{prefix}/v1/health`` reports: ``{"deployments": {name: {"provider": ..., "state": ...}}}``.
HealthReading = Callable[[], Awaitable[Mapping[str, Any]]]

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: The gauge value of each breaker state.
BREAKER_VALUES = {"closed": 0.0, "half_open": 1.0, "open": 2.0}
#: Seconds a scrape waits for an awaited reading before it reports without it.
READ_TIMEOUT = 2.0


@dataclass(slots=True)
class _Watch:
    documentation: str
    labels: tuple[str, ...]
    read: Reading | None
    mode: str
    read_async: AsyncReading | None = None
    #: An awaited reading's last values (what a synchronous render reports).
    last: Mapping[tuple[str, ...], float] = field(default_factory=dict)
    #: Multiprocess mode: the gauge the readings are written to.
    gauge: Any = None


class Metrics:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        #: This relay's own metrics; in multiprocess mode a scrape reads the files instead.
        self.registry = CollectorRegistry(auto_describe=True)
        self.multiprocess = bool(os.environ.get(MULTIPROCESS_ENV))
        r = self.registry
        self.flagged = Counter("relay_usage_flagged", "Answers whose reported usage did not fit the traffic (prompt, output).",
                               ("model", "provider", "flag"), registry=r)
        self._watched: dict[str, _Watch] = {}
        self._series: dict[tuple[str, str, str, int, str], _Series] = {}
        #: One process: the per-request numbers as plain numbers (see :mod:`.metrics_counts`).
        self.counts: Counts | None = None
        if not self.multiprocess:
            self.counts = Counts()
            r.register(self.counts)
            r.register(_Watched(self._watched))
            self.exposed = r
            return
        self.requests = Counter("relay_requests", "Answered requests.", ("endpoint", "model", "provider", "status", "cache"), registry=r)
        self.tokens = Counter("relay_tokens", "Tokens by kind (prompt, completion, cached).", ("model", "kind"), registry=r)
        self.cost = Counter("relay_cost_usd", "Cost in USD.", ("model", "provider"), registry=r)
        self.saved = Counter("relay_cache_saved_usd", "USD cache hits saved.", ("model",), registry=r)
        self.cache = Counter("relay_cache", "Cache results (hit, miss, bypass).", ("result",), registry=r)
        self.latency = Histogram("relay_request_latency_seconds", "Whole-request latency.", ("endpoint", "model"), buckets=BUCKETS, registry=r)
        self.ttfb = Histogram("relay_time_to_first_byte_seconds", "Time to the first streamed byte.", ("model",), buckets=BUCKETS, registry=r)
        self.exposed = CollectorRegistry()
        _workers_collector(self.exposed)

    def watch(self, name: str, documentation: str, labels: Iterable[str], read: Reading, *, mode: str = "livesum") -> None:
        """Expose a gauge whose values ``read()`` returns at each scrape, e.g.
        ``watch("relay_pool_size", "Open connections.", ("provider",), pools.sizes)``.
        ``mode``: how several workers' values combine in multiprocess mode (prometheus-client's
        ``multiprocess_mode``: ``livesum``, ``livemax``, ``livemostrecent``...)."""
        self._add(name, _Watch(documentation, tuple(labels), read, mode))

    def watch_async(self, name: str, documentation: str, labels: Iterable[str], read: AsyncReading, *, mode: str = "livemostrecent") -> None:
        """Like :meth:`watch` for a reading that awaits; it is read by :meth:`scrape` (a
        synchronous :meth:`render` reports the values the last scrape read)."""
        self._add(name, _Watch(documentation, tuple(labels), None, mode, read_async=read))

    def _add(self, name: str, watch: _Watch) -> None:
        if self.multiprocess:
            from prometheus_client import Gauge

            watch.gauge = Gauge(name, watch.documentation, watch.labels, registry=None, multiprocess_mode=watch.mode)  # type: ignore[arg-type]
        self._watched[name] = watch

    def watch_queue_depth(self, read: Reading) -> None:
        """Hook for the request queue: ``read() -> {("waiting",): n, ("in_flight",): n, ...}``."""
        self.watch("relay_queue_depth", "Requests in the relay's queue and slots, by state.", ("state",), read, mode="livesum")

    def watch_breakers(self, health: HealthReading) -> None:
        """Hook for the circuit breakers of every deployment: ``health`` is
        :meth:`Router.health <asgi_ai_relay.routing.Router.health>` (what ``/v1/health``
        reports), awaited at each :meth:`scrape`. The gauge is ``relay_breaker_state{deployment,
        provider}``: 0 closed, 1 half-open, 2 open. With shared breakers every worker reads the
        same state; in multiprocess mode the most recent reading of a live worker is reported."""

        async def read() -> Mapping[tuple[str, ...], float]:
            deployments = (await health()).get("deployments", {})
            return {(name, d["provider"]): BREAKER_VALUES.get(d["state"], 2.0) for name, d in deployments.items()}

        self.watch_async(
            "relay_breaker_state", "Circuit state per deployment (0 closed, 1 half-open, 2 open).",
            ("deployment", "provider"), read, mode="livemostrecent",
        )

    def watch_breaker_state(self, read: Reading) -> None:
        """Hook for circuit breakers read without awaiting: ``read() -> {(provider,): 0 closed,
        1 half-open, 2 open}`` (:meth:`watch_breakers` reads them from the breaker store)."""
        self.watch("relay_breaker_state", "Circuit state per provider (0 closed, 1 half-open, 2 open).", ("provider",), read, mode="livemostrecent")

    def observe(self, call: Call) -> None:
        model = call.model.alias if call.model is not None else ""
        key = (call.endpoint, model, call.provider or "", call.status, call.cache or "")
        if call.usage_flag:
            for flag in call.usage_flag.split(","):
                self.flagged.labels(model, call.provider or "", flag).inc()
        counts = self.counts
        if counts is not None:
            counts.add(key, call.elapsed_ms() / 1000, call.usage, call.cost, call.saved,
                       call.ttfb_ms / 1000 if call.stream and call.ttfb_ms is not None else None)
            return
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
        if self.multiprocess:
            self._publish(awaited=False)

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

    async def scrape(self) -> bytes:
        """Read the awaited watches (each bounded by ``READ_TIMEOUT``), then :meth:`render`."""
        for name, watch in list(self._watched.items()):
            if watch.read_async is None:
                continue
            try:
                watch.last = dict(await asyncio.wait_for(watch.read_async(), READ_TIMEOUT))
            except Exception:
                logger.exception("metrics: reading %s failed", name)
        return self.render()

    def render(self) -> bytes:
        """The Prometheus text of this relay, or, in multiprocess mode, of every worker."""
        from prometheus_client import generate_latest

        if self.multiprocess:
            self._publish(awaited=True)
        return generate_latest(self.exposed)

    def _publish(self, awaited: bool) -> None:
        """Multiprocess mode: this worker's watched readings into its gauge files. An awaited
        reading is written only when a scrape has just read it: written again later, its old
        value would pass for the most recent one."""
        for name, watch in list(self._watched.items()):
            if watch.read is None and not awaited:
                continue
            values = _read(name, watch)
            if values is not None:
                for label_values, value in values.items():
                    # (a gauge without labels is set itself: labels() refuses it)
                    (watch.gauge.labels(*label_values) if label_values else watch.gauge).set(value)


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


def _read(name: str, watch: _Watch) -> Mapping[tuple[str, ...], float] | None:
    """A watch's values now (an awaited one: as last read), or ``None`` when reading failed."""
    if watch.read is None:
        return watch.last
    try:
        return watch.read()
    except Exception:
        logger.exception("metrics: reading %s failed", name)
        return None


class _Watched:
    """A collector over the watched callables (one process)."""

    def __init__(self, watched: dict[str, _Watch]) -> None:
        self.watched = watched

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterable[Any]:
        from prometheus_client.core import GaugeMetricFamily

        for name, watch in list(self.watched.items()):
            values = _read(name, watch)
            if values is None:
                continue
            family = GaugeMetricFamily(name, watch.documentation, labels=watch.labels)
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


def _workers_collector(registry: Any) -> None:
    """Register prometheus-client's reader of every worker's files on ``registry``, less the
    files another worker has just made and not yet sized: such a file holds no value yet, and
    prometheus-client fails on it (``struct.error``), which made the scrape racing a worker's
    first value a 500."""
    import glob

    from prometheus_client import multiprocess

    class Workers(multiprocess.MultiProcessCollector):
        def collect(self) -> Any:
            files = []
            for path in glob.glob(os.path.join(self._path, "*.db")):
                try:
                    if os.path.getsize(path) >= 8:  # its header: the bytes in use
                        files.append(path)
                except OSError:  # removed meanwhile (a dead worker's)
                    continue
            return self.merge(files, accumulate=True)  # type: ignore[no-untyped-call]

    Workers(registry)  # type: ignore[no-untyped-call]
