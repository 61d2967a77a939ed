"""Telling when a WSGI client has gone: its socket, watched from the relay's loop.

WSGI gives an application no disconnect event, but the servers people run put the client's
socket in the environ: gunicorn as ``gunicorn.socket``, werkzeug's development server (Flask's
``flask run``) as ``werkzeug.socket``. While the request thread waits for the core, nothing
else reads that socket, so the kernel's end of stream (or a reset) is the client leaving.
:class:`ClientSocket` waits for it on the loop with the socket in the loop's selector and
looks with ``MSG_PEEK``, which takes no bytes from the server. Where no socket is reachable
(Django's ``runserver``, other servers), :func:`client_socket` gives ``None`` and a departed
client is noticed only when a write to it fails, as before.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Mapping
from typing import Any

__all__ = ["ClientSocket", "client_socket"]

#: Where servers put the client's socket in the WSGI environ.
SOCKET_KEYS = ("gunicorn.socket", "werkzeug.socket")

_PEEK = socket.MSG_PEEK | socket.MSG_DONTWAIT


def client_socket(environ: Mapping[str, Any]) -> ClientSocket | None:
    """The client's socket of a WSGI request, or ``None`` when the server does not expose it."""
    for key in SOCKET_KEYS:
        sock = environ.get(key)
        if isinstance(sock, socket.socket) and sock.type == socket.SOCK_STREAM:
            return ClientSocket(sock)
    return None


class ClientSocket:
    """``await watch()`` returns once the client has closed its connection.

    Use as :attr:`RelayRequest.disconnected`. It is awaited on the relay's loop; the socket is
    in that loop's selector only while someone awaits, and never after :meth:`detach` (which
    the adapter runs before the server takes the socket back for its next request). Bytes the
    server has yet to read (a pipelined request) hide the end of stream behind them: the
    watch then gives up and waits for ever, as when there is no socket at all.
    """

    __slots__ = ("_blind", "_fd", "_gone", "_loop", "_sock", "_waiters", "detached")

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._fd = sock.fileno()
        self._gone: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters = 0
        self._blind = False
        self.detached = False

    def _peek(self) -> bytes | None:
        """``b""`` at the end of the stream (or a reset), a byte when some are unread, ``None``
        when none have come."""
        try:
            # socket.socket's own recv: a TLS socket's refuses flags, and the question is the TCP stream's.
            return socket.socket.recv(self._sock, 1, _PEEK)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError:
            return b""

    def gone(self) -> bool:
        """Whether the client has closed its end of the connection, now."""
        return self._peek() == b""

    async def __call__(self) -> None:
        loop = asyncio.get_running_loop()
        if self._gone is None:
            self._gone = loop.create_future()
        gone = self._gone
        if self._loop is None and not (gone.done() or self._blind or self.detached):
            loop.add_reader(self._fd, self._readable)
            self._loop = loop
        self._waiters += 1
        try:
            await asyncio.shield(gone)
        finally:
            self._waiters -= 1
            if self._waiters == 0:
                self._unwatch()

    def _readable(self) -> None:
        seen = self._peek()
        if seen is None:
            return
        if seen:
            self._blind = True  # readable for good: watching on would spin
        elif self._gone is not None and not self._gone.done():
            self._gone.set_result(None)
        self._unwatch()

    def _unwatch(self) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self._fd)
            self._loop = None

    def detach(self) -> None:
        """Stop watching for good (on the loop): the request is over, the socket is the server's."""
        self.detached = True
        self._unwatch()
