"""A WSGI request's headers, read straight from its environ by the synchronous adapters."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["environ_headers"]

_UNPREFIXED = (("CONTENT_TYPE", "content-type"), ("CONTENT_LENGTH", "content-length"))
_SHADOWED = frozenset(["HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"])


def environ_headers(environ: Mapping[str, Any]) -> dict[str, str]:
    """The request's headers by lower-case name: the ``HTTP_*`` keys, and ``CONTENT_TYPE`` and
    ``CONTENT_LENGTH`` when not empty (what werkzeug's ``request.headers`` holds, lower-cased,
    without building its multi-dict first; Django's ``request.headers`` the same, less empty
    content headers)."""
    headers = {key[5:].replace("_", "-").lower(): value for key, value in environ.items()
               if key[:5] == "HTTP_" and key not in _SHADOWED}
    for key, name in _UNPREFIXED:
        value = environ.get(key)
        if value:
            headers[name] = value
    return headers
