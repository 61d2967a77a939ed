"""OpenAI Embeddings (``POST /v1/embeddings``): request validation, the answer's shape, base64
vectors, and the translation to and from Gemini's ``batchEmbedContents``.

An input is a string, a list of strings, one token array (a list of integers) or a list of
token arrays; :func:`items` turns each into a list of items, one vector each. Vectors move
through the relay as :data:`Vector`: a list of floats, or the base64 text of little-endian
float32 values when the caller asked for ``encoding_format: "base64"`` and the provider sent
that text (it goes on byte-exact); the relay encodes it itself when the provider sent floats.

Gemini: each item is one ``requests[]`` entry with ``content.parts[0].text`` (a token array
cannot be sent: 400); ``dimensions`` becomes ``outputDimensionality``; the relay-only body
fields ``task_type`` / ``taskType`` and ``title`` go to every entry (``RETRIEVAL_DOCUMENT``,
``RETRIEVAL_QUERY``...). Gemini reports no token counts: the relay estimates them.
"""

from __future__ import annotations

import base64
import struct
from typing import Any

from ..errors import InvalidRequest
from .hub import untranslatable
from .openai import require_model

__all__ = [
    "Item",
    "Vector",
    "as_base64",
    "as_floats",
    "from_gemini",
    "from_openai",
    "items",
    "render",
    "to_gemini",
    "validate_embeddings_request",
]

#: One input: a text or a token array.
Item = str | list[int]
#: One embedding: floats, or base64 of little-endian float32.
Vector = list[float] | str

ENCODINGS = ("float", "base64")
#: OpenAI's own bound on the items of one request.
MAX_ITEMS = 2048
#: The most ``dimensions`` a request may ask for (no model has more).
MAX_DIMENSIONS = 16384
_TASK_FIELDS = ("task_type", "taskType")


def validate_embeddings_request(body: Any) -> None:
    """Check an Embeddings body well enough that nothing malformed goes upstream.

    :raises InvalidRequest: naming the parameter at fault.
    """
    require_model(body)
    if "input" not in body:
        raise InvalidRequest("'input' is required: a string, an array of strings or of token arrays.", param="input")
    found = items(body["input"])
    if not found or len(found) > MAX_ITEMS:
        raise InvalidRequest(f"'input' must hold between 1 and {MAX_ITEMS} items.", param="input")
    if any(item == "" or item == [] for item in found):
        raise InvalidRequest("'input' must not contain an empty string or an empty token array.", param="input")
    encoding = body.get("encoding_format", "float")
    if encoding not in ENCODINGS:
        raise InvalidRequest("'encoding_format' must be 'float' or 'base64'.", param="encoding_format")
    dimensions = body.get("dimensions")
    if dimensions is not None and (
        isinstance(dimensions, bool) or not isinstance(dimensions, int) or not 1 <= dimensions <= MAX_DIMENSIONS
    ):
        raise InvalidRequest(f"'dimensions' must be an integer between 1 and {MAX_DIMENSIONS}.", param="dimensions")
    if body.get("user") is not None and not isinstance(body["user"], str):
        raise InvalidRequest("'user' must be a string.", param="user")
    for name in _TASK_FIELDS:
        if body.get(name) is not None and not isinstance(body[name], str):
            raise InvalidRequest(f"'{name}' must be a string.", param=name)


def items(value: Any) -> list[Item]:
    """The items of an ``input``, one vector each.

    :raises InvalidRequest: for an input of any other shape.
    """
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(_is_token(t) for t in value):
            return [list(value)]
        if all(isinstance(v, str) for v in value):
            return list(value)
        if all(isinstance(v, list) and all(_is_token(t) for t in v) for v in value):
            return [list(v) for v in value]
    raise InvalidRequest("'input' must be a string, an array of strings, or an array of token arrays.", param="input")


def _is_token(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def as_base64(vector: Vector) -> str:
    """The base64 text of a vector (little-endian float32, as OpenAI sends it)."""
    if isinstance(vector, str):
        return vector
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


def as_floats(vector: Vector) -> list[float]:
    """:raises ValueError: for base64 that is not whole float32 values."""
    if not isinstance(vector, str):
        return vector
    raw = base64.b64decode(vector, validate=True)
    if len(raw) % 4:
        raise ValueError("base64 embedding is not a whole number of float32 values")
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


def render(vectors: list[Vector], model: str, prompt_tokens: int, encoding: str) -> dict[str, Any]:
    """OpenAI's answer: ``{"object": "list", "data": [...], "model", "usage"}``, in input order."""
    convert = as_base64 if encoding == "base64" else as_floats
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": convert(v)} for i, v in enumerate(vectors)],
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }


def to_gemini(body: dict[str, Any], upstream: str, provider: str) -> dict[str, Any]:
    """A ``batchEmbedContents`` body for the items of ``body["input"]``.

    :raises InvalidRequest: for a token array (Gemini embeds text only).
    """
    name = upstream if upstream.startswith("models/") else f"models/{upstream}"
    entry: dict[str, Any] = {}
    if body.get("dimensions") is not None:
        entry["outputDimensionality"] = body["dimensions"]
    task = next((body[f] for f in _TASK_FIELDS if body.get(f)), None)
    if task is not None:
        entry["taskType"] = task
    if isinstance(body.get("title"), str):
        entry["title"] = body["title"]
    requests = []
    for item in items(body["input"]):
        if not isinstance(item, str):
            raise untranslatable("input", provider, "gemini", "token arrays cannot be embedded, only text")
        requests.append({"model": name, "content": {"parts": [{"text": item}]}, **entry})
    return {"requests": requests}


def from_gemini(payload: Any, expected: int) -> list[Vector]:
    """The vectors of a ``batchEmbedContents`` answer.

    :raises ValueError: when it does not hold ``expected`` vectors of numbers.
    """
    embeddings = payload["embeddings"]
    if not isinstance(embeddings, list) or len(embeddings) != expected:
        raise ValueError("the answer does not hold one embedding per input")
    return [_floats(e["values"]) for e in embeddings]


def from_openai(payload: Any, expected: int) -> list[Vector]:
    """The vectors of an OpenAI answer, in input order (by ``index``).

    :raises ValueError: when it does not hold ``expected`` vectors.
    """
    data = payload["data"]
    if not isinstance(data, list) or len(data) != expected:
        raise ValueError("the answer does not hold one embedding per input")
    ordered: list[Vector | None] = [None] * expected
    for position, entry in enumerate(data):
        index = entry.get("index", position)
        if not isinstance(index, int) or not 0 <= index < expected or ordered[index] is not None:
            raise ValueError("the answer's embedding indexes are not 0..n-1")
        vector = entry["embedding"]
        if isinstance(vector, str):
            as_floats(vector)  # checked here, passed on as sent
            ordered[index] = vector
        else:
            ordered[index] = _floats(vector)
    return [v for v in ordered if v is not None]


def _floats(values: Any) -> list[float]:
    if not isinstance(values, list) or not all(isinstance(x, int | float) and not isinstance(x, bool) for x in values):
        raise ValueError("an embedding is not a list of numbers")
    return [float(x) for x in values]
