"""An offline provider with deterministic answers, so the relay runs with no keys and no network.

It speaks OpenAI's format, streams word by word, counts tokens with the relay's own estimate
(:mod:`asgi_ai_relay.tokens`), calls the first tool when tools are offered, and embeds
each input to a unit vector seeded by its hash.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson

from ..config import ModelConfig
from ..protocol.embeddings import Vector, items, render
from ..protocol.openai import chunk, include_usage
from ..protocol.sse import encode_event
from ..tokens import prompt_tokens, text_tokens
from .base import Provider, UpstreamResponse

__all__ = ["MockProvider", "estimate_tokens", "text_of"]

_HEADERS = {"content-type": "application/json"}
_STREAM_HEADERS = {"content-type": "text/event-stream"}


def estimate_tokens(text: str) -> int:
    """Tokens of ``text`` as :func:`asgi_ai_relay.tokens.text_tokens` estimates them."""
    return text_tokens(text)


def text_of(content: Any) -> str:
    """The plain text of an OpenAI message ``content`` (a string or a list of parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _unit_vector(seed: str, size: int) -> list[float]:
    digest = b""
    counter = 0
    while len(digest) < 2 * size:
        digest += hashlib.sha256(f"{counter}\0{seed}".encode()).digest()
        counter += 1
    raw = [int.from_bytes(digest[2 * i : 2 * i + 2], "little") - 32768 or 1 for i in range(size)]
    norm = math.sqrt(sum(x * x for x in raw))
    return [x / norm for x in raw]


class MockProvider(Provider):
    format = "openai"
    embeds = True
    #: Vector size when the request names no ``dimensions`` and the model none.
    dimensions = 256

    #: Seconds between streamed words; 0 in tests and benchmarks.
    word_delay: float = 0.0

    async def send(
        self, model: ModelConfig, body: dict[str, Any], *, stream: bool, headers: Mapping[str, str] | None = None
    ) -> UpstreamResponse:
        messages = body.get("messages") or []
        prompt = prompt_tokens(body)
        tool_call = self._tool_call(body)
        reply = "" if tool_call else self._reply(model.upstream, messages)
        completion_tokens = text_tokens(reply or orjson.dumps(tool_call).decode())
        if body.get("max_tokens") or body.get("max_completion_tokens"):
            limit = int(body.get("max_completion_tokens") or body["max_tokens"])
            completion_tokens = min(completion_tokens, limit)
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 0},
        }
        seed = orjson.dumps(messages, option=orjson.OPT_SORT_KEYS)
        completion_id = "chatcmpl-mock" + hashlib.sha256(seed).hexdigest()[:20]
        if stream:
            chunks = self._stream(completion_id, model.upstream, reply, tool_call, usage, body)
            return UpstreamResponse(200, _STREAM_HEADERS, chunks=chunks)
        message: dict[str, Any] = {"role": "assistant", "content": reply or None}
        if tool_call:
            message["tool_calls"] = [tool_call]
        answer = {
            "id": completion_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model.upstream,
            "choices": [
                {"index": 0, "message": message, "logprobs": None, "finish_reason": "tool_calls" if tool_call else "stop"}
            ],
            "usage": usage,
        }
        return UpstreamResponse(200, _HEADERS, orjson.dumps(answer))

    async def embed(self, model: ModelConfig, body: dict[str, Any]) -> UpstreamResponse:
        """Each item embeds to a unit vector seeded by a hash of the model and the item, so the
        same text always has the same vector (OpenAI's answer, floats or base64)."""
        size = body.get("dimensions") or model.dimensions or self.dimensions
        found = items(body["input"])
        vectors: list[Vector] = [_unit_vector(f"{model.upstream}\0{orjson.dumps(item).decode()}", size) for item in found]
        tokens = sum(text_tokens(item) if isinstance(item, str) else len(item) for item in found)
        answer = render(vectors, model.upstream, tokens, body.get("encoding_format") or "float")
        return UpstreamResponse(200, _HEADERS, orjson.dumps(answer))

    @staticmethod
    def _reply(model: str, messages: list[Any]) -> str:
        last = next((text_of(m.get("content")) for m in reversed(messages) if isinstance(m, dict) and m.get("role") == "user"), "")
        snippet = " ".join(last.split()[:40])
        return f"This is a mock reply from {model}. You said: {snippet}"

    @staticmethod
    def _tool_call(body: dict[str, Any]) -> dict[str, Any] | None:
        tools = body.get("tools")
        messages = body.get("messages") or []
        if not tools or body.get("tool_choice") == "none" or not messages or messages[-1].get("role") != "user":
            return None
        function = tools[0].get("function") or {}
        name = function.get("name", "tool")
        arguments = {"query": text_of(messages[-1].get("content"))[:100]}
        return {"id": f"call_mock_{name}", "type": "function", "function": {"name": name, "arguments": orjson.dumps(arguments).decode()}}

    async def _stream(
        self,
        completion_id: str,
        model: str,
        reply: str,
        tool_call: dict[str, Any] | None,
        usage: dict[str, Any],
        body: dict[str, Any],
    ) -> AsyncIterator[bytes]:
        created = int(time.time())
        with_usage = include_usage(body)

        def event(delta: dict[str, Any], finish: str | None = None) -> bytes:
            payload = chunk(completion_id, created, model, delta, finish)
            if with_usage:
                payload["usage"] = None
            return encode_event(orjson.dumps(payload))

        yield event({"role": "assistant", "content": ""})
        if tool_call:
            name, arguments = tool_call["function"]["name"], tool_call["function"]["arguments"]
            start = {"index": 0, "id": tool_call["id"], "type": "function", "function": {"name": name, "arguments": ""}}
            yield event({"tool_calls": [start]})
            for i in range(0, len(arguments), 8):
                yield event({"tool_calls": [{"index": 0, "function": {"arguments": arguments[i : i + 8]}}]})
        else:
            words = reply.split(" ")
            for i, word in enumerate(words):
                if self.word_delay:
                    await asyncio.sleep(self.word_delay)
                yield event({"content": word if i == 0 else " " + word})
        yield event({}, "tool_calls" if tool_call else "stop")
        if with_usage:
            final = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model, "choices": [], "usage": usage}
            yield encode_event(orjson.dumps(final))
        yield b"data: [DONE]\n\n"
