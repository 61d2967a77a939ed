"""Metrics of the relay in the host's tools: OpenTelemetry instruments through the host's
global meter provider, and the health readings added to the relay's Prometheus registry.

OpenTelemetry (GenAI semantic conventions), recorded once per model request:

- ``gen_ai.client.operation.duration`` (s): the whole request, as its caller saw it;
- ``gen_ai.client.token.usage`` ({token}, ``gen_ai.token.type`` input/output): tokens billed
  upstream (not recorded for cache hits, which use none);
- ``gen_ai.client.operation.time_to_first_chunk`` (s): streams, to their first piece.

Read when collected: ``relay.ledger.behind`` (rows recorded and not yet stored),
``relay.ledger.dropped``, and the :mod:`.signals` counts (``relay.redis.errors``,
``relay.token_refresh.failures``, ``relay.alert.deliveries``). Prometheus gets the same
readings as ``relay_ledger_behind_rows``, ``relay_ledger_dropped_rows``, ``relay_ledger_up``,
``relay_redis_errors``, ``relay_token_refresh_failures`` and ``relay_alert_deliveries``.

Instruments are made once per meter provider (several relays in a process share them); while
the host has configured none, recording costs one check of the global provider.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from . import signals
from ._version import __version__

try:
    from opentelemetry import metrics as otel_metrics
    from opentelemetry.metrics import CallbackOptions, Observation
    from opentelemetry.metrics import _internal as metrics_api
except ImportError:  # pragma: no cover - depends on the install
    otel_metrics = metrics_api = None  # type: ignore[assignment]
#: A meter provider named by the environment (the API loads it on first use).
_FROM_ENV = "OTEL_PYTHON_METER_PROVIDER" in os.environ

if TYPE_CHECKING:
    from .call import Call
    from .config import RelayConfig
    from .relay import Relay

__all__ = ["OPERATIONS", "Meters", "ledger_health", "meters_unset", "provider_name", "watch_prometheus"]

#: ``gen_ai.provider.name`` of each provider kind (an ``openai_compatible`` one: its own name).
_PROVIDER_NAMES = {"openai": "openai", "anthropic": "anthropic", "gemini": "gcp.gemini"}
_KNOWN_NAMES = {"deepseek": "deepseek", "mistral": "mistral_ai", "groq": "groq", "perplexity": "perplexity", "xai": "x_ai"}
_DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
_TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
_OTEL_NAMES = {signals.REDIS_ERRORS: "relay.redis.errors", signals.TOKEN_REFRESH_FAILURES: "relay.token_refresh.failures",
               signals.ALERT_DELIVERIES: "relay.alert.deliveries"}
#: ``gen_ai.operation.name`` of each model endpoint.
OPERATIONS = {"chat.completions": "chat", "messages": "chat", "responses": "chat", "embeddings": "embeddings"}
_NO_PROVIDER = ("_ProxyMeterProvider", "NoOpMeterProvider")

#: Every relay of the process, for the readings of the ledgers.
_RELAYS: weakref.WeakSet[Relay] = weakref.WeakSet()


def provider_name(config: RelayConfig, provider: str) -> str:
    """``gen_ai.provider.name`` of a configured provider."""
    found = config.providers.get(provider)
    kind = found.kind if found is not None else ""
    return _PROVIDER_NAMES.get(kind) or _KNOWN_NAMES.get(provider, provider)


def ledger_health(relay: Relay) -> Mapping[str, Any] | None:
    """The ledger's ``health()`` once the relay has started (``None`` before, or without one)."""
    if not relay.started:
        return None
    try:  # a ledger that cannot even be opened is one that does not write (and must not stop
        # the readings of every other relay of the process, which one callback reports)
        health = getattr(relay.ledger, "health", None)
        return health() if health is not None else None
    except Exception as error:
        return {"ok": False, "behind": 0, "dropped": 0, "last_error": f"{type(error).__name__}: {error}"}


class _Instruments:
    provider: Any = None
    made: tuple[Any, Any, Any] | None = None

    @classmethod
    def get(cls) -> tuple[Any, Any, Any] | None:
        if meters_unset():
            return None
        provider = otel_metrics.get_meter_provider()
        if provider is not cls.provider:
            cls.provider = provider
            cls.made = None if type(provider).__name__ in _NO_PROVIDER else _make(provider)
        return cls.made


def meters_unset() -> bool:
    """Whether the host has set no meter provider (nothing :meth:`Meters.record` could record);
    the API's global read directly: get_meter_provider() also looks in os.environ each time."""
    return getattr(metrics_api, "_METER_PROVIDER", True) is None and not _FROM_ENV


