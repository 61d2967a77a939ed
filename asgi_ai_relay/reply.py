"""An upstream's answer as every HTTP backend hands it on, and the bounds every backend keeps.

Nothing an upstream sends is trusted. Each backend (:mod:`asgi_ai_relay.h1`, aiohttp, httpx in
:mod:`asgi_ai_relay.transport`) reads the raw bytes of an answer's body and passes them through
one :class:`BodyReader`, which decodes ``gzip`` / ``deflate`` itself and keeps:

* ``http.max_response_bytes``: the most decoded bytes a successful answer, whole or streamed,
  may have. Decompression is asked for at most what is still allowed, so a gzip bomb never
  expands past the bound;
* ``http.max_error_bytes``: the most of an error answer's body that is read; the rest is cut
  (the message is only quoted) and the connection is not reused;
* ``http.max_line_bytes``: the longest line a stream may send without a line break (an SSE
  parser holds a line until it ends);
* ``timeouts.total``: when the answer's last byte must have arrived. Each backend also arms its
  own timer for it, so a silent upstream is cut at the deadline, not at its next byte.

A breach is :class:`UpstreamTooLarge` or :class:`UpstreamTimeout`: an upstream failure for the
retry policy to judge, never a 500.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

from .config import HttpSettings, Timeouts
from .errors import UpstreamProtocolError, UpstreamTimeout, UpstreamTooLarge

__all__ = ["ACCEPT_ENCODING", "BodyReader", "Bounds", "UpstreamHttp", "UpstreamReply", "with_accept_encoding"]

_DECODED = frozenset({"gzip", "x-gzip", "deflate"})
_BREAKS = (10, 13)  # the bytes of "\n" and "\r"
#: The codings the relay asks for: the ones :class:`BodyReader` decodes, never a library's
#: wider default (brotli, zstd when their modules happen to be installed).
ACCEPT_ENCODING = "gzip, deflate"


def with_accept_encoding(headers: Mapping[str, str]) -> Mapping[str, str]:
    """``headers`` with ``accept-encoding`` set to :data:`ACCEPT_ENCODING` unless it is set."""
    if any(name.lower() == "accept-encoding" for name in headers):
        return headers
    return {**headers, "accept-encoding": ACCEPT_ENCODING}


class UpstreamReply:
    """Status, headers (case-insensitive mapping) and either the whole body or its chunks."""

    __slots__ = ("_close", "body", "chunks", "headers", "status")

    def __init__(self, status: int, headers: Mapping[str, str], body: bytes = b"", chunks: AsyncIterator[bytes] | None = None, close: Any = None) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.chunks = chunks
        self._close = close

    async def read(self) -> bytes:
        """The whole body of a streamed reply (used for error bodies: ``http.max_error_bytes`` of it)."""
        if self.chunks is None:
            return self.body
        parts = [chunk async for chunk in self.chunks]
        return b"".join(parts)

    async def aclose(self) -> None:
        if self._close is not None:
            close, self._close = self._close, None
            result = close()
            if asyncio.iscoroutine(result):
                await result


class UpstreamHttp(Protocol):
    async def post(self, provider: str, url: str, headers: Mapping[str, str], body: bytes, *, stream: bool) -> UpstreamReply:
        """POST ``body``; a streamed reply must be closed with ``aclose``.

        :raises UpstreamError: for connection failures, timeouts, broken answers and answers
            past a bound (see the module docstring).
        """

    async def aclose(self) -> None: ...


class Bounds:
    """The bounds of one client, read once from its settings."""

    __slots__ = ("max_error", "max_line", "max_response", "total")

    def __init__(self, settings: HttpSettings, timeouts: Timeouts) -> None:
        self.max_response = settings.max_response_bytes
        self.max_error = settings.max_error_bytes
        self.max_line = settings.max_line_bytes
        self.total = timeouts.total

    def deadline(self) -> float:
        """When an answer asked for now must be complete, on ``time.monotonic()``'s clock."""
        return time.monotonic() + self.total

    def late(self, provider: str) -> UpstreamTimeout:
        return UpstreamTimeout(f"Provider {provider!r} did not complete its answer within timeouts.total ({self.total:g}s).")

    def too_large(self, provider: str) -> UpstreamTooLarge:
        return UpstreamTooLarge(
            f"Provider {provider!r} sent an answer larger than http.max_response_bytes ({self.max_response} bytes)."
        )


