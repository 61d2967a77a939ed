"""Where a request may go: deployments, load balancing, virtual models, breakers, health.

The attempt loop itself is :func:`asgi_ai_relay.stages.route.forward`; this module answers
its questions (which deployments of a model, in which order; is a deployment allowed) and
keeps what it learns (latency, calls in flight) for the balancing strategies and
``GET {prefix}/v1/health``.

Config it reads::

    [models."gpt-4.1"]
    strategy = "least-busy"            # weighted (default) | least-busy | lowest-latency
    deployments = [
      { provider = "openai", weight = 3 },
      { provider = "openai-eu", upstream = "gpt-4.1", name = "eu", weight = 1 },
    ]
    tier = 3                           # quality tier, for virtual models
    context_window = 1047576
    capabilities = ["tools", "vision"]

    [routing.virtual.auto]             # "model": "auto" -> cheapest healthy model that fits
    models = ["deepseek-v3.2", "gpt-4.1"]    # default: every model
    min_tier = 2
    needs = ["tools"]
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from .affinity import SESSION_HEADERS, Affinity
from .breaker import BreakerState, BreakerStore, breakers_from_uri
from .config import ModelConfig, RelayConfig, RetrySettings, VirtualModel
from .errors import InvalidRequest
from .retry import Sleep, default_sleep
from .tokens import counter, output_allowance, prompt_tokens

if TYPE_CHECKING:
    from .call import Call

__all__ = ["Router", "Target", "request_needs"]

#: Weight of the newest sample in a deployment's latency average.
_EWMA = 0.2


class Target:
    """One deployment of one model: ``model`` is the alias's config pointed at it."""

    __slots__ = ("calls", "ewma_ms", "in_flight", "model", "name", "weight")

    def __init__(self, name: str, model: ModelConfig, weight: float) -> None:
        self.name = name
        self.model = model
        self.weight = weight
        self.in_flight = 0
        self.calls = 0
        self.ewma_ms: float | None = None

    def observe(self, ms: float) -> None:
        self.calls += 1
        self.ewma_ms = ms if self.ewma_ms is None else self.ewma_ms + _EWMA * (ms - self.ewma_ms)


def _targets(model: ModelConfig) -> tuple[Target, ...]:
    if not model.deployments:
        return (Target(f"{model.provider}/{model.upstream}", model, 1.0),)
    return tuple(
        Target(d.name, dataclasses.replace(model, provider=d.provider, upstream=d.upstream,
                                           headers={**model.headers, **d.headers}), d.weight)
        for d in model.deployments
    )


def request_needs(call: Call, tokenizer: str = "estimate") -> tuple[frozenset[str], int]:
    """What the request itself needs: capabilities, and how many tokens of context (its prompt
    and the output it asks for)."""
    body = call.body
    needs = set()
    if body.get("tools") or body.get("functions"):
        needs.add("tools")
    for message in body.get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list) and any(isinstance(p, dict) and p.get("type") in ("image_url", "image") for p in content):
            needs.add("vision")
    return frozenset(needs), prompt_tokens(body, tokenizer) + output_allowance(body, 0)


