"""Which requests belong to the relay: one decision, made the same way by every adapter.

:func:`relay_subpath` claims every spelling of the prefix (``//ai/...``, ``/AI/...``,
``/x/../ai/...``, ``/ai/%2e%2e/...``), so no variant of a relay path ever reaches the host's own
routes, and it serves only the exact, canonical one. A claimed path that is not canonical gets
:data:`REFUSED`, which matches no route: the relay answers it 404 in its own format, before
any stage (auth included) runs, so nothing is served by way of a trick.

Paths are compared as the server decoded them (ASGI ``path``, WSGI ``PATH_INFO``); the raw
form, when the adapter has it, is checked for percent-encoding, which no relay route needs.
"""

from __future__ import annotations

import re

__all__ = ["REFUSED", "relay_subpath", "strip_root"]

#: The sub-path of a claimed, non-canonical request; no route has it.
REFUSED = "<non-canonical path>"

# "//", a "." or ".." segment, a backslash (a separator on some servers), a "%" left after
# decoding (double encoding), a control character.
_SUSPECT = re.compile(r"//|/\.\.?(?:/|$)|[\\%\x00-\x1f\x7f]")


def strip_root(path: str, root_path: str) -> str:
    """``path`` below the server's ``root_path`` (ASGI: ``path`` includes ``root_path``)."""
    if root_path and path.startswith(root_path) and (len(path) == len(root_path) or path[len(root_path)] == "/"):
        return path[len(root_path) :]
    return path


def _under(path: str, prefix: str) -> bool:
    return path.startswith(prefix) and (len(path) == len(prefix) or path[len(prefix)] == "/")


def _normalise(path: str) -> str:
    """The path a lenient server or proxy might route: separators merged, dots resolved."""
    parts: list[str] = []
    for segment in path.replace("\\", "/").split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if parts:
                parts.pop()
            continue
        parts.append(segment)
    return "/" + "/".join(parts)


def relay_subpath(path: str, prefix: str, *, root_path: str = "", raw_path: str | bytes | None = None) -> str | None:
    """The path below the relay prefix, :data:`REFUSED`, or ``None`` when the host should answer.

    :param path: the decoded request path (ASGI ``scope["path"]``, ``PATH_INFO``).
    :param prefix: the relay prefix (``/ai``, no trailing slash; ``""`` for the whole site).
    :param root_path: the server's mount point, removed from ``path`` first.
    :param raw_path: the path as sent (no query string), if known: it must be clean too
        (no ``%`` at all: no relay route needs percent-encoding).
    """
    path = strip_root(path, root_path)
    if _under(path, prefix) and _SUSPECT.search(path) is None and (raw_path is None or _clean_raw(raw_path)):
        return path[len(prefix) :]
    if _under(path, prefix) or _under(_normalise(path).lower(), prefix.lower()) or _under(path.lower(), prefix.lower()):
        return REFUSED
    return None


def _clean_raw(raw: str | bytes) -> bool:
    """The target as sent has no trick a server may have undone (werkzeug merges ``//``)."""
    text = raw.decode("latin-1") if isinstance(raw, bytes) else raw
    if "://" in text:  # absolute-form target: only its path counts
        text = "/" + text.split("://", 1)[1].partition("/")[2]
    return _SUSPECT.search(text) is None
