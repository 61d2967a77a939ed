"""The state of one request as it moves through the stages."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from .types import ANONYMOUS, Caller, RelayRequest, Usage

if TYPE_CHECKING:
    from .config import ModelConfig
    from .errors import RelayError
    from .protocol import WireFormat
    from .stages.ratelimit import Ticket

__all__ = ["Call"]


@dataclass(slots=True, eq=False)
class Call:
    request: RelayRequest
    request_id: str
    endpoint: str
    format: WireFormat
    started: float = field(default_factory=time.perf_counter)
    ts: float = field(default_factory=time.time)
    caller: Caller = ANONYMOUS
    body: dict[str, Any] = field(default_factory=dict)
    stream: bool = False
    #: The alias the caller asked for, then the model that served (differs after a fallback).
    requested_model: str | None = None
    model: ModelConfig | None = None
    provider: str | None = None
    usage: Usage | None = None
    cost: Decimal = Decimal(0)
    status: int = 200
    error: RelayError | None = None
    cache: str | None = None
    attempts: int = 0
    upstream_ms: float | None = None
    ttfb_ms: float | None = None
    #: Headers every answer to this request carries (limits, cache, serving provider).
    headers: dict[str, str] = field(default_factory=dict)
    finished: bool = False
    #: The rate-limit charges and concurrency slot this request holds until it finishes.
    traffic: Ticket | None = None

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000.0
