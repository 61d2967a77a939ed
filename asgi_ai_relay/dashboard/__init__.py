"""``GET {prefix}/dashboard``: where the money goes, as one server-rendered HTML page with its
charts as inline SVG (no script, no CDN, no build step). Off unless ``dashboard.enabled``;
admin callers only (a relay key with ``admin = true``, a Django superuser, or whatever the
host's ``auth=`` hook marks ``admin``).

Query: ``from``, ``to`` (as ``/v1/usage``: 2025-01-31, an ISO datetime or Unix seconds; by
default the last ``dashboard.days`` UTC days), ``caller``, ``model``, ``key`` (a managed key's id or
visible prefix), ``team``. The numbers come from the
ledger through the same sums as ``/v1/usage`` (:mod:`.data`); the page is drawn by :mod:`.page`.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

from ..errors import NotFound, PermissionDenied
from ..types import RelayResponse
from .data import Board, collect, key_book
from .page import render

if TYPE_CHECKING:
    from ..call import Call
    from ..relay import Relay

__all__ = ["Board", "collect", "dashboard_page", "render"]

#: The page loads nothing from anywhere: inline styles and SVG only.
_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; frame-ancestors 'none'"


async def dashboard_page(relay: Relay, call: Call) -> RelayResponse:
    """The dashboard stage.

    :raises NotFound: when ``dashboard.enabled`` is off.
    :raises PermissionDenied: for a caller that is not an admin.
    :raises InvalidRequest: for a bad ``from`` or ``to``.
    """
    if not relay.config.dashboard.enabled:
        raise NotFound("The dashboard is off (set dashboard.enabled).")
    if not call.caller.admin:
        raise PermissionDenied("Only an admin caller may see the dashboard.")
    params = dict(parse_qsl(call.request.query))
    book = await key_book(relay)
    board = await asyncio.to_thread(collect, relay, params, time.time(), book)
    call.headers.update({"content-type": "text/html; charset=utf-8", "cache-control": "no-store",
                         "content-security-policy": _CSP, "x-content-type-options": "nosniff"})
    return RelayResponse(200, call.headers, render(relay.config, board).encode())
