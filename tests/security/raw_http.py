"""A raw HTTP/1.1 client: sends the request target exactly as written (httpx and browsers
normalise ``..``, ``//`` and case; an attacker's client does not)."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes


def raw_request(url: str, method: str, target: str, *, headers: dict[str, str] | None = None, body: bytes = b"") -> RawResponse:
    """Send ``method target`` to the server at ``url`` and read the whole answer (``Connection: close``)."""
    parts = urlsplit(url)
    lines = [f"{method} {target} HTTP/1.1", f"Host: {parts.netloc}", "Connection: close", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    head, _, rest = b"".join(chunks).partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        parsed[name.strip().lower()] = value.strip()
    if parsed.get("transfer-encoding") == "chunked":
        rest = _dechunk(rest)
    return RawResponse(int(status_line.split()[1]), parsed, rest)


def _dechunk(data: bytes) -> bytes:
    out = []
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out.append(data[:size])
        data = data[size + 2 :]
    return b"".join(out)


def open_request(url: str, target: str, body: bytes, *, headers: dict[str, str] | None = None,
                 length: int | None = None, chunked: bool = False) -> socket.socket:
    """Send a POST's head and ``body`` and leave the connection open, unread: the caller then
    closes it (a client that leaves) or reads the answer.

    :param length: the ``Content-Length`` to declare (``len(body)`` by default); larger than
        the body for a body cut off mid-way.
    :param chunked: send ``body`` as raw chunked framing instead (no ``Content-Length``).
    """
    parts = urlsplit(url)
    lines = [f"POST {target} HTTP/1.1", f"Host: {parts.netloc}", "Content-Type: application/json"]
    lines.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {len(body) if length is None else length}")
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
    return sock


def read_answer(sock: socket.socket) -> RawResponse:
    """Read one answer from ``sock`` (up to the end of its body or of the connection)."""
    data = b""
    while b"\r\n\r\n" not in data and (chunk := sock.recv(65536)):
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        parsed[name.strip().lower()] = value.strip()
    length = int(parsed.get("content-length", "-1"))
    while (length < 0 or len(rest) < length) and (chunk := sock.recv(65536)):
        rest += chunk
    if parsed.get("transfer-encoding") == "chunked":
        rest = _dechunk(rest)
    return RawResponse(int(status_line.split()[1]), parsed, rest[:length] if length >= 0 else rest)
