"""The bounds that hold whatever an upstream sends, unit by unit: the SSE splitter's event cap
(and its linear work), the shared body reader's sizes and decompression, token counts and
``Retry-After`` values."""

from __future__ import annotations

import gzip
import random
import zlib

import pytest

from asgi_ai_relay.config import HttpSettings, Timeouts
from asgi_ai_relay.errors import UpstreamProtocolError, UpstreamTimeout, UpstreamTooLarge
from asgi_ai_relay.protocol.sse import SSESplitter
from asgi_ai_relay.reply import BodyReader, Bounds
from asgi_ai_relay.retry import MAX_RETRY_AFTER, clamp_wait, parse_retry_after
from asgi_ai_relay.types import Usage

KIB = 1024


def reader(status=200, coding=None, *, stream=False, deadline=float("inf"), **settings):
    bounds = Bounds(HttpSettings(**settings), Timeouts())
    headers = {"content-encoding": coding} if coding else {}
    return BodyReader(bounds, "prov", status, headers, stream=stream, deadline=deadline)


# -- the SSE splitter ---------------------------------------------------------------------------


def test_an_event_without_its_end_is_refused_at_the_limit():
    splitter = SSESplitter(limit=64 * KIB)
    piece = b"data: " + b"x" * (4 * KIB)
    with pytest.raises(UpstreamTooLarge):
        for _ in range(100):  # 400 KiB, never a blank line
            list(splitter.feed(piece))
    assert sum(map(len, splitter._parts)) <= 64 * KIB  # held no more than the limit


def test_a_long_event_is_held_in_pieces_and_joined_once():
    splitter = SSESplitter(limit=1024 * KIB)
    pieces = [b"data: " + b"y" * 999] + [b"z" * 1000] * 500
    for piece in pieces:
        assert list(splitter.feed(piece)) == []
    assert len(splitter._parts) == len(pieces)  # nothing re-joined while the event grows
    (event,) = splitter.feed(b"\n\n")
    assert len(event.data) == 999 + 500 * 1000 and splitter._parts == []


def test_every_cut_of_a_mixed_stream_gives_the_events_of_the_whole():
    rng = random.Random(7)
    alphabet = [b"data: a", b"event: e", b"\n", b"\r", b"\r\n", b" ", b"x"]
    for _ in range(500):
        text = b"".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
        whole = SSESplitter()
        expected = [(e.event, e.data) for e in [*whole.feed(text), *whole.flush()]]
        cuts = sorted(rng.sample(range(len(text) + 1), min(len(text) + 1, rng.randint(1, 8))))
        cut = SSESplitter()
        pieces = [text[i:j] for i, j in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        got = [(e.event, e.data) for piece in pieces for e in cut.feed(piece)] + [(e.event, e.data) for e in cut.flush()]
        assert got == expected, (text, pieces)


# -- the body reader ----------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [gzip.compress, zlib.compress], ids=["gzip", "deflate"])
def test_a_compressed_bomb_stops_one_byte_past_the_bound(compress):
    bomb = compress(b"\0" * (32 * 1024 * KIB))
    body = reader(coding="gzip" if compress is gzip.compress else "deflate", max_response_bytes=64 * KIB)
    decoded = 0
    with pytest.raises(UpstreamTooLarge, match="max_response_bytes"):
        for start in range(0, len(bomb), 4 * KIB):
            decoded += len(body.feed(bomb[start : start + 4 * KIB]))
    assert decoded <= 64 * KIB and body.size == 64 * KIB + 1


def test_an_error_body_is_cut_not_refused():
    body = reader(500, max_error_bytes=10)
    assert body.feed(b"0123456") == b"0123456"
    assert body.feed(b"789abcdef") == b"789" and body.full
    assert body.feed(b"more") == b"" and body.end() == b""


def test_a_stream_line_is_bounded_but_lines_are_not_summed():
    body = reader(stream=True, max_line_bytes=10)
    for _ in range(100):
        body.feed(b"data: 1\n\n")  # many short lines: fine
    body.feed(b"data: ")
    with pytest.raises(UpstreamTooLarge, match="max_line_bytes"):
        body.feed(b"12345")
    assert reader(stream=True, max_line_bytes=10).feed(b"a\rbcdefghij") == b"a\rbcdefghij"  # CR ends a line too


def test_a_whole_answer_may_have_long_lines():
    assert reader(max_line_bytes=10).feed(b"x" * 100) == b"x" * 100


def test_past_the_deadline_a_chunk_is_a_timeout():
    with pytest.raises(UpstreamTimeout, match="timeouts.total"):
        reader(deadline=0.0).feed(b"late")


def test_a_cut_compressed_body_and_an_unknown_coding_are_protocol_errors():
    body = reader(coding="gzip")
    body.feed(gzip.compress(b"hello world" * 100)[:20])
    with pytest.raises(UpstreamProtocolError, match="cut short"):
        body.end()
    with pytest.raises(UpstreamProtocolError, match="br"):
        reader(coding="br")


# -- numbers ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "count"),
    [(12, 12), (12.9, 12), ("12", 0), (None, 0), (True, 0), (-3, 0), (float("nan"), 0), (float("inf"), Usage.MAX),
     (1e30, Usage.MAX), (2**31, Usage.MAX), ([1], 0), ((5, "x", 7), 12), ((2**31 - 1, 1), Usage.MAX)],
)
def test_token_counts_are_made_safe(value, count):
    assert Usage.count(value) == count


def test_cached_tokens_never_exceed_the_prompt():
    assert Usage.reported(10, 1, 50, 50) == Usage(10, 1, 10, 0)
    assert Usage.reported(10, 1, 4, 50) == Usage(10, 1, 4, 6)


@pytest.mark.parametrize(
    ("headers", "wait"),
    [({"retry-after": "inf"}, MAX_RETRY_AFTER), ({"retry-after": "1e999"}, MAX_RETRY_AFTER), ({"retry-after": "nan"}, None),
     ({"retry-after": "-1"}, 0.0), ({"retry-after": "soon"}, None), ({"retry-after": " 7 "}, 7.0),
     ({"retry-after": "Thu, 01 Jan 1970 00:00:10 GMT"}, 0.0), ({"retry-after": "Thu, 01 Jan 1970 00:01:40 GMT"}, 90.0),
     ({"retry-after-ms": "2500"}, 2.5), ({"retry-after-ms": "inf"}, MAX_RETRY_AFTER),
     ({"retry-after-ms": "nan", "retry-after": "3"}, 3.0), ({}, None)],
)
def test_retry_after_is_a_finite_wait_or_nothing(headers, wait):
    assert parse_retry_after(headers, now=10.0) == wait


def test_a_wait_is_clamped_wherever_it_comes_from():
    assert [clamp_wait(v) for v in (float("inf"), -1, float("nan"), "3", 2)] == [MAX_RETRY_AFTER, 0.0, None, None, 2.0]
