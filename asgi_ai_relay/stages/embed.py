"""``POST /v1/embeddings``: the stages of an embeddings request around the shared ones.

:func:`prepare` runs after the model is resolved: it refuses a chat model and a provider that
has no embeddings (400, naming the provider) and counts the input's tokens, which is what the
limits and the budget charge (an embedding has no output). :func:`forward` is the chat route's
attempt loop (retries, fallbacks, breakers, the upstream half of admission), each attempt made
by :func:`send_embeddings`: it sends only the items the cache did not have
(:mod:`.embed_cache`), in the provider's format (OpenAI's, or Gemini's ``batchEmbedContents``:
:mod:`asgi_ai_relay.protocol.embeddings`), and stitches the vectors back in the caller's
order. When nothing came from the cache and the provider answered in OpenAI's format with its
token count and the encoding asked for, its answer goes to the caller as it was sent (base64
vectors byte-exact); otherwise the relay writes the answer (floats encoded where needed).

The provider's token count is for the items it was sent; it is shared out over them in
proportion to their estimated sizes (largest remainders, so the shares add up to it exactly)
and stored with each vector, so a later hit knows its tokens. The cost is the fresh tokens at
the model's input price; what the cached items would have cost is the saving.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import orjson

from ..errors import InvalidRequest
from ..protocol import embeddings as wire
from ..tokens import text_tokens
from ..types import RelayResponse, Usage
from . import route
from .embed_cache import store
from .passthrough import load, reading
from .usage import cost_of

if TYPE_CHECKING:
    from ..call import Call
    from ..config import ModelConfig
    from ..providers import Provider
    from ..relay import Relay

__all__ = ["Items", "forward", "prepare", "send_embeddings"]

#: Body fields only the relay reads (Gemini's task type and title go into its own fields).
RELAY_FIELDS = ("use_cache", "task_type", "taskType", "title")


class Items:
    """The items of one request: each one's vector and tokens once known, and its cache key."""

    __slots__ = ("encoding", "estimates", "items", "keys", "leads", "model", "tokens", "ttl", "vectors")

    def __init__(self, items: list[wire.Item], model: str, encoding: str, tokenizer: str) -> None:
        self.items = items
        #: The model whose cache entries were looked up (the one asked for).
        self.model = model
        self.encoding = encoding
        self.estimates = [text_tokens(i, tokenizer) if isinstance(i, str) else len(i) for i in items]
        self.vectors: list[wire.Vector | None] = [None] * len(items)
        self.tokens = list(self.estimates)
        #: Per-item cache keys (``None``: the cache is not used) and the TTL of new entries (0: none).
        self.keys: list[str] | None = None
        self.ttl = 0.0
        #: The items this request has in flight: index -> (key, what waiting requests get).
        self.leads: dict[int, tuple[str, asyncio.Future[bytes | None]]] = {}

    def missing(self, model: str) -> list[int]:
        """The items to send to ``model``: all of them when it is not the model the cached
        vectors came from (another model's vectors are in another space)."""
        if model != self.model:
            self.vectors = [None] * len(self.items)
            self.tokens = list(self.estimates)
        return [i for i, v in enumerate(self.vectors) if v is None]


async def prepare(relay: Relay, call: Call) -> RelayResponse | None:
    """:raises InvalidRequest: for a chat model, a provider without embeddings, or more
        ``dimensions`` than the model has."""
    model = call.model
    assert model is not None
    if model.kind != "embedding":
        names = ", ".join(sorted(a for a, m in relay.config.models.items() if m.kind == "embedding"))
        raise InvalidRequest(
            f"Model '{model.alias}' is a {model.kind} model, not an embedding model. Embedding models: {names}.",
            param="model", code="not_an_embedding_model",
        )
    _refuse_without_embeddings(relay.providers[model.provider], model)
    asked = call.body.get("dimensions")
    if asked is not None and model.dimensions is not None and asked > model.dimensions:
        raise InvalidRequest(
            f"'dimensions' is {asked}, above the {model.dimensions} of model '{model.alias}'.", param="dimensions"
        )
    call.stream = False
    encoding = call.body.get("encoding_format") or "float"
    state = Items(wire.items(call.body["input"]), model.alias, encoding, relay.config.limits.tokenizer)
    call.embedding = state
    call.token_estimate = sum(state.tokens)
    return None


