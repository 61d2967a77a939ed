"""Conversation affinity: the requests of one session stay on the deployment of a model that
served the session last, while it is healthy, so the provider's prompt cache stays warm.

A session is named by (first found): the Responses ``previous_response_id`` chain (its first
response's id, kept with every stored response: :mod:`asgi_ai_relay.stages.responses`), a
session header (``x-claude-code-session-id``, and the ones ``routing.session_headers`` adds),
the body's ``user`` or ``metadata.user_id``. The pin is a preference, not a rule: the attempt
loop tries the pinned deployment first, and when its breaker is open, its limits refuse or it
fails, the deployment that does serve becomes the pin. Requests without a session, and new
sessions, are balanced by the model's strategy. Models with one deployment are not tracked.

Pins live in process memory, at most :data:`MAX_PINS` of them, each forgotten
``routing.affinity_ttl`` seconds after it was last used.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .call import Call

__all__ = ["MAX_PINS", "SESSION_HEADERS", "Affinity", "session_of"]

#: The most sessions remembered per process (the oldest go first).
MAX_PINS = 100_000
#: Headers that name a session whatever the configuration says.
SESSION_HEADERS = ("x-claude-code-session-id",)
_LONGEST = 200


def session_of(call: Call, headers: Sequence[str]) -> str | None:
    """The session the request belongs to, if it names one."""
    if call.session:
        return call.session
    sent = call.request.headers
    for name in headers:
        value = sent.get(name)
        if value:
            return f"{name}:{value[:_LONGEST]}"
    body: Any = call.body
    user = body.get("user") if isinstance(body, dict) else None
    if not isinstance(user, str):
        metadata = body.get("metadata") if isinstance(body, dict) else None
        user = metadata.get("user_id") if isinstance(metadata, dict) else None
    return f"user:{user[:_LONGEST]}" if isinstance(user, str) and user else None


class Affinity:
    """Session -> deployment, per model, bounded and expiring."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic, size: int = MAX_PINS) -> None:
        self.ttl = ttl
        self.clock = clock
        self.size = size
        self._pins: OrderedDict[tuple[str, str], tuple[str, float]] = OrderedDict()

    def pinned(self, model: str, session: str) -> str | None:
        """The deployment the session last used for ``model``, unless its pin expired."""
        key = (model, session)
        entry = self._pins.get(key)
        if entry is None:
            return None
        if entry[1] <= self.clock():
            del self._pins[key]
            return None
        return entry[0]

    def pin(self, model: str, session: str, deployment: str) -> None:
        key = (model, session)
        self._pins[key] = (deployment, self.clock() + self.ttl)
        self._pins.move_to_end(key)
        while len(self._pins) > self.size:
            self._pins.popitem(last=False)

    def __len__(self) -> int:
        return len(self._pins)
