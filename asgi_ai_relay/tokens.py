"""Token counts before and after a call: one estimator for limits, budgets, routing and pricing.

:func:`prompt_tokens` counts the text of a request in any wire format (OpenAI messages with
their content parts, tool calls and tools; Anthropic messages, system and tools; Gemini
contents and system instruction) by walking the parsed body: the top-level fields that reach
the model, every string and key in them, never media as text. Media costs a fixed count:

- image: 765, OpenAI's tile rule for a 1024 x 1024 image (85 + 4 tiles x 170); Anthropic
  (w x h / 750) and Gemini (258 per 768 px tile) fall near it for the images people send;
  85 for OpenAI's ``"detail": "low"``;
- audio: 1,000, about 30 s of speech (Gemini counts 32 tokens a second);
- file or document: 1,500, one PDF page as Anthropic counts it (its text and its image).

These are floors, not bills: limits and budgets settle to the provider's real usage when it
arrives. :func:`output_allowance` is what the request may produce. For an answer without
usage, :func:`answer_tokens` and :func:`output_tokens` count the content text of a whole
answer or of the streamed pieces already sent (not SSE framing or JSON keys), in OpenAI,
Anthropic and Gemini shapes, as :mod:`asgi_ai_relay.answer_text` reads it.

Text is estimated at about four characters a token (about one a character for scripts UTF-8
writes in three bytes), within a factor of 1.4 of real tokenizers on prose, code and JSON.
``limits.tokenizer = "tiktoken"`` counts with tiktoken's ``o200k_base`` (``cl100k_base`` when
only that one loads; the ``tokens`` extra). Its encoding loads in a background thread, as the
file may come from the network; the estimate serves until then, and for good, with one log
line, when tiktoken or its encoding file is missing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .answer_text import answer_text, streamed_text
from .types import Usage

__all__ = [
    "AUDIO_TOKENS", "FILE_TOKENS", "IMAGE_LOW_TOKENS", "IMAGE_TOKENS", "TOKENIZERS",
    "answer_tokens", "output_allowance", "output_tokens", "prompt_tokens", "request_usage", "text_tokens",
]

logger = logging.getLogger("asgi_ai_relay")

IMAGE_TOKENS = 765
IMAGE_LOW_TOKENS = 85
AUDIO_TOKENS = 1000
FILE_TOKENS = 1500

#: The values ``limits.tokenizer`` takes.
TOKENIZERS = ("estimate", "tiktoken")
#: Tried in order when ``limits.tokenizer = "tiktoken"``.
ENCODINGS = ("o200k_base", "cl100k_base")

#: Top-level request fields whose text reaches the model, in every wire format.
_PROMPT_FIELDS = (
    "messages", "system", "tools", "functions", "response_format", "prompt", "input", "instructions",
    "contents", "systemInstruction", "system_instruction",
)
_PROMPT_SET = frozenset(_PROMPT_FIELDS)
#: Strings the provider does not read as text: thinking signatures, encrypted reasoning.
_OPAQUE = frozenset({"signature", "encrypted_content"})
_MEDIA = {"image_url": IMAGE_TOKENS, "input_image": IMAGE_TOKENS, "image": IMAGE_TOKENS,
          "input_audio": AUDIO_TOKENS, "file": FILE_TOKENS, "input_file": FILE_TOKENS, "document": FILE_TOKENS}
_INLINE = ("inline_data", "inlineData", "file_data", "fileData")
#: The largest count any store or ledger column takes.
_MAX_COUNT = 2**31 - 1

#: Counts the tokens of some texts, each starting a new token.
Count = Callable[[list[str]], int]


def estimate(text: str) -> int:
    """About four characters a token; each byte UTF-8 needs beyond the first of a character
    adds a third of a token (Cyrillic about 0.6 a character, Chinese about 0.9)."""
    size = len(text)
    if text.isascii():
        return (size + 3) // 4
    extra = len(text.encode("utf-8", "surrogatepass")) - size
    return (size + 3) // 4 + (extra + 2) // 3


def _estimate_all(texts: list[str]) -> int:
    """:func:`estimate` of the texts together, plus half a token for each text after the first
    (a key, a role, a part: a tokenizer starts a new token where one ends)."""
    return estimate("".join(texts)) + len(texts) // 2


class _Tiktoken:
    """Counts with tiktoken once its encoding has loaded (in a thread: the file may come from
    the network), with :func:`estimate` until then and for good when it cannot load."""

    def __init__(self) -> None:
        self.encode: Callable[[str], list[int]] | None = None
        self.loading = threading.Thread(target=self._load, name="asgi-ai-relay-tiktoken", daemon=True)
        self.loading.start()

    def _load(self) -> None:
        try:
            import tiktoken
        except ImportError:
            logger.warning("limits.tokenizer = 'tiktoken' but tiktoken is not installed "
                           "(pip install 'asgi-ai-relay[tokens]'): estimating tokens instead")
            return
        failures = []
        for name in ENCODINGS:
            try:
                self.encode = tiktoken.get_encoding(name).encode_ordinary
            except Exception as exc:  # a missing file, no network, a bad download
                failures.append(f"{name}: {type(exc).__name__}")
                continue
            logger.info("tokens are counted with tiktoken's %s", name)
            return
        logger.warning("limits.tokenizer = 'tiktoken' but no encoding could be loaded (%s): estimating "
                       "tokens instead", "; ".join(failures))

    def __call__(self, texts: list[str]) -> int:
        encode = self.encode
        return _estimate_all(texts) if encode is None else len(encode("\n".join(texts)))


_counters: dict[str, Count] = {"estimate": _estimate_all}
_counters_lock = threading.Lock()


def counter(tokenizer: str) -> Count:
    """The text counter ``tokenizer`` names (one per process; tiktoken starts loading on the
    first call, so call this at start-up)."""
    found = _counters.get(tokenizer)
    if found is None:
        if tokenizer not in TOKENIZERS:
            raise ValueError(f"unknown tokenizer {tokenizer!r}")
        with _counters_lock:
            found = _counters.get(tokenizer)
            if found is None:
                found = _counters[tokenizer] = _Tiktoken()
    return found


def text_tokens(text: str, tokenizer: str = "estimate") -> int:
    """Tokens of one text."""
    return counter(tokenizer)([text]) if text else 0


def prompt_tokens(body: Mapping[str, Any], tokenizer: str = "estimate") -> int:
    """Tokens of a request's prompt, in any wire format: its text, and fixed counts for media."""
    texts: list[str] = []
    fixed = 0
    for name, value in body.items():  # (a body has a few keys; there are a dozen prompt fields)
        if name in _PROMPT_SET and value is not None:
            fixed += _walk(value, texts)
    return fixed + counter(tokenizer)(texts) if texts else fixed


