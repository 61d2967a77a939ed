"""Prices, and the settings dataclasses of the ``[limits]``, ``[queue]``, ``[cache]``,
``[pricing]``, ``[budgets]`` and ``[metrics]`` sections."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens of each token class, and the rules that change them.

    A class without its own price is billed at ``input`` (cache reads, cache writes, audio and
    image input; one-hour cache writes at ``cache_write`` when that is set). ``web_search`` is
    USD per server-side search call, not per token. ``long_context``: above
    ``long_context_above`` prompt tokens the whole request is billed at that price instead.
    ``tiers``: the price of each ``service_tier`` the provider may say it served (``flex``,
    ``priority``, ``batch``...); a tier it does not name here is billed at this price.
    """

    input: Decimal = Decimal(0)
    output: Decimal = Decimal(0)
    cached_input: Decimal | None = None
    #: Prompt tokens written to the provider's cache (Anthropic bills them above input).
    cache_write: Decimal | None = None
    #: Cache writes kept for an hour (Anthropic's ``ephemeral_1h``).
    cache_write_1h: Decimal | None = None
    audio_input: Decimal | None = None
    image_input: Decimal | None = None
    #: USD per web search the provider ran for the request (``server_tool_use``).
    web_search: Decimal = Decimal(0)
    long_context_above: int | None = None
    long_context: Price | None = None
    tiers: Mapping[str, Price] = field(default_factory=dict)

    def scaled(self, factor: Decimal) -> Price:
        """Every price (and those of its rules) times ``factor``."""
        def times(value: Decimal | None) -> Decimal | None:
            return None if value is None else value * factor
        return Price(
            self.input * factor, self.output * factor, times(self.cached_input), times(self.cache_write),
            times(self.cache_write_1h), times(self.audio_input), times(self.image_input), self.web_search * factor,
            self.long_context_above, self.long_context.scaled(factor) if self.long_context is not None else None,
            {name: tier.scaled(factor) for name, tier in self.tiers.items()},
        )


@dataclass(frozen=True, slots=True)
class CacheSettings:
    """How the response cache decides; where it stores is ``storage.cache``."""

    #: ``deterministic`` (temperature 0 or a seed), ``all``, or ``off``.
    mode: str = "deterministic"
    #: ``shared`` between callers, or ``caller`` (each caller its own entries).
    scope: str = "shared"
    #: Upper bound, seconds, for the per-request ``x-relay-cache-ttl`` override.
    max_ttl: int = 7 * 24 * 3600
    #: Answers larger than this are neither stored nor coalesced.
    max_entry_bytes: int = 1024 * 1024


@dataclass(frozen=True, slots=True)
class UsageCheck:
    """``[pricing.usage_check]``: how far a provider's reported usage may be from the relay's
    own count before its ledger row is flagged (see :mod:`asgi_ai_relay.stages.usage_check`).

    The prompt is flagged when the reported input tokens differ from the relay's count (plus
    the provider's known overhead and ``overhead``) by more than ``tolerance`` of it plus
    ``slack`` tokens; a stream (or whole answer) when its reported output, reasoning aside,
    exceeds the tokens of the text it sent by as much.
    """

    enabled: bool = True
    tolerance: Decimal = Decimal("0.15")
    #: Tokens of leeway either way (short prompts: fixed framing dominates any ratio).
    slack: int = 32
    #: Tokens a provider adds to every request beyond its known overhead (a forwarding relay's
    #: own system prompt).
    overhead: int = 0


@dataclass(frozen=True, slots=True)
class PricingSettings:
    """Costs are kept in USD; reports also show them in ``currency`` at ``exchange_rate``
    (units of ``currency`` per USD). ``lists`` are other price lists to compare against."""

    currency: str = "USD"
    exchange_rate: Decimal = Decimal(1)
    lists: Mapping[str, Mapping[str, Price]] = field(default_factory=dict)
    usage_check: UsageCheck = field(default_factory=UsageCheck)


@dataclass(frozen=True, slots=True)
class Budget:
    """USD a caller may spend per UTC day and per UTC month; ``None`` means no limit."""

    daily: Decimal | None = None
    monthly: Decimal | None = None


@dataclass(frozen=True, slots=True)
class BudgetSettings:
    default: Budget = field(default_factory=Budget)
    callers: Mapping[str, Budget] = field(default_factory=dict)
    #: Fraction of a budget at which a warning is logged (once per caller and period).
    soft_threshold: Decimal = Decimal("0.8")

    def for_caller(self, caller: str) -> Budget:
        return self.callers.get(caller, self.default)

    @property
    def active(self) -> bool:
        return any(b.daily is not None or b.monthly is not None for b in (self.default, *self.callers.values()))


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    #: Serve ``{prefix}/metrics`` (needs the ``metrics`` extra, prometheus-client).
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class LimitConfig:
    """Requests and tokens per minute (0: no limit); bursts default to the full minute."""

    rpm: int = 0
    tpm: int = 0
    burst: int = 0
    token_burst: int = 0

    def __bool__(self) -> bool:
        return bool(self.rpm or self.tpm)


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    """``[limits]``: ``global`` for everyone together; ``caller``, ``model``, ``provider`` for
    each one separately, with per-name overrides in ``callers``, ``models``, ``providers``."""

    everyone: LimitConfig = field(default_factory=LimitConfig)
    caller: LimitConfig = field(default_factory=LimitConfig)
    model: LimitConfig = field(default_factory=LimitConfig)
    provider: LimitConfig = field(default_factory=LimitConfig)
    callers: Mapping[str, LimitConfig] = field(default_factory=dict)
    models: Mapping[str, LimitConfig] = field(default_factory=dict)
    providers: Mapping[str, LimitConfig] = field(default_factory=dict)
    #: Completion tokens counted before the call when the request sets no ``max_tokens``.
    estimated_output_tokens: int = 256
    #: How prompt tokens are counted before the call: ``estimate`` or ``tiktoken``
    #: (see :mod:`asgi_ai_relay.tokens`).
    tokenizer: str = "estimate"


@dataclass(frozen=True, slots=True)
class QueueConfig:
    """``[queue]``: concurrency caps (0: none), the bounded priority queue, and what a limit
    or a rate-limit storage outage does."""

    max_in_flight: int = 0
    per_provider: int = 0
    max_queue: int = 1000
    max_wait: float = 30.0
    on_limit: str = "queue"
    fail_mode: str = "open"
    priority_header: bool = False