def _refuse_without_embeddings(provider: Provider, model: ModelConfig) -> None:
    if not provider.embeds:
        raise InvalidRequest(
            f"Embeddings are not available for model '{model.alias}': its provider {provider.name!r} "
            f"({provider.format} format) has no embeddings endpoint.",
            param="model", code="unsupported_endpoint",
        )


async def forward(relay: Relay, call: Call) -> RelayResponse | None:
    """The attempt loop (:func:`route.forward_via`) with :func:`send_embeddings` per attempt."""
    return await route.forward_via(relay, call, send_embeddings)


async def send_embeddings(relay: Relay, call: Call, model: ModelConfig) -> RelayResponse:
    """One attempt at ``model`` with the items still missing.

    :raises InvalidRequest: before any call, when the provider has no embeddings (the attempt
        loop moves on to the next candidate) or cannot take an item.
    :raises UpstreamError: when the provider fails.
    """
    provider = relay.providers[model.provider]
    _refuse_without_embeddings(provider, model)
    state: Items = call.embedding
    missing = state.missing(model.alias)
    body = _upstream_body(call.body, model, provider, [state.items[i] for i in missing], len(state.items))
    call.model, call.provider = model, provider.name
    call.attempts += 1
    started = time.perf_counter()
    reply = await provider.embed(model, body)
    call.upstream_ms = (time.perf_counter() - started) * 1000.0
    with reading():
        payload = load(reply.body)
        if provider.format == "gemini":
            vectors, told = wire.from_gemini(payload, len(missing)), None
        else:
            vectors, told = wire.from_openai(payload, len(missing)), _prompt_tokens(payload)
    fresh = _share(told, [state.tokens[i] for i in missing]) if told is not None else None
    for position, index in enumerate(missing):
        state.vectors[index] = vectors[position]
        if fresh is not None:
            state.tokens[index] = fresh[position]
    sent_tokens = sum(state.tokens[i] for i in missing)
    cached_tokens = sum(state.tokens) - sent_tokens
    usage = Usage(sent_tokens, estimated=told is None)
    call.usage = usage
    call.cost = cost_of(relay, model, usage)
    if cached_tokens:
        call.saved = cost_of(relay, model, Usage(cached_tokens))
    store(relay, state, missing, keep=model.alias == state.model)  # only the keyed model's vectors
    as_asked = all(isinstance(v, str) == (state.encoding == "base64") for v in vectors)
    if len(missing) == len(state.items) and told is not None and as_asked:  # the provider's answer, as sent
        answer = reply.body
    else:
        given = payload.get("model")
        name = given if isinstance(given, str) else model.upstream
        answer = orjson.dumps(wire.render([v for v in state.vectors if v is not None], name, sum(state.tokens), state.encoding))
    headers = call.headers
    headers["x-relay-provider"] = provider.name
    headers["x-relay-model"] = model.alias
    headers["x-relay-upstream-ms"] = f"{call.upstream_ms:.1f}"
    headers["content-type"] = "application/json"
    headers["x-relay-cost-usd"] = f"{call.cost:.8f}"
    return RelayResponse(200, headers, answer)


def _upstream_body(
    body: dict[str, Any], model: ModelConfig, provider: Provider, items: list[wire.Item], of: int
) -> dict[str, Any]:
    """The request for ``items`` (of ``of`` in all) in the provider's format.

    :raises InvalidRequest: for what the provider's format cannot take (see :func:`wire.to_gemini`).
    """
    if provider.format == "gemini":
        return wire.to_gemini({**body, "input": items}, model.upstream, provider.name)
    sent = {k: v for k, v in body.items() if k not in RELAY_FIELDS}
    sent["model"] = model.upstream
    if len(items) < of:  # the caller's own input when all of it goes
        sent["input"] = items
    return sent


def _prompt_tokens(payload: dict[str, Any]) -> int | None:
    usage = payload.get("usage")
    if not isinstance(usage, dict) or "prompt_tokens" not in usage:
        return None
    return Usage.count(usage["prompt_tokens"])


def _share(total: int, weights: list[int]) -> list[int]:
    """``total`` split in proportion to ``weights`` (evenly when they are all 0), summing to it."""
    if not weights:
        return []
    weights = weights if any(weights) else [1] * len(weights)
    whole = sum(weights)
    shares = [total * w // whole for w in weights]
    by_remainder = sorted(range(len(weights)), key=lambda i: -(total * weights[i] % whole))
    for i in by_remainder[: total - sum(shares)]:
        shares[i] += 1
    return shares
