"""``python -m uvicorn`` with its pre-bound listening socket marked as TCP (for ``--workers N``).

uvicorn's ``Config.bind_socket()`` (the socket the ``--workers`` supervisor binds and hands to
its workers) leaves the socket's ``proto`` at 0; asyncio turns TCP_NODELAY on for an accepted
connection only when ``proto`` is ``IPPROTO_TCP``, so every keep-alive answer written in two
pieces (head, then body) waits for the client's delayed ACK, about 40 ms on Linux (uvicorn issue
#3149). This launcher re-wraps the bound socket with ``IPPROTO_TCP``; everything else is uvicorn's
own command line. Used by the scale-out scenario.
"""

from __future__ import annotations

import socket
import sys

import uvicorn.config
from uvicorn.main import main

_bind_socket = uvicorn.config.Config.bind_socket


def bind_socket(self: uvicorn.config.Config) -> socket.socket:
    sock = _bind_socket(self)
    if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.proto != socket.IPPROTO_TCP:
        return socket.socket(sock.family, sock.type, socket.IPPROTO_TCP, fileno=sock.detach())
    return sock


uvicorn.config.Config.bind_socket = bind_socket  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.exit(main())
