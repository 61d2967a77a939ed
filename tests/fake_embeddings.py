"""The embeddings the fake upstream answers: OpenAI ``POST /v1/embeddings`` and Gemini
``:batchEmbedContents``.

Each text embeds to :func:`fake_vector` (``FAKE_DIMENSIONS`` floats, or ``dimensions`` /
``outputDimensionality``), a pure function of the text, so tests compute what to expect.
OpenAI answers report ``prompt_tokens`` = words of every text (a token array: its length);
``encoding_format: "base64"`` gets little-endian float32 base64, the way OpenAI sends it.
Gemini answers carry no token counts (the real API reports none).
"""

from __future__ import annotations

import base64
import hashlib
import struct
from typing import Any

FAKE_DIMENSIONS = 8


def fake_vector(text: str, size: int = FAKE_DIMENSIONS) -> list[float]:
    """Floats that survive float32: multiples of 1/1024 in [-1, 1)."""
    digest = hashlib.sha256(text.encode()).digest() * (1 + size // 32)
    return [(digest[i] - 128) / 128 for i in range(size)]


def fake_base64(text: str, size: int = FAKE_DIMENSIONS) -> str:
    vector = fake_vector(text, size)
    return base64.b64encode(struct.pack(f"<{size}f", *vector)).decode()


def item_text(item: Any) -> str:
    """A token array embeds as the text of its numbers joined by spaces."""
    return item if isinstance(item, str) else " ".join(str(t) for t in item)


def openai_items(value: Any) -> list[Any]:
    if isinstance(value, str):
        return [value]
    if value and all(isinstance(t, int) for t in value):
        return [value]
    return list(value)


def openai_embeddings(body: dict[str, Any]) -> dict[str, Any]:
    items = openai_items(body["input"])
    size = body.get("dimensions") or FAKE_DIMENSIONS
    as_base64 = body.get("encoding_format") == "base64"
    data = [
        {"object": "embedding", "index": i,
         "embedding": (fake_base64 if as_base64 else fake_vector)(item_text(item), size)}
        for i, item in enumerate(items)
    ]
    tokens = sum(len(item.split()) if isinstance(item, str) else len(item) for item in items)
    return {"object": "list", "data": data, "model": body.get("model"),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def gemini_embeddings(body: dict[str, Any]) -> dict[str, Any]:
    embeddings = []
    for request in body["requests"]:
        text = "".join(part.get("text", "") for part in request["content"]["parts"])
        embeddings.append({"values": fake_vector(text, request.get("outputDimensionality") or FAKE_DIMENSIONS)})
    return {"embeddings": embeddings}
