"""The OpenTelemetry SDK as a host configures it, with in-memory exporters: the ``otel``
fixture installs one global tracer provider and one global meter provider for the test process
(globals can be set once) and hands each test a fresh view of them.

Spans are kept only while a test holds the fixture, so the rest of the suite, which also runs
under these providers once they are set, adds nothing to memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry import metrics, trace  # noqa: E402
from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider  # noqa: E402
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader  # noqa: E402
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402

_DELTA = {Histogram: AggregationTemporality.DELTA, Counter: AggregationTemporality.DELTA}


class _Gated(SimpleSpanProcessor):
    armed = False

    def on_end(self, span: ReadableSpan) -> None:
        if self.armed:
            super().on_end(span)


class Otel:
    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.processor = _Gated(self.exporter)
        self.reader = InMemoryMetricReader(preferred_temporality=_DELTA)  # type: ignore[arg-type]
        provider = TracerProvider()
        provider.add_span_processor(self.processor)
        trace.set_tracer_provider(provider)
        metrics.set_meter_provider(MeterProvider(metric_readers=[self.reader]))

    # -- spans --
    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, prefix: str) -> list[ReadableSpan]:
        return [s for s in self.spans() if s.name.startswith(prefix)]

    def requests(self) -> list[ReadableSpan]:
        return [s for s in self.spans() if s.attributes.get("relay.request_id")]

    def attempts(self) -> list[ReadableSpan]:
        return sorted((s for s in self.spans() if "relay.attempt" in s.attributes), key=lambda s: s.start_time)

    # -- metrics --
    def points(self, name: str) -> list[Any]:
        """The data points of metric ``name`` since the last call to :meth:`collect`."""
        return self.collect().get(name, [])

    def collect(self) -> dict[str, list[Any]]:
        data = self.reader.get_metrics_data()
        found: dict[str, list[Any]] = {}
        for resource in data.resource_metrics if data is not None else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    found.setdefault(metric.name, []).extend(metric.data.data_points)
        return found


_OTEL: Otel | None = None


@pytest.fixture
def otel() -> Iterator[Otel]:
    global _OTEL
    if _OTEL is None:
        _OTEL = Otel()
    _OTEL.exporter.clear()
    _OTEL.collect()  # what earlier tests recorded
    _OTEL.processor.armed = True
    try:
        yield _OTEL
    finally:
        _OTEL.processor.armed = False
        _OTEL.exporter.clear()