def _walk(value: Any, texts: list[str]) -> int:
    """Append every string and key under ``value`` to ``texts`` (in no particular order, and
    with no recursion however deep the body nests); returns the fixed tokens of its media."""
    fixed = 0
    append = texts.append
    stack = [value]
    push = stack.append
    while stack:
        value = stack.pop()
        kind = type(value)
        if kind is str:
            append(value)
        elif kind is list:
            for item in value:
                kind = type(item)
                if kind is str:
                    append(item)
                elif kind is dict and len(item) == 2 and type(item.get("content")) is str and type(item.get("role")) is str:
                    # The commonest item: a message of a role and a text (what the loop below
                    # would append, without a turn of it per key).
                    texts += ("role", item["role"], "content", item["content"])
                else:
                    push(item)
        elif kind is dict:
            part = value.get("type")
            media = _media(part, value) if part.__class__ is str and part in _MEDIA else None
            if media is not None:
                if type(media) is int:
                    fixed += media
                else:  # a document made of text
                    push(media)
                continue
            for key, item in value.items():
                kind = type(item)
                if kind is str:
                    if key not in _OPAQUE:
                        append(key)
                        append(item)
                elif kind is dict and key in _INLINE:
                    fixed += _inline(item)
                else:
                    append(key)
                    push(item)
    return fixed


