"""Server-sent events: split a byte stream into events as the bytes arrive, and write events."""

from __future__ import annotations

from collections.abc import Iterator

__all__ = ["SSEEvent", "SSESplitter", "encode_event"]


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
    """

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> Iterator[SSEEvent]:
        buffer = self._buffer + chunk if self._buffer else chunk
        held = b""
        if b"\r" in buffer:
            if buffer.endswith(b"\r"):  # may be the first half of a CRLF split across chunks
                buffer, held = buffer[:-1], b"\r"
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        start = 0
        while True:
            end = buffer.find(b"\n\n", start)
            if end < 0:
                break
            raw = buffer[start : end + 2]
            start = end + 2
            if raw.strip():
                yield _parse(raw)
        self._buffer = buffer[start:] + held

    def flush(self) -> Iterator[SSEEvent]:
        """The last event when the stream ended without its blank line."""
        rest, self._buffer = self._buffer, b""
        if rest.strip():
            yield _parse(rest + b"\n\n" if not rest.endswith(b"\n") else rest + b"\n")


def encode_event(data: bytes, event: str | None = None) -> bytes:
    if event is None:
        return b"data: " + data + b"\n\n"
    return b"event: " + event.encode() + b"\ndata: " + data + b"\n\n"