def _make(provider: Any) -> tuple[Any, Any, Any]:
    meter = provider.get_meter("asgi_ai_relay", __version__)
    duration = meter.create_histogram("gen_ai.client.operation.duration", "s", "GenAI operation duration.",
                                      explicit_bucket_boundaries_advisory=_DURATION_BUCKETS)
    tokens = meter.create_histogram("gen_ai.client.token.usage", "{token}", "Input and output tokens used.",
                                    explicit_bucket_boundaries_advisory=_TOKEN_BUCKETS)
    first = meter.create_histogram("gen_ai.client.operation.time_to_first_chunk", "s",
                                   "Time to the first chunk of a streamed answer.",
                                   explicit_bucket_boundaries_advisory=_DURATION_BUCKETS)
    meter.create_observable_gauge("relay.ledger.behind", [_ledger_reading("behind")], "{row}",
                                  "Ledger rows recorded and not yet stored.")
    meter.create_observable_counter("relay.ledger.dropped", [_ledger_reading("dropped")], "{row}",
                                    "Ledger rows that could not be stored.")
    for name, (description, labels) in signals.SIGNALS.items():
        meter.create_observable_counter(_OTEL_NAMES.get(name, f"relay.{name}"), [_signal_reading(name, labels)], "1", description)
    return duration, tokens, first


def _ledger_reading(field: str) -> Any:
    def read(options: CallbackOptions) -> Iterable[Observation]:
        for relay in list(_RELAYS):
            health = ledger_health(relay)
            if health is not None:
                yield Observation(int(health.get(field) or 0), {"relay.ledger": relay.config.storage.ledger.split(":", 1)[0]})
    return read


def _signal_reading(name: str, labels: tuple[str, ...]) -> Any:
    def read(options: CallbackOptions) -> Iterable[Observation]:
        for values, count in signals.snapshot(name).items():
            yield Observation(count, {f"relay.{label}": value for label, value in zip(labels, values, strict=False)})
    return read


class Meters:
    """One relay's OpenTelemetry measurements."""

    __slots__ = ("relay",)

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        _RELAYS.add(relay)

    def record(self, call: Call, response_model: Callable[[Call], str | None]) -> None:
        made = _Instruments.get()
        if made is None:
            return
        duration, tokens, first = made
        attributes: dict[str, Any] = {"gen_ai.operation.name": OPERATIONS.get(call.endpoint, call.endpoint)}
        if call.requested_model is not None:
            attributes["gen_ai.request.model"] = str(call.requested_model)[:200]
        if call.provider is not None:
            attributes["gen_ai.provider.name"] = provider_name(self.relay.config, call.provider)
        model = response_model(call)
        if model is not None:
            attributes["gen_ai.response.model"] = model
        if call.cache is not None:
            attributes["relay.cache"] = call.cache
        if call.status >= 400:
            error = call.error
            attributes["error.type"] = str((error.code or error.error_type) if error is not None else call.status)
        duration.record(call.elapsed_ms() / 1000.0, attributes)
        usage = call.usage
        if usage is not None and call.cache != "hit":
            tokens.record(usage.prompt_tokens, {**attributes, "gen_ai.token.type": "input"})
            tokens.record(usage.completion_tokens, {**attributes, "gen_ai.token.type": "output"})
        if call.stream and call.ttfb_ms is not None and call.status == 200:
            first.record(call.ttfb_ms / 1000.0, attributes)


def watch_prometheus(relay: Relay) -> None:
    """The ledger's health and the :mod:`.signals` counts as gauges of ``relay.metrics``."""
    metrics = relay.metrics
    assert metrics is not None

    def ledger(field: str) -> Any:
        def read() -> Mapping[tuple[str, ...], float]:
            health = ledger_health(relay)
            if health is None:
                return {}
            value = health.get(field)
            return {(): float(bool(value)) if field == "ok" else float(value or 0)}
        return read

    metrics.watch("relay_ledger_behind_rows", "Ledger rows recorded and not yet stored.", (), ledger("behind"), mode="livesum")
    metrics.watch("relay_ledger_dropped_rows", "Ledger rows that could not be stored (since start).", (), ledger("dropped"), mode="livesum")
    metrics.watch("relay_ledger_up", "Whether the ledger's writer stores rows (1) or not (0).", (), ledger("ok"), mode="livemin")
    for name, (description, labels) in signals.SIGNALS.items():
        metrics.watch(f"relay_{name}", description + " (since start)", labels, _snapshot(name), mode="livesum")


def _snapshot(name: str) -> Any:
    return lambda: signals.snapshot(name)