class BodyReader:
    """One answer's body on its way in: decoded, counted, cut or refused (see the module docstring).

    ``full`` is set once an error body reached ``http.max_error_bytes``: the backend stops
    reading there and does not reuse the connection.
    """

    __slots__ = ("bounds", "deadline", "decoder", "error", "full", "limit", "line", "lines", "provider", "size")

    def __init__(self, bounds: Bounds, provider: str, status: int, headers: Mapping[str, str], *, stream: bool, deadline: float) -> None:
        """:raises UpstreamProtocolError: for a content-encoding the relay did not ask for."""
        self.bounds = bounds
        self.provider = provider
        self.deadline = deadline
        self.error = error = not 200 <= status < 300
        self.limit = bounds.max_error if error else bounds.max_response
        self.lines = stream and not error
        self.size = 0
        self.line = 0
        self.full = False
        self.decoder: Any = None
        coding = headers.get("content-encoding")
        if coding is not None:  # none: the body as sent (identity)
            coding = coding.strip().lower()
            if coding in _DECODED:
                self.decoder = zlib.decompressobj(zlib.MAX_WBITS | 32)  # zlib or gzip framing
            elif coding not in ("identity", ""):
                raise UpstreamProtocolError(f"Provider {provider!r} sent content-encoding {coding!r}, which was not asked for.")

    def feed(self, data: bytes) -> bytes:
        """Raw body bytes in, decoded bytes out (possibly fewer, possibly none).

        :raises UpstreamTooLarge: past ``http.max_response_bytes`` or ``http.max_line_bytes``.
        :raises UpstreamTimeout: past ``timeouts.total``.
        :raises UpstreamProtocolError: for a compressed body that does not decompress.
        """
        if self.full:
            return b""
        if time.monotonic() > self.deadline:
            raise self.bounds.late(self.provider)
        if self.decoder is None and self.lines:  # a plain stream's chunk: counted inline
            size = self.size + len(data)
            if size > self.limit or not data:
                return self._count(data)
            self.size = size
            if data[-1] in _BREAKS:  # nearly every chunk of a stream ends a line
                self.line = 0
                return data
            cut = max(data.rfind(b"\n"), data.rfind(b"\r"))
            line = self.line = self.line + len(data) if cut < 0 else len(data) - cut - 1
            if line > self.bounds.max_line:
                raise self._long_line()
            return data
        elif self.decoder is not None:
            try:
                # Never more than one byte past what is allowed, however well the body compresses.
                data = self.decoder.decompress(data, self.limit - self.size + 1)
            except zlib.error as exc:
                raise UpstreamProtocolError(f"Provider {self.provider!r} sent a compressed body that does not decompress.") from exc
        return self._count(data)

    def end(self) -> bytes:
        """What the decoder still held once the body ended.

        :raises UpstreamProtocolError: when a compressed body was cut short.
        """
        decoder, self.decoder = self.decoder, None
        if decoder is None or self.full:
            return b""
        try:
            tail = decoder.flush()
        except zlib.error:
            tail = b""
        if not decoder.eof:
            raise UpstreamProtocolError(f"Provider {self.provider!r} sent a compressed body cut short.")
        return self._count(tail)

    def _count(self, data: bytes) -> bytes:
        self.size += len(data)
        if self.size > self.limit:
            if self.error:
                self.full = True
                return data[: len(data) - (self.size - self.limit)]
            raise self.bounds.too_large(self.provider)  # a 2xx answer: its limit is max_response
        if self.lines and data:
            self._check_line(data)
        return data

    def _check_line(self, data: bytes) -> None:
        cut = max(data.rfind(b"\n"), data.rfind(b"\r"))
        self.line = self.line + len(data) if cut < 0 else len(data) - cut - 1
        if self.line > self.bounds.max_line:
            raise self._long_line()

    def _long_line(self) -> UpstreamTooLarge:
        return UpstreamTooLarge(
            f"Provider {self.provider!r} sent a stream line longer than http.max_line_bytes ({self.bounds.max_line} bytes)."
        )
