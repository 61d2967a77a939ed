"""Server-sent events: split a byte stream into events as the bytes arrive, and write events."""

from __future__ import annotations

from collections.abc import Iterator

from ..errors import UpstreamTooLarge

__all__ = ["MAX_EVENT_BYTES", "SSEEvent", "SSESplitter", "encode_event"]

#: The longest event a splitter holds while it waits for the event's end (an image in base64
#: fits; the stream as a whole is bounded by ``http.max_response_bytes``).
MAX_EVENT_BYTES = 16 * 1024 * 1024


class SSEEvent:
    """One event: its raw bytes (to forward unchanged), its ``event`` name and its ``data``."""

    __slots__ = ("data", "event", "raw")

    def __init__(self, raw: bytes, event: str | None, data: bytes) -> None:
        self.raw = raw
        self.event = event
        self.data = data

    def __repr__(self) -> str:
        return f"SSEEvent(event={self.event!r}, data={self.data[:60]!r})"


def _parse(raw: bytes) -> SSEEvent:
    event: str | None = None
    data: list[bytes] = []
    for line in raw.splitlines():
        if line.startswith(b"data:"):
            value = line[5:]
            data.append(value[1:] if value.startswith(b" ") else value)
        elif line.startswith(b"event:"):
            event = line[6:].strip().decode("utf-8", "replace")
    return SSEEvent(raw, event, b"\n".join(data))


class SSESplitter:
    """Feed it chunks; it yields each complete event once its blank line has arrived.

    Accepts ``\\n\\n``, ``\\r\\n\\r\\n`` and ``\\r\\r`` separators (Gemini uses ``\\r\\n``).
    The work is linear in the bytes fed: each chunk is scanned once, and the pieces of an
    unfinished event are joined only when it completes. An event longer than ``limit`` bytes
    is refused (:class:`UpstreamTooLarge`) instead of being held without end.
    """

    __slots__ = ("_cr", "_limit", "_parts", "_size")

    def __init__(self, limit: int = MAX_EVENT_BYTES) -> None:
        self._parts: list[bytes] = []  # the unfinished event, line breaks already made "\n"
        self._size = 0
        self._cr = False  # the last chunk ended in "\r", maybe the first half of a CRLF
        self._limit = limit

    def feed(self, chunk: bytes) -> Iterator[SSEEvent]:
        """:raises UpstreamTooLarge: when the unfinished event passes ``limit`` bytes."""
        if self._cr:
            chunk, self._cr = b"\r" + chunk, False
        if b"\r" in chunk:
            if chunk.endswith(b"\r"):
                chunk, self._cr = chunk[:-1], True
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        start = 0
        parts = self._parts
        if parts and chunk[:1] == b"\n" and parts[-1].endswith(b"\n"):  # a blank line split across chunks
            start = 1
            yield from self._event(b"\n")
        while True:
            end = chunk.find(b"\n\n", start)
            if end < 0:
                break
            piece, start = chunk[start : end + 2], end + 2
            if parts:  # (inline: a generator per event cost two calls)
                piece = b"".join((*parts, piece))
                parts.clear()
                self._size = 0
            if piece.strip():
                yield _parse(piece)
        rest = chunk[start:]
        if rest:
            self._size += len(rest)
            if self._size > self._limit:
                raise UpstreamTooLarge(f"The provider sent a stream event longer than {self._limit} bytes.")
            parts.append(rest)

    def at_boundary(self) -> bool:
        """Nothing of an unfinished event is held: the next chunk starts a new event."""
        return not self._parts and not self._cr

    def _event(self, last: bytes) -> Iterator[SSEEvent]:
        if self._parts:
            raw = b"".join((*self._parts, last))
            self._parts.clear()
            self._size = 0
        else:
            raw = last
        if raw.strip():
            yield _parse(raw)

    def flush(self) -> Iterator[SSEEvent]:
        """The last event when the stream ended without its blank line."""
        rest = b"".join(self._parts)
        self._parts.clear()
        self._size = 0
        if rest.strip():
            yield _parse(rest + b"\n\n" if not rest.endswith(b"\n") else rest + b"\n")


def encode_event(data: bytes, event: str | None = None) -> bytes:
    if event is None:
        return b"data: " + data + b"\n\n"
    return b"event: " + event.encode() + b"\ndata: " + data + b"\n\n"
