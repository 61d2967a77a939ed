"""OpenTelemetry traces of relay requests, through the host's global tracer provider (the
``otel`` extra: ``opentelemetry-api``; the host installs and configures the SDK).

Each model request is one span (``chat {alias}``; kind SERVER, or INTERNAL under a span the
host's own instrumentation started) and each upstream attempt a CLIENT child span (``chat
{upstream model}``), both with the GenAI semantic conventions' attributes (``gen_ai.*``,
``server.address``) and the relay's own (``relay.*``: alias, caller, cache result, attempt
number, deployment, breaker state, cost). The parent is the host's current span if there is
one, else the trace context the request carries (``traceparent``, read by the host's global
propagator); the attempt's context goes to the upstream as W3C ``traceparent``/``tracestate``
(``telemetry.propagate``), and nothing else of the caller's headers does. Deployments skipped
(open breaker, own limits) are events on the request span.

Spans are never made current (a stream ends in another task than it began), so the relay
never attaches or detaches a context. While the host has configured no tracer provider (or
OpenTelemetry is not installed) every hook returns after one check of the global provider.
The metrics are in :mod:`.telemetry_metrics`, content logging in :mod:`.content_log`.
"""

from __future__ import annotations

import os
import re
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ._version import __version__
from .content_log import ContentLog, metadata
from .telemetry_metrics import OPERATIONS, Meters, meters_unset, provider_name, watch_prometheus

try:
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace
    from opentelemetry.trace import NoOpTracerProvider, ProxyTracerProvider, SpanKind, StatusCode
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    OTEL = True
except ImportError:  # pragma: no cover - depends on the install
    OTEL = False
#: A tracer provider named by the environment (the API loads it on first use).
_FROM_ENV = "OTEL_PYTHON_TRACER_PROVIDER" in os.environ

if TYPE_CHECKING:
    from .breaker import Ticket
    from .call import Call
    from .relay import Relay
    from .routing import Target

__all__ = ["OPERATIONS", "Telemetry", "finish"]

_MODEL = re.compile(rb'"model"\s*:\s*"([^"\\]{1,200})"')
_FINISH = re.compile(rb'"(?:finish_reason|stop_reason|finishReason)"\s*:\s*"([A-Za-z_\-]{1,40})"')


class _Trace:
    """The spans of one request: its own, and the attempt that served it (still open)."""

    __slots__ = ("attempt", "attempt_context", "attempt_end", "span", "span_context")

    def __init__(self, span: Any, span_context: Any) -> None:
        self.span = span
        self.span_context = span_context
        self.attempt: Any = None
        self.attempt_context: Any = None
        self.attempt_end: int | None = None


def _tracer_unset() -> bool:
    """Whether the host has set no tracer provider: the API's global, read directly, since
    get_tracer_provider() also looks in os.environ each time (most of what an unconfigured host
    would pay)."""
    return getattr(trace, "_TRACER_PROVIDER", True) is None and not _FROM_ENV


class _Tracer:
    """The tracer of the current global provider (``None`` while it is the no-op one)."""

    provider: Any = None
    tracer: Any = None

    @classmethod
    def get(cls) -> Any:
        if _tracer_unset():
            return None
        provider = trace.get_tracer_provider()
        if provider is not cls.provider:
            cls.provider = provider
            real = not isinstance(provider, (ProxyTracerProvider, NoOpTracerProvider))
            cls.tracer = provider.get_tracer("asgi_ai_relay", __version__) if real else None
        return cls.tracer


