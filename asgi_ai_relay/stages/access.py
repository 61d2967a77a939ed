"""The models a caller may call: the stage after the model is resolved, on every model route.

A caller with limits of its own (:mod:`asgi_ai_relay.policy`: a managed key, or a host hook's
:func:`~asgi_ai_relay.policy.limited_caller`) may call only the models every one of its
pattern sets allows; the name checked is the one the caller asked for (an alias or a virtual
model), so a configured fallback serves a request without the caller naming it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import PermissionDenied
from ..policy import limits_of
from .usage import printable

if TYPE_CHECKING:
    from ..call import Call
    from ..relay import Relay
    from ..types import RelayResponse

__all__ = ["authorize"]


async def authorize(relay: Relay, call: Call) -> RelayResponse | None:
    """:raises PermissionDenied: (403, ``model_not_allowed``) for a model the caller may not call."""
    limits = limits_of(call.caller)
    if limits is None or not limits.models:
        return None
    name = call.requested_model or ""
    if not limits.allows(name):
        raise PermissionDenied(f"This caller may not use the model '{printable(name)}'.", code="model_not_allowed",
                               param="model")
    return None
