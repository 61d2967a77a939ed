"""The same-format stream path chunk by chunk: what a caller receives is what the provider sent,
however the provider's bytes are cut, and usage, the end and errors are still read."""

from __future__ import annotations

import orjson
import pytest

from asgi_ai_relay.protocol.sse import SSESplitter
from asgi_ai_relay.stages.passthrough import OpenAIPassThrough


def event(obj: object) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def delta(text: str) -> bytes:
    return event({"id": "c1", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": text}}]})


USAGE = event({"id": "c1", "object": "chat.completion.chunk", "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}})
ERROR = event({"error": {"message": "overloaded", "type": "server_error"}})
DONE = b"data: [DONE]\n\n"
CONTENT = [delta(t) for t in ("Hello", " wor\\r\\nld", " \"error\" is a word", "!")]


def cuts(data: bytes, sizes: tuple[int, ...]) -> list[bytes]:
    """``data`` cut into pieces of the given sizes, over and over."""
    out, i, k = [], 0, 0
    while i < len(data):
        n = sizes[k % len(sizes)]
        out.append(data[i : i + n])
        i, k = i + n, k + 1
    return out


def run(chunks: list[bytes], include_usage: bool) -> tuple[bytes, object, bool, bool]:
    body = {"stream": True, "stream_options": {"include_usage": True}} if include_usage else {"stream": True}
    translator = OpenAIPassThrough().stream(body)
    out = b"".join(translator.feed(c) for c in chunks) + translator.close()
    return out, translator.usage, translator.done, translator.failed


@pytest.mark.parametrize("include_usage", [True, False])
@pytest.mark.parametrize("sizes", [(10**6,), (1,), (7, 3), (len(CONTENT[0]),), (len(CONTENT[0]) - 1, 2), (len(CONTENT[0]) + 5,)])
def test_any_cut_gives_the_events_as_sent(sizes, include_usage):
    sent = b"".join(CONTENT) + USAGE + DONE
    out, usage, done, failed = run(cuts(sent, sizes), include_usage)
    assert out == b"".join(CONTENT) + (USAGE if include_usage else b"") + DONE
    assert usage is not None and usage.prompt_tokens == 9 and usage.completion_tokens == 3
    assert done and not failed


def test_one_event_per_chunk_is_handed_on_as_it_came():
    """The common case: each chunk whole content events; each comes out byte for byte."""
    body = {"stream": True}
    translator = OpenAIPassThrough().stream(body)
    for piece in CONTENT:
        assert translator.feed(piece) == piece
    assert translator.feed(delta("a") + delta("b")) == delta("a") + delta("b")
    assert not translator.done and translator.usage is None


@pytest.mark.parametrize("sizes", [(10**6,), (5,)])
def test_an_error_event_is_read(sizes):
    out, _, _, failed = run(cuts(CONTENT[0] + ERROR + DONE, sizes), False)
    assert failed
    assert out.startswith(CONTENT[0]) and b'"server_error"' in out


def test_content_mentioning_error_in_quotes_is_not_an_error():
    out, _, done, failed = run([CONTENT[2], event({"choices": [{"delta": {"content": 'an "error"'}}]}), DONE], False)
    assert not failed and done and out.startswith(CONTENT[2])


def test_a_chunk_after_half_an_event_is_joined_to_it():
    """Half an event held, then a chunk that completes it and brings whole events: split, joined."""
    first, second = CONTENT[0][:20], CONTENT[0][20:] + CONTENT[1]
    translator = OpenAIPassThrough().stream({"stream": True})
    assert translator.feed(first) == b""
    assert translator.feed(second) == CONTENT[0] + CONTENT[1]


def test_splitter_boundary():
    splitter = SSESplitter()
    assert splitter.at_boundary()
    list(splitter.feed(b"data: x"))
    assert not splitter.at_boundary()
    list(splitter.feed(b"\n\n"))
    assert splitter.at_boundary()
    list(splitter.feed(b"data: y\r"))
    assert not splitter.at_boundary()