class Telemetry:
    """One relay's spans, metrics and content logging; ``relay.telemetry``."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        settings = relay.config.telemetry
        self.enabled = settings.enabled and OTEL
        self.propagate = settings.propagate
        self.content = ContentLog(relay.config.logging)
        self.meters = Meters(relay) if self.enabled else None
        self._servers: dict[str, tuple[str, int]] = {}
        if relay.metrics is not None:
            watch_prometheus(relay)

    def tracer(self) -> Any:
        return _Tracer.get() if self.enabled else None

    # -- spans -----------------------------------------------------------------------------

    def _trace(self, call: Call, tracer: Any) -> _Trace:
        """The request's span, started (back-dated to the request's arrival) on first need."""
        current = otel_context.get_current()
        if trace.get_current_span(current).get_span_context().is_valid:
            parent, kind = current, SpanKind.INTERNAL
        else:
            parent, kind = propagate.extract(call.request.headers), SpanKind.SERVER
        operation = OPERATIONS.get(call.endpoint, call.endpoint)
        name = f"{operation} {call.requested_model}" if call.requested_model else operation
        span = tracer.start_span(name, context=parent, kind=kind, start_time=int(call.ts * 1e9))
        record = call.trace = _Trace(span, trace.set_span_in_context(span, parent))
        return record

    def begin_attempt(self, call: Call, target: Target, ticket: Ticket) -> Any:
        """The span of one upstream attempt (``None`` while tracing is off)."""
        tracer = self.tracer()
        if tracer is None:
            return None
        record = call.trace if call.trace is not None else self._trace(call, tracer)
        model = target.model
        operation = OPERATIONS.get(call.endpoint, call.endpoint)
        address, port = self._server(model.provider)
        attributes = {
            "gen_ai.operation.name": operation,
            "gen_ai.provider.name": provider_name(self.relay.config, model.provider),
            "gen_ai.request.model": model.upstream,
            "server.address": address,
            "server.port": port,
            "relay.model": model.alias,
            "relay.deployment": target.name,
            "relay.attempt": call.attempts + 1,
            "relay.breaker.state": "half_open" if ticket.probe else "closed",
        }
        span = tracer.start_span(f"{operation} {model.upstream}", context=record.span_context,
                                 kind=SpanKind.CLIENT, attributes=attributes)
        record.attempt, record.attempt_context, record.attempt_end = span, trace.set_span_in_context(span), None
        return span

    def end_attempt(self, call: Call, span: Any, error: BaseException | None, *, whole: bool = True) -> None:
        """A failed attempt's span ends now; the serving one when the request does."""
        if span is None:
            return
        if error is None:
            if whole and call.trace is not None:
                call.trace.attempt_end = time.time_ns()
            return
        code = getattr(error, "code", None) or getattr(error, "error_type", None) or type(error).__name__
        span.set_attribute("error.type", str(code))
        status = getattr(error, "upstream_status", None) or getattr(error, "status_code", None)
        if status is not None:
            span.set_attribute("http.response.status_code", status)
        span.set_status(StatusCode.ERROR, str(code))
        span.end()
        if call.trace is not None and call.trace.attempt is span:
            call.trace.attempt = call.trace.attempt_context = None

    def upstream_headers(self, call: Call, headers: dict[str, str] | None) -> dict[str, str] | None:
        """``headers`` and the attempt's ``traceparent`` (when tracing and propagation are on)."""
        record = call.trace
        if record is None or record.attempt_context is None or not self.propagate:
            return headers
        out = dict(headers) if headers else {}
        TraceContextTextMapPropagator().inject(out, context=record.attempt_context)
        return out

    def _server(self, provider: str) -> tuple[str, int]:
        found = self._servers.get(provider)
        if found is None:
            config = self.relay.config.providers.get(provider)
            parts = urlsplit(config.base_url if config is not None else "")
            port = parts.port or (443 if parts.scheme == "https" else 80)
            found = self._servers[provider] = (parts.hostname or provider, port)
        return found

    # -- the end of a request --------------------------------------------------------------

    def finish(self, call: Call) -> None:
        """Close the request's spans, record its metrics, write its content (``full``)."""
        if call.endpoint not in self.relay.model_endpoints:
            return
        if call.trace is None and self.content.mode != "full" and (not self.enabled or (
                _tracer_unset() and meters_unset())):
            return  # nothing to end, record or write (every request of a host with no providers)
        tracer = self.tracer()
        record = call.trace if call.trace is not None or tracer is None else self._trace(call, tracer)
        if record is not None:
            self._end_spans(call, record)
        if self.meters is not None:
            self.meters.record(call, self._response_model)
        self.content.write(call, record.span if record is not None else None)
        if record is not None:
            record.span.end()

    def _end_spans(self, call: Call, record: _Trace) -> None:
        span = record.span
        attributes = self._attributes(call)
        if self.content.on:
            attributes.update(metadata(call))
        span.set_attributes(attributes)
        for entry in call.attempt_log:
            if "skipped" in entry:
                span.add_event("relay.attempt.skipped", {"relay.deployment": str(entry.get("deployment")),
                                                         "relay.skip_reason": str(entry["skipped"])})
        if call.status >= 500 or call.error is not None and call.status >= 400 and call.provider is not None:
            span.set_status(StatusCode.ERROR, attributes.get("error.type", str(call.status)))
        attempt = record.attempt
        if attempt is not None:
            served = {k: v for k, v in attributes.items() if k.startswith("gen_ai.usage") or k in _SERVED}
            attempt.set_attributes(served)
            if call.error is not None:
                attempt.set_status(StatusCode.ERROR, attributes.get("error.type", ""))
            attempt.end(end_time=record.attempt_end)
            record.attempt = record.attempt_context = None

    def _attributes(self, call: Call) -> dict[str, Any]:
        a: dict[str, Any] = {
            "gen_ai.operation.name": OPERATIONS.get(call.endpoint, call.endpoint),
            "relay.endpoint": call.endpoint,
            "relay.request_id": call.request_id,
            "relay.caller": call.caller.id,
            "relay.stream": call.stream,
            "relay.attempts": call.attempts,
            "relay.cost_usd": float(call.cost),
            "http.response.status_code": call.status,
        }
        if call.requested_model is not None:
            a["gen_ai.request.model"] = a["relay.alias"] = str(call.requested_model)[:200]
        if call.model is not None:
            a["relay.model"] = call.model.alias
        if call.provider is not None:
            a["gen_ai.provider.name"] = provider_name(self.relay.config, call.provider)
            a["relay.provider"] = call.provider
            model = self._response_model(call)
            if model is not None:
                a["gen_ai.response.model"] = model
        if call.cache is not None:
            a["relay.cache"] = call.cache
        if call.saved:
            a["relay.cache_saved_usd"] = float(call.saved)
        if call.usage is not None:
            a["gen_ai.usage.input_tokens"] = call.usage.prompt_tokens
            a["gen_ai.usage.output_tokens"] = call.usage.completion_tokens
            if call.usage.estimated:
                a["relay.usage.estimated"] = True
        reasons = _finish_reasons(call)
        if reasons:
            a["gen_ai.response.finish_reasons"] = reasons
        body = call.body if isinstance(call.body, dict) else {}
        for key, name in _REQUEST_PARAMS:
            value = body.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                a[name] = value
        if call.error is not None or call.status >= 400:
            error = call.error
            a["error.type"] = str((error.code or error.error_type) if error is not None else call.status)
        return a

    def _response_model(self, call: Call) -> str | None:
        """The model the upstream named in its answer (else the one the relay asked for)."""
        pieces = _pieces(call)
        if pieces:
            found = _MODEL.search(b"".join(pieces[:8])[:8192])
            if found is not None:
                return found.group(1).decode("utf-8", "replace")
        return call.model.upstream if call.model is not None and call.provider is not None else None


_SERVED = ("gen_ai.response.model", "gen_ai.response.finish_reasons", "http.response.status_code", "error.type")
_REQUEST_PARAMS = (
    ("max_tokens", "gen_ai.request.max_tokens"), ("max_completion_tokens", "gen_ai.request.max_tokens"),
    ("max_output_tokens", "gen_ai.request.max_tokens"), ("temperature", "gen_ai.request.temperature"),
    ("top_p", "gen_ai.request.top_p"),
)


def _pieces(call: Call) -> list[bytes]:
    if call.output is not None:
        return call.output
    return call.sent.pieces if call.sent is not None else []


def _finish_reasons(call: Call) -> list[str]:
    if call.cache == "hit" and not call.output:
        return []
    reasons: list[str] = []
    for piece in _pieces(call):
        for match in _FINISH.finditer(piece):
            reason = match.group(1).decode()
            if reason not in reasons:
                reasons.append(reason)
    return reasons


def finish(relay: Relay, call: Call) -> None:
    """The finish step (``FINISH_STEPS``): see :meth:`Telemetry.finish`."""
    relay.telemetry.finish(call)
