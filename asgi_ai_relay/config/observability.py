"""The settings of ``[logging]`` (content logging), ``[telemetry]`` (OpenTelemetry) and
``[readiness]`` (the ``/readyz`` probe); read by :mod:`.observability_reader`."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CONTENT_MODES", "CONTENT_SINKS", "DEFAULT_REDACT", "LoggingSettings", "ReadinessSettings", "TelemetrySettings"]

CONTENT_MODES = ("none", "metadata", "full")
CONTENT_SINKS = ("logger", "span")
#: Shapes of credentials redacted from logged content besides the configured patterns and the
#: upstream keys of the process: API keys (``sk-...``, ``rk-...``), bearer tokens, JWTs, AWS keys.
DEFAULT_REDACT = (
    r"\b(?:sk|rk|pk)-[A-Za-z0-9_\-]{12,}",
    r"\b[Bb](?i:earer)\s+[A-Za-z0-9._~+/\-]{8,}=*",
    r"\beyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}",
    r"\bAKIA[0-9A-Z]{16}\b",
)


@dataclass(frozen=True, slots=True)
class LoggingSettings:
    """``[logging]``: what of a request's content the relay writes anywhere.

    ``content``: ``none`` (default) writes nothing of the prompts or answers; ``metadata`` adds
    message counts, sizes and tool names to the request's log line and span; ``full`` also
    writes the prompt and the answer, redacted and capped at ``max_bytes`` each, to ``sink``:
    ``logger`` (records on the logger named ``logger``) or ``span`` (events on the request span).
    """

    content: str = "none"
    sink: str = "logger"
    logger: str = "asgi_ai_relay.content"
    max_bytes: int = 16_384
    #: Regular expressions whose matches are replaced by ``[redacted]`` (after DEFAULT_REDACT).
    redact: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class TelemetrySettings:
    """``[telemetry]``: spans and metrics through the host's global OpenTelemetry providers
    (the ``otel`` extra); nothing is recorded while the host has configured none."""

    enabled: bool = True
    #: Send ``traceparent`` (the attempt span's) to the upstream.
    propagate: bool = True


@dataclass(frozen=True, slots=True)
class ReadinessSettings:
    """``[readiness]``: when ``/readyz`` (and ``/v1/health?ready``) answers 503."""

    #: Ledger rows recorded and not yet stored (queued or spooled) beyond which the relay is not ready.
    ledger_max_behind: int = 10_000
    #: Seconds each Redis server has to answer the probe's PING.
    redis_timeout: float = 0.5
