"""A caller's own limits: the models it may call, and the rate limits and budgets of the
subjects it answers to (its key, its owner, its team).

A :class:`~asgi_ai_relay.types.Caller` carries them in ``extra["limits"]`` as a
:class:`CallerLimits`. Managed keys (:mod:`asgi_ai_relay.keys`) put them there; a host's own
auth hook (``auth=``, Flask's ``caller_loader``, Django's ``AI_RELAY_CALLER``) may too, with
:func:`limited_caller`. Every subject's limits apply at once, so the strictest one decides:

- **models**: each entry of ``models`` is one set of glob patterns (``gpt-*``); a model is
  allowed when every set has a pattern it matches (the key's and the owner's, say).
- **rate limits**: one pair of GCRA buckets per subject (``key:<id>``, ``owner:<id>``,
  ``team:<name>``), charged with the caller's configured ones (:mod:`.stages.ratelimit`).
- **budgets**: one spend counter per subject (:mod:`.stages.budget`); the owner's is the
  caller's own counter, so a user's session and that user's keys spend one budget.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from fnmatch import fnmatchcase
from typing import Any

from .types import Caller

__all__ = ["CallerLimits", "Quota", "Subject", "allowed", "limited_caller", "limits_of"]


@dataclass(frozen=True, slots=True)
class Quota:
    """Requests and tokens per minute (0: none) and USD per UTC day and month (``None``: none)."""

    rpm: int = 0
    tpm: int = 0
    daily: Decimal | None = None
    monthly: Decimal | None = None

    def __bool__(self) -> bool:
        return bool(self.rpm or self.tpm or self.daily is not None or self.monthly is not None)

    @property
    def budgeted(self) -> bool:
        return self.daily is not None or self.monthly is not None

    def as_dict(self) -> dict[str, Any]:
        return {"rpm": self.rpm, "tpm": self.tpm, "daily": _text(self.daily), "monthly": _text(self.monthly)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Quota:
        """:raises ValueError: for a negative or non-numeric value."""
        rpm, tpm = int(data.get("rpm") or 0), int(data.get("tpm") or 0)
        daily, monthly = _usd(data.get("daily")), _usd(data.get("monthly"))
        if rpm < 0 or tpm < 0:
            raise ValueError("rpm and tpm must be 0 or more")
        return cls(rpm, tpm, daily, monthly)


def _text(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def _usd(value: object) -> Decimal | None:
    if value is None or value == "":
        return None
    usd = Decimal(str(value))
    if not usd.is_finite() or usd < 0:
        raise ValueError(f"a budget must be a number of USD, 0 or more, not {value!r}")
    return usd


@dataclass(frozen=True, slots=True)
class Subject:
    """One thing whose limits a request counts against. ``kind`` is ``key``, ``owner`` or
    ``team``; ``name`` keys its buckets and its spend counter."""

    kind: str
    name: str
    quota: Quota


@dataclass(frozen=True, slots=True)
class CallerLimits:
    subjects: tuple[Subject, ...] = ()
    models: tuple[tuple[str, ...], ...] = ()
    #: The managed key the caller presented (its public id), for logs and the admin API.
    key_id: str | None = None

    def allows(self, model: str) -> bool:
        return all(allowed(model, patterns) for patterns in self.models)


def allowed(model: str, patterns: Iterable[str]) -> bool:
    """Whether ``model`` matches one of ``patterns`` (globs: ``*``, ``?``, ``[...]``)."""
    return any(fnmatchcase(model, pattern) for pattern in patterns)


def limits_of(caller: Caller) -> CallerLimits | None:
    limits = caller.extra.get("limits")
    return limits if isinstance(limits, CallerLimits) else None


def limited_caller(
    id: str,
    *,
    models: Sequence[str] | None = None,
    rpm: int = 0,
    tpm: int = 0,
    daily: Decimal | str | float | None = None,
    monthly: Decimal | str | float | None = None,
    team: str | None = None,
    team_quota: Quota | None = None,
    **caller: Any,
) -> Caller:
    """A :class:`Caller` with limits of its own, for a host's auth hook.

    ``models`` are glob patterns (``None``: every model); ``rpm``/``tpm``/``daily``/``monthly``
    are the caller's own (its owner subject: the same budget counter as the caller's configured
    budget, whichever is stricter); ``team`` with ``team_quota`` adds a team's limits.
    ``caller`` passes on to :class:`Caller` (``priority``, ``admin``, ``extra``...).

    :raises ValueError: for a negative or non-numeric limit.
    """
    quota = Quota.from_dict({"rpm": rpm, "tpm": tpm, "daily": daily, "monthly": monthly})
    subjects = [Subject("owner", id, quota)]
    if team is not None:
        subjects.append(Subject("team", f"team:{team}", team_quota or Quota()))
    limits = CallerLimits(tuple(subjects), (tuple(models),) if models is not None else ())
    extra = {**caller.pop("extra", {}), "limits": limits}
    return Caller(id=id, extra=extra, **caller)
