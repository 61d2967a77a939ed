"""Readers of ``[logging]``, ``[telemetry]`` and ``[readiness]`` (a mixin of the config reader)."""

from __future__ import annotations

import re

from ..errors import ConfigurationError
from .observability import CONTENT_MODES, CONTENT_SINKS, LoggingSettings, ReadinessSettings, TelemetrySettings
from .table import _Table


class _ObservabilityReader(_Table):
    """Mixin of :class:`~.reader._Reader`."""

    def content_logging(self) -> LoggingSettings:
        self.only("content", "sink", "logger", "max_bytes", "redact")
        d = LoggingSettings()
        patterns = self.get("redact", list, [])
        for i, pattern in enumerate(patterns):
            if not isinstance(pattern, str):
                raise ConfigurationError(f"{self.key('redact')}[{i}]: expected a regular expression string")
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ConfigurationError(f"{self.key('redact')}[{i}]: not a regular expression: {exc}") from exc
        return LoggingSettings(
            content=self.choice("content", CONTENT_MODES),
            sink=self.choice("sink", CONTENT_SINKS),
            logger=self.get("logger", str, d.logger),
            max_bytes=self.integer("max_bytes", d.max_bytes, minimum=64),
            redact=tuple(patterns),
        )

    def telemetry(self) -> TelemetrySettings:
        self.only("enabled", "propagate")
        return TelemetrySettings(enabled=self.get("enabled", bool, True), propagate=self.get("propagate", bool, True))

    def readiness(self) -> ReadinessSettings:
        self.only("ledger_max_behind", "redis_timeout")
        d = ReadinessSettings()
        return ReadinessSettings(
            ledger_max_behind=self.integer("ledger_max_behind", d.ledger_max_behind),
            redis_timeout=self.number("redis_timeout", d.redis_timeout),
        )