class Router:
    """Per relay: the deployments of every model, their breakers and what they have shown.

    ``clock`` (seconds, monotonic for in-memory breakers, wall time for shared ones), ``sleep``
    and ``rng`` are attributes so a test can replace them.
    """

    def __init__(self, config: RelayConfig, breakers: BreakerStore | None = None) -> None:
        self.config = config
        self.breakers = breakers if breakers is not None else breakers_from_uri(config.storage.breakers, config.breaker)
        shared = urlscheme(config.storage.breakers) != "memory"
        self.clock: Callable[[], float] = time.time if shared else time.monotonic
        self.sleep: Sleep = default_sleep
        self.rng = random.Random()
        self.targets: dict[str, tuple[Target, ...]] = {alias: _targets(m) for alias, m in config.models.items()}
        self.by_name: dict[str, Target] = {t.name: t for ts in self.targets.values() for t in ts}
        counter(config.limits.tokenizer)  # tiktoken's encoding starts loading now, not on a request
        routing = config.routing
        self.affinity = Affinity(routing.affinity_ttl) if routing.affinity else None
        self.session_headers = (*SESSION_HEADERS, *routing.session_headers)

    def policy(self, model: ModelConfig) -> RetrySettings:
        return model.retry or self.config.retry

    def order(self, model: ModelConfig) -> list[Target]:
        """The model's deployments, the strategy's choice first."""
        targets = self.targets.get(model.alias) or _targets(model)
        if len(targets) == 1:
            return [targets[0]]
        strategy = model.strategy
        if strategy == "least-busy":
            return sorted(targets, key=lambda t: t.in_flight)
        if strategy == "lowest-latency":
            # Untried deployments first, so every deployment gets measured.
            return sorted(targets, key=lambda t: -1.0 if t.ewma_ms is None else t.ewma_ms)
        first = self.rng.choices(targets, weights=[t.weight for t in targets])[0]
        return [first] + sorted((t for t in targets if t is not first), key=lambda t: -t.weight)

    def prefer_pinned(self, model: ModelConfig, session: str | None, targets: list[Target]) -> None:
        """Put the deployment ``session`` last used for ``model`` first (see :mod:`.affinity`)."""
        if self.affinity is None or session is None or len(targets) < 2:
            return
        name = self.affinity.pinned(model.alias, session)
        pinned = next((t for t in targets if t.name == name), None)
        if pinned is not None:
            targets.remove(pinned)
            targets.insert(0, pinned)

    def served(self, model: ModelConfig, session: str | None, target: Target) -> None:
        """Remember which deployment served the session (models with one deployment aside)."""
        if self.affinity is not None and session is not None and len(self.targets.get(model.alias) or ()) > 1:
            self.affinity.pin(model.alias, session, target.name)

    async def healthy(self, model: ModelConfig) -> bool:
        """Whether any deployment of ``model`` would take a call now (closed or half-open)."""
        now = self.clock()
        for target in self.targets.get(model.alias) or _targets(model):
            if (await self.breakers.view(target.name, now)).state is not BreakerState.OPEN:
                return True
        return False

    async def choose(self, virtual: VirtualModel, call: Call) -> list[ModelConfig]:
        """The models behind ``virtual`` that fit this request: healthy ones cheapest first,
        then the unhealthy ones (their breakers may have closed by the time they are tried).

        :raises InvalidRequest: when no model fits, naming what the request needs.
        """
        needs, tokens = request_needs(call, self.config.limits.tokenizer)
        needs |= virtual.needs
        models = self.config.models
        names: Sequence[str] = virtual.models or tuple(models)
        kind = "embedding" if call.endpoint == "embeddings" else "chat"
        fitting = [
            m for m in (models[n] for n in names)
            if m.kind == kind and m.tier >= virtual.min_tier and needs <= m.capabilities
            and (m.context_window is None or m.context_window >= tokens)
        ]
        if not fitting:
            wanted = ", ".join(sorted(needs)) or "nothing special"
            raise InvalidRequest(
                f"No model behind {virtual.name!r} fits this request (tier >= {virtual.min_tier}, "
                f"needs: {wanted}, about {tokens} tokens of context).",
                param="model",
            )
        fitting.sort(key=self.price_of)
        healthy = [m for m in fitting if await self.healthy(m)]
        return healthy + [m for m in fitting if m not in healthy]

    def price_of(self, model: ModelConfig) -> Decimal:
        """Blended USD per million tokens (input + output, times the provider's multiplier)."""
        multiplier = self.config.providers[model.provider].price_multiplier
        return (model.price.input + model.price.output) * multiplier

    async def health(self) -> dict[str, Any]:
        """Per deployment: breaker state, recent error rate, latency, calls in flight."""
        now = self.clock()
        deployments: dict[str, dict[str, Any]] = {}
        for alias, targets in self.targets.items():
            for target in targets:
                view = await self.breakers.view(target.name, now)
                deployments.setdefault(target.name, {
                    "provider": target.model.provider,
                    "upstream": target.model.upstream,
                    "models": [],
                    "state": view.state.value,
                    "retry_in": round(view.retry_in, 3),
                    "recent_requests": view.requests,
                    "recent_failures": view.failures,
                    "error_rate": view.error_rate,
                    "latency_ms": round(target.ewma_ms, 3) if target.ewma_ms is not None else None,
                    "in_flight": target.in_flight,
                })["models"].append(alias)
        states = {d["state"] for d in deployments.values()}
        status = "ok" if states <= {"closed"} else "degraded"
        return {"object": "relay.health", "status": status, "deployments": deployments}

    async def aclose(self) -> None:
        await self.breakers.aclose()


def urlscheme(uri: str) -> str:
    return uri.split(":", 1)[0]
