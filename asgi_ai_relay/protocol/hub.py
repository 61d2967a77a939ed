"""Helpers shared by the translations, which all go through OpenAI Chat Completions (the hub).

An inbound body becomes an OpenAI-shaped request dict, which becomes the provider's body; the
provider's answer becomes an OpenAI-shaped completion (or stream of chunk dicts) plus a
:class:`Usage`, which becomes the caller's format.
"""

from __future__ import annotations

import uuid
from typing import Any

from ..errors import InvalidRequest

__all__ = ["data_url", "new_id", "parse_data_url", "plain_text", "reasoning_text", "refuse_single_choice_text",
           "untranslatable"]


def untranslatable(param: str, provider: str, fmt: str, why: str = "") -> InvalidRequest:
    """The 400 for a request the provider's format cannot express, naming both."""
    detail = f" ({why})" if why else ""
    return InvalidRequest(
        f"'{param}' cannot be sent to provider {provider!r} ({fmt} format){detail}.", param=param, code="untranslatable"
    )


def refuse_single_choice_text(body: dict[str, Any], provider: str, fmt: str) -> None:
    """What neither Anthropic nor Gemini can express: several choices, logprobs, non-text output.

    :raises InvalidRequest: naming the parameter and the provider.
    """
    if (body.get("n") or 1) > 1:
        raise untranslatable("n", provider, fmt, "one choice per request only")
    if body.get("logprobs"):
        raise untranslatable("logprobs", provider, fmt)
    if any(m != "text" for m in body.get("modalities") or ()):
        raise untranslatable("modalities", provider, fmt, "text output only")


def parse_data_url(url: str) -> tuple[str, str] | None:
    """``data:image/png;base64,AAAA`` -> ``("image/png", "AAAA")``; ``None`` for any other URL."""
    if not url.startswith("data:"):
        return None
    head, _, data = url[5:].partition(",")
    mime, _, encoding = head.partition(";")
    if encoding != "base64":
        return None
    return mime or "application/octet-stream", data


def data_url(mime: str, data: str) -> str:
    return f"data:{mime};base64,{data}"


def plain_text(content: Any) -> str:
    """The text of an OpenAI ``content`` (a string, or the text parts of a list)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def reasoning_text(message: dict[str, Any]) -> str:
    """The reasoning an OpenAI-compatible message or delta carries (``reasoning_content``, as
    DeepSeek, vLLM and SGLang send it, or OpenRouter's ``reasoning``), or ``""``."""
    text = message.get("reasoning_content") or message.get("reasoning")
    return text if isinstance(text, str) else ""


def new_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:24]
