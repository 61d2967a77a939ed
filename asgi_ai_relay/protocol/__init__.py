"""Wire formats: what a request in each API looks like, how its errors are written."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import RelayError
from . import anthropic, embeddings, gemini_answer, gemini_inbound, openai, responses, responses_output
from .sse import encode_event

__all__ = ["ANTHROPIC", "EMBEDDINGS", "GEMINI", "OPENAI", "RESPONSES", "WireFormat"]


@dataclass(frozen=True, slots=True)
class WireFormat:
    """One inbound API: its name, its request check and its error body."""

    name: str
    validate: Callable[[Any], None]
    error_body: Callable[[RelayError], bytes]
    #: The SSE event that ends a stream that failed after it started.
    stream_error: Callable[[RelayError], bytes]


def _openai_stream_error(error: RelayError) -> bytes:
    return encode_event(openai.error_body(error))


OPENAI = WireFormat("openai", openai.validate_chat_request, openai.error_body, _openai_stream_error)

ANTHROPIC = WireFormat(
    "anthropic", anthropic.validate_messages_request, anthropic.error_body, anthropic.stream_error
)

#: OpenAI Embeddings: errors in OpenAI's shape; never streamed.
EMBEDDINGS = WireFormat("openai.embeddings", embeddings.validate_embeddings_request, openai.error_body, _openai_stream_error)
RESPONSES = WireFormat(
    "responses", responses.validate_responses_request, openai.error_body, responses_output.stream_error
)
#: Gemini ``generateContent`` (the model and the action in the URL); errors in Google's shape.
GEMINI = WireFormat(
    "gemini", gemini_inbound.validate_gemini_request, gemini_answer.error_body, gemini_answer.stream_error
)