def _media(kind: str, part: dict[str, Any]) -> Any:
    """A media part's fixed tokens; the text inside an Anthropic document made of text; ``None``
    for a ``type`` that is not media after all (a word in a tool's schema)."""
    if kind in ("image", "document"):
        source = part.get("source")
        if not isinstance(source, dict):
            return None
        if source.get("type") == "text":
            return source.get("data") or ""
        if source.get("type") == "content":
            return source.get("content") or ""
        return _MEDIA[kind]
    if kind not in part and kind not in ("input_image", "input_file"):
        return None
    inner = part.get(kind)
    low = part.get("detail") == "low" or (isinstance(inner, dict) and inner.get("detail") == "low")
    return IMAGE_LOW_TOKENS if low and _MEDIA[kind] == IMAGE_TOKENS else _MEDIA[kind]


def _inline(blob: dict[str, Any]) -> int:
    """Gemini's ``inline_data`` / ``file_data``: counted by its MIME type."""
    mime = blob.get("mime_type") or blob.get("mimeType") or ""
    mime = mime if isinstance(mime, str) else ""
    if mime.startswith("image/"):
        return IMAGE_TOKENS
    return AUDIO_TOKENS if mime.startswith("audio/") else FILE_TOKENS


_CAP_FIELDS = frozenset({"max_completion_tokens", "max_tokens", "max_output_tokens", "generationConfig", "generation_config"})
_CAPS_OR_CHOICES = _CAP_FIELDS | {"n"}


def output_allowance(body: Mapping[str, Any], default: int) -> int:
    """The completion tokens a request may produce: its own cap (``max_completion_tokens``,
    ``max_tokens``, ``max_output_tokens``, Gemini's ``generationConfig.maxOutputTokens``) or
    ``default``, times OpenAI's ``n`` choices; at most ``2**31 - 1``."""
    if _CAPS_OR_CHOICES.isdisjoint(body) and 0 <= default <= _MAX_COUNT:  # (most bodies: one check in C)
        return default
    limit: Any = default
    if not _CAP_FIELDS.isdisjoint(body):  # (a body that names only n has no cap to read)
        config = body.get("generationConfig") or body.get("generation_config")
        gemini = config if isinstance(config, dict) else {}
        for value in (body.get("max_completion_tokens"), body.get("max_tokens"), body.get("max_output_tokens"),
                      gemini.get("maxOutputTokens"), gemini.get("max_output_tokens")):
            if isinstance(value, int) and not isinstance(value, bool):
                limit = value
                break
    choices = body.get("n")
    if isinstance(choices, int) and not isinstance(choices, bool) and choices > 1:
        limit *= min(choices, 128)
    return min(max(int(limit), 0), _MAX_COUNT)


def request_usage(body: Mapping[str, Any], default_output: int = 0, tokenizer: str = "estimate") -> Usage:
    """What a request is expected to use before it is sent, marked ``estimated``."""
    return Usage(prompt_tokens=prompt_tokens(body, tokenizer),
                 completion_tokens=output_allowance(body, default_output), estimated=True)


# -- what an answer said -------------------------------------------------------------------


def answer_tokens(raw: bytes, tokenizer: str = "estimate") -> int:
    """Tokens of the content of a whole answer (OpenAI, Anthropic or Gemini); a body that is
    not JSON counts as text."""
    return text_tokens(answer_text(raw), tokenizer)


def output_tokens(pieces: Iterable[bytes], tokenizer: str = "estimate") -> int:
    """Tokens of the content already streamed in ``pieces`` (SSE events of any format); an
    event cut off at the end is not counted."""
    return text_tokens(streamed_text(pieces), tokenizer)
