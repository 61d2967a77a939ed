"""The SSE splitter: events come out whole however the bytes are cut."""

from __future__ import annotations

import pytest

from asgi_ai_relay.protocol.sse import SSESplitter, encode_event

STREAM = (
    b"event: message_start\ndata: {\"a\": 1}\n\n"
    b": comment line\n\n"
    b"data: {\"b\": 2}\n\n"
    b"event: ping\r\ndata: {}\r\n\r\n"
    b"data: line one\ndata: line two\n\n"
    b"data: [DONE]\n\n"
)
EXPECTED = [("message_start", b'{"a": 1}'), (None, b""), (None, b'{"b": 2}'), ("ping", b"{}"), (None, b"line one\nline two"), (None, b"[DONE]")]


def split(chunks):
    splitter = SSESplitter()
    events = [e for chunk in chunks for e in splitter.feed(chunk)]
    events += list(splitter.flush())
    return [(e.event, e.data) for e in events]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, len(STREAM)])
def test_any_cut_gives_the_same_events(size):
    chunks = [STREAM[i : i + size] for i in range(0, len(STREAM), size)]
    assert split(chunks) == EXPECTED


def test_crlf_split_across_chunks_is_one_line_break():
    assert split([b"data: a\r", b"\ndata: b\r\n\r\n"]) == [(None, b"a\nb")]


def test_unterminated_last_event_is_flushed():
    assert split([b"data: tail"]) == [(None, b"tail")]


def test_encode_event():
    assert encode_event(b"{}") == b"data: {}\n\n"
    assert encode_event(b"{}", "ping") == b"event: ping\ndata: {}\n\n"
