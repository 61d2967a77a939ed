"""The request body, read the same way by every adapter.

The ASGI middleware feeds :class:`Body` the chunks of its ``http.request`` messages; the WSGI
adapters (Flask, Django) hand :func:`read_body` their host's input stream. Either way:

- a ``Content-Length`` over the limit is refused before a byte is read, and a body that grows
  past the limit as soon as it does (413 ``request_too_large``);
- a body that ends before its declared length, or whose client went away while it arrived,
  ends as a 499 ``client_closed``: a truncated body never reaches the pipeline, so nothing of
  it goes upstream;
- a body the host's server could not decode (a broken chunked encoding) is a 400
  ``invalid_body`` in the caller's format.
"""

from __future__ import annotations

from collections.abc import Callable

from .errors import ClientClosed, InvalidRequest, PayloadTooLarge, RelayError

__all__ = ["Body", "client_closed", "declared_length", "read_body", "single"]

# Pieces a WSGI body is read in: bounded, so a declared length near the limit never allocates
# the whole limit at once for a body that turns out short.
_PIECE = 1 << 20


def client_closed() -> RelayError:
    """The error a request ends with when its client left before its body arrived."""
    return ClientClosed("The client closed the connection before its request body arrived.")


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"The request body is larger than the relay's limit of {limit} bytes.")


def declared_length(limit: int, declared: str | None) -> int:
    """The ``Content-Length`` header as a number: a length that is not all ASCII digits is no
    length (0, nothing to wait for).

    :raises PayloadTooLarge: when it is over ``limit``.
    """
    length = int(declared) if declared is not None and declared.isascii() and declared.isdigit() else 0
    if length > limit:
        raise _too_large(limit)
    return length


def single(chunk: bytes, limit: int, declared: int) -> bytes:
    """A body that came whole in one piece, held as :class:`Body` holds one (most requests:
    the same checks without the object).

    :raises PayloadTooLarge, RelayError: see :meth:`Body.add` and :meth:`Body.complete`.
    """
    if len(chunk) > limit:
        raise _too_large(limit)
    if len(chunk) < declared:
        raise client_closed()
    return chunk


class Body:
    """A body as it arrives, held to ``limit`` bytes.

    :param declared: the length its ``Content-Length`` header declares (:func:`declared_length`).
    """

    __slots__ = ("declared", "limit", "parts", "size")

    def __init__(self, limit: int, declared: int) -> None:
        self.limit = limit
        self.declared = declared
        self.parts: list[bytes] = []
        self.size = 0

    def add(self, chunk: bytes) -> None:
        """:raises PayloadTooLarge: once more than the limit has arrived."""
        self.size += len(chunk)
        if self.size > self.limit:
            raise _too_large(self.limit)
        if chunk:
            self.parts.append(chunk)

    def complete(self) -> bytes:
        """The whole body, once its end has come.

        :raises RelayError: 499 when fewer bytes came than ``Content-Length`` declared (the
            client closed the connection and the server ended the body early).
        """
        if self.size < self.declared:
            raise client_closed()
        return self.parts[0] if len(self.parts) == 1 else b"".join(self.parts)


def read_body(read: Callable[[int], bytes], declared: str | None, limit: int,
              client_gone: Callable[[], bool] | None = None) -> bytes:
    """Read a synchronous host's body (``request.read``, ``request.stream.read``).

    :param read: reads up to ``n`` bytes; ``b""`` at the end of the body.
    :param declared: the ``Content-Length`` header, if any.
    :param client_gone: tells whether the client has closed its connection (see
        :class:`~asgi_ai_relay.wsgi.ClientSocket`), to tell a departed client from a broken
        body when ``read`` fails.
    :raises PayloadTooLarge: past the limit.
    :raises RelayError: 499 when the client left before the body was whole; 400 when the
        server could not read the body.
    """
    body = Body(limit, declared_length(limit, declared))
    while True:
        try:
            chunk = read(min(limit + 1 - body.size, _PIECE))
        except Exception as error:  # noqa: BLE001 - each server has its own errors for a broken body
            raise _unreadable(error, client_gone) from error
        if not chunk:
            return body.complete()
        body.add(chunk)


def _unreadable(error: Exception, client_gone: Callable[[], bool] | None) -> RelayError:
    if isinstance(error, ConnectionError) or (client_gone is not None and client_gone()):
        return client_closed()
    return InvalidRequest("The request body could not be read: its framing is broken (such as a bad chunked encoding).",
                          code="invalid_body")
