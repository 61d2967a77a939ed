"""Request ids: the caller's own ``X-Request-ID`` when it is safe to echo, otherwise a new one."""

from __future__ import annotations

import itertools
import os
import re
import secrets

from .types import RelayRequest

__all__ = ["request_id"]

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
# Generated ids: a random per-process prefix and a counter, unique without a system call per
# request (os.urandom, behind uuid4, was a visible cost in profiles).
_ID_PREFIX = secrets.token_hex(8)
_ID_COUNTER = itertools.count(1)


def _new_id_prefix() -> None:  # forked workers must not share the parent's ids
    global _ID_PREFIX
    _ID_PREFIX = secrets.token_hex(8)


os.register_at_fork(after_in_child=_new_id_prefix)


def request_id(request: RelayRequest) -> str:
    """The caller's id when it is 1-128 characters of ``A-Za-z0-9._:-``, else a new unique one."""
    given = request.headers.get("x-request-id")
    if given and _REQUEST_ID.fullmatch(given):
        return given
    return f"{_ID_PREFIX}{next(_ID_COUNTER):016x}"
