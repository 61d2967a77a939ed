"""AWS event stream framing (``application/vnd.amazon.eventstream``), decoded incrementally.

Bedrock's ``ConverseStream`` answers with binary messages, each::

    total length (uint32 BE) | headers length (uint32 BE) | prelude CRC32 (of the 8 bytes before)
    headers: name length (uint8), name (UTF-8), value type (uint8), value
    payload
    message CRC32 (of everything before it)

Header value types: 0 true, 1 false, 2 byte, 3 short, 4 integer, 5 long (big-endian, signed),
6 byte array and 7 string (uint16 length first), 8 timestamp (int64 milliseconds), 9 UUID (16
bytes). A message is at most 16 MiB with at most 128 KiB of headers. :class:`EventStreamDecoder`
takes bytes as they arrive, in pieces of any size, and hands back each whole message once its
CRCs check out; anything else is :class:`~asgi_ai_relay.errors.UpstreamProtocolError`.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Any

from ..errors import UpstreamProtocolError

__all__ = ["MAX_HEADERS", "MAX_MESSAGE", "EventMessage", "EventStreamDecoder"]

_PRELUDE = 12
_MIN_MESSAGE = _PRELUDE + 4
MAX_MESSAGE = 16 * 1024 * 1024
MAX_HEADERS = 128 * 1024
_FIXED = {2: (1, ">b"), 3: (2, ">h"), 4: (4, ">i"), 5: (8, ">q"), 8: (8, ">q")}


@dataclass(frozen=True, slots=True)
class EventMessage:
    """One decoded message: its headers (``:event-type``, ``:message-type``...) and payload."""

    headers: dict[str, Any]
    payload: bytes

    @property
    def message_type(self) -> str:
        return str(self.headers.get(":message-type") or "event")

    @property
    def event_type(self) -> str:
        return str(self.headers.get(":event-type") or self.headers.get(":exception-type") or "")


def _broken(why: str) -> UpstreamProtocolError:
    return UpstreamProtocolError(f"The provider sent a broken event stream ({why}).")


class EventStreamDecoder:
    """Bytes in (any split), whole messages out; holds at most one unfinished message."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = bytearray()

    @property
    def pending(self) -> int:
        """Bytes held of a message not complete yet (0 at a clean end of stream)."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[EventMessage]:
        """:raises UpstreamProtocolError: for a bad length or CRC, or a malformed header."""
        buffer = self._buffer
        buffer += data
        out: list[EventMessage] = []
        while len(buffer) >= _PRELUDE:
            total, headers_length, prelude_crc = struct.unpack_from(">III", buffer)
            if zlib.crc32(memoryview(buffer)[:8]) != prelude_crc:
                raise _broken("prelude CRC mismatch")
            if not _MIN_MESSAGE <= total <= MAX_MESSAGE or headers_length > min(MAX_HEADERS, total - _MIN_MESSAGE):
                raise _broken(f"message length {total}, headers length {headers_length}")
            if len(buffer) < total:
                break
            message = bytes(buffer[:total])
            del buffer[:total]
            (message_crc,) = struct.unpack_from(">I", message, total - 4)
            if zlib.crc32(memoryview(message)[: total - 4]) != message_crc:
                raise _broken("message CRC mismatch")
            headers = _headers(message, _PRELUDE, _PRELUDE + headers_length)
            out.append(EventMessage(headers, message[_PRELUDE + headers_length : total - 4]))
        return out


def _headers(data: bytes, start: int, end: int) -> dict[str, Any]:
    headers: dict[str, Any] = {}
    at = start
    try:
        while at < end:
            size = data[at]
            name = data[at + 1 : at + 1 + size].decode()
            at += 1 + size
            kind = data[at]
            at += 1
            value: Any
            if kind in (0, 1):
                value = kind == 0
            elif kind in _FIXED:
                width, fmt = _FIXED[kind]
                (value,) = struct.unpack_from(fmt, data, at)
                at += width
            elif kind in (6, 7):
                (length,) = struct.unpack_from(">H", data, at)
                raw = data[at + 2 : at + 2 + length]
                at += 2 + length
                value = raw.decode() if kind == 7 else raw
            elif kind == 9:
                value = data[at : at + 16]  # raw bytes, as botocore hands them on
                at += 16
            else:
                raise _broken(f"unknown header value type {kind}")
            headers[name] = value
    except (IndexError, struct.error, UnicodeDecodeError, ValueError) as exc:
        raise _broken("malformed headers") from exc
    if at != end:
        raise _broken("headers overrun their length")
    return headers
