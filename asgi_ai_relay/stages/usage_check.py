"""The check on what a provider reports: its usage against the relay's own count of the traffic.

A relay that forwards to another relay (HolySheep, OpenRouter, a reseller) is billed by that
relay's numbers. Each answered request's reported usage is compared with what the relay
counted itself (:mod:`asgi_ai_relay.tokens`, with ``limits.tokenizer``):

- ``prompt``: the reported input tokens against the prompt the caller sent, plus the
  provider's known overhead (OpenAI: 3 tokens of reply priming; Anthropic: the tool-use system
  prompt, 346 tokens, when tools are offered) and ``pricing.usage_check.overhead``. Flagged
  when they differ by more than ``tolerance`` of that count plus ``slack`` tokens, either way
  (inflated counts, or a prompt the provider silently cut).
- ``output``: the reported output tokens (reasoning aside, as it is not sent) against the text
  the caller received (the whole answer, or a stream's first :data:`SAMPLE` bytes scaled by all
  it sent). Flagged when the claim exceeds the text by as much.

A flagged row carries ``usage_flag`` (``prompt``, ``output`` or ``prompt,output``) and the
relay's count in ``counted_prompt_tokens``; ``relay_usage_flagged_total`` counts them. The cost
stays what the provider reported: the flag says where to look, it does not re-bill.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from ..tokens import answer_tokens, prompt_tokens, text_tokens

if TYPE_CHECKING:
    from ..call import Call
    from ..relay import Relay
    from ..types import Usage

__all__ = ["ANTHROPIC_TOOL_PROMPT", "OPENAI_PRIMING", "SAMPLE", "check_usage", "known_overhead"]

#: Tokens OpenAI adds to every chat prompt (the assistant reply's priming).
OPENAI_PRIMING = 3
#: Tokens of the system prompt Anthropic adds when tools are offered (``tool_choice`` auto).
ANTHROPIC_TOOL_PROMPT = 346
#: Bytes of a stream's pieces read for the output check (a long stream is counted from its
#: start and scaled by its size), and the strings of them that are content in the caller's
#: format (OpenAI deltas and tool arguments, Anthropic text, JSON and thinking deltas, Responses
#: deltas), read as they are written. Parsing every event (:func:`~asgi_ai_relay.tokens.output_tokens`)
#: cost about 5 us an event, a millisecond for a stream of a few hundred; this reads 8 KiB in
#: about 30 us. Escapes count as their characters: a little more text, never a false flag.
SAMPLE = 8_192
_STRING = rb'": ?"([^"\\]*(?:\\.[^"\\]*)*)"'
#: Per caller format, the keys whose strings are content (a Responses stream repeats its text in
#: its ``.done`` events and ``response.completed``: only the deltas count).
_CONTENT = {
    "openai": re.compile(rb'"(?:content|refusal|arguments|reasoning_content)' + _STRING),
    "anthropic": re.compile(rb'"(?:text|partial_json|thinking)' + _STRING),
    "responses": re.compile(rb'"delta' + _STRING),
}
_ANY = re.compile(rb'"(?:content|text|partial_json|thinking|arguments|refusal|reasoning_content|delta)' + _STRING)
#: Endpoints whose prompt is the caller's body (embeddings send only the items not cached).
_CHECKED = frozenset({"chat.completions", "messages", "responses"})


def known_overhead(kind: str, body: dict[str, Any]) -> int:
    """Tokens a provider of ``kind`` adds to the prompt of ``body`` beyond its text."""
    if kind == "anthropic":
        return ANTHROPIC_TOOL_PROMPT if body.get("tools") else 0
    if kind == "gemini":
        return 0
    return OPENAI_PRIMING


def _beyond(reported: int, counted: int, tolerance: Decimal, slack: int) -> bool:
    gap = abs(reported - counted)
    if gap <= slack:  # (nearly every answer: no Decimal arithmetic for it)
        return False
    return gap > counted * tolerance + slack


def check_usage(relay: Relay, call: Call, usage: Usage) -> None:
    """Set ``call.usage_flag`` and ``call.counted_prompt`` for a reported usage (not for
    estimates, cache hits or endpoints whose prompt is not the caller's body)."""
    settings = relay.config.pricing.usage_check
    if not settings.enabled or usage.estimated or call.endpoint not in _CHECKED or call.provider is None:
        return
    counted = call.prompt_count
    if counted is None:
        counted = call.prompt_count = prompt_tokens(call.body, relay.config.limits.tokenizer)
    call.counted_prompt = counted
    provider = relay.config.providers.get(call.provider)
    kind = provider.kind if provider is not None else "openai"
    expected = counted + known_overhead(kind, call.body) + settings.overhead
    slack = settings.slack
    claimed = usage.completion_tokens - usage.reasoning_tokens
    if abs(usage.prompt_tokens - expected) <= slack and claimed <= slack:
        # (nearly every short answer: the prompt within the slack, too little output to count)
        call.usage_flag = None
        return
    flags = []
    if _beyond(usage.prompt_tokens, expected, settings.tolerance, slack):
        flags.append("prompt")
    sent = _sent_tokens(call, relay.config.limits.tokenizer) if claimed > slack else None
    if sent is not None and claimed > sent and _beyond(claimed, sent, settings.tolerance, slack):
        flags.append("output")
    call.usage_flag = ",".join(flags) or None


def _sent_tokens(call: Call, tokenizer: str) -> int | None:
    """Tokens of the content the caller received (a stream's counted over its first
    :data:`SAMPLE` bytes and scaled to all it sent); ``None`` when it was not kept."""
    sent = call.sent
    if call.stream and sent is not None:
        taken, size = [], 0
        for piece in sent.pieces:
            if size >= SAMPLE:
                break
            taken.append(piece)
            size += len(piece)
        content = _CONTENT.get(call.format.name, _ANY)
        text = b"".join(content.findall(b"".join(taken))).decode("utf-8", "replace")
        return text_tokens(text, tokenizer) * sent.total // max(size, 1)
    if not call.stream and call.output:
        return answer_tokens(b"".join(call.output), tokenizer)
    return None
