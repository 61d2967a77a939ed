"""The upstream keys of this process, and the one function that takes them out of a string.

Every string the relay copies from an upstream's answer (an error's message, type, code and
param, a header it quotes) goes through :func:`scrub` where it is read, whichever module reads
it: a provider for error statuses, the stream decoders for errors inside a stream. An upstream
that echoes the key it was sent (some do, in "invalid key" messages) cannot make the relay
pass it on to a caller, a log line or the ledger.

Keys are registered by the providers that send them. The registry is per process, not per
relay: a key any relay of the process holds is taken out of every relay's upstream strings.
"""

from __future__ import annotations

import threading
from typing import overload

__all__ = ["REDACTED", "register", "scrub"]

REDACTED = "[redacted]"

_lock = threading.Lock()
_secrets: tuple[str, ...] = ()


def register(secret: str) -> None:
    """Take ``secret`` out of every string :func:`scrub` sees from now on."""
    global _secrets
    if not secret:
        return
    with _lock:
        if secret not in _secrets:
            # Longest first: a key that contains another is replaced whole.
            _secrets = tuple(sorted((*_secrets, secret), key=len, reverse=True))


@overload
def scrub(text: str) -> str: ...


@overload
def scrub(text: None) -> None: ...


def scrub(text: str | None) -> str | None:
    """``text`` with every registered key replaced by ``[redacted]``."""
    if not text:
        return text
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text
