"""A managed relay key as stored: its digest (never the key), a short visible prefix, its owner
and team, the models it may call, its limits, expiry and state.

Keys look like ``rk-<43 url-safe characters>`` (256 random bits). The store keeps the SHA-256
of the key, or its HMAC-SHA256 under ``keys.secret`` when one is configured (then a copy of the
store alone cannot even confirm a guessed key), plus the first :data:`PREFIX_CHARS` characters
so a person can recognise a key in a list.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ..policy import Quota

__all__ = ["KEY_PREFIX", "PREFIX_CHARS", "Hasher", "KeyRecord", "SubjectLimits", "new_secret"]

#: How every relay key begins.
KEY_PREFIX = "rk-"
#: How much of a key stays visible: ``rk-`` and 8 characters.
PREFIX_CHARS = 11


def new_secret() -> str:
    """A new random relay key (256 bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


class Hasher:
    """The digest a store keeps for a key: SHA-256, or HMAC-SHA256 under ``secret``."""

    __slots__ = ("_secret",)

    def __init__(self, secret: str | None = None) -> None:
        self._secret = secret.encode("utf-8") if secret else None

    def digest(self, key: str) -> str:
        data = key.encode("utf-8", "surrogatepass")
        if self._secret is None:
            return hashlib.sha256(data).hexdigest()
        return hmac.new(self._secret, data, hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """One managed key. ``models`` are glob patterns (empty: every model); ``expires_at`` and
    the times are Unix seconds."""

    id: str
    digest: str
    prefix: str
    owner: str
    team: str | None = None
    name: str = ""
    models: tuple[str, ...] = ()
    quota: Quota = field(default_factory=Quota)
    expires_at: float | None = None
    enabled: bool = True
    metadata: Mapping[str, Any] = field(default_factory=dict)
    created_at: float = 0.0
    revoked_at: float | None = None

    @classmethod
    def create(cls, hasher: Hasher, owner: str, **fields: Any) -> tuple[KeyRecord, str]:
        """A new record and its key (the only time the key exists in clear)."""
        key = new_secret()
        record = cls(id="key_" + secrets.token_hex(8), digest=hasher.digest(key), prefix=key[:PREFIX_CHARS],
                     owner=owner, created_at=time.time(), **fields)
        return record, key

    def rotated(self, hasher: Hasher) -> tuple[KeyRecord, str]:
        """The same key (id, limits) with a new secret; the old one stops working."""
        key = new_secret()
        return replace(self, digest=hasher.digest(key), prefix=key[:PREFIX_CHARS]), key

    def state(self, now: float | None = None) -> str:
        """``active``, ``revoked`` (disabled) or ``expired``."""
        if not self.enabled:
            return "revoked"
        if self.expires_at is not None and (now if now is not None else time.time()) >= self.expires_at:
            return "expired"
        return "active"

    def public(self) -> dict[str, Any]:
        """What the admin API and the CLI show: everything but the digest."""
        data = self.as_dict()
        del data["digest"]
        data["state"] = self.state()
        return data

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "digest": self.digest, "prefix": self.prefix, "owner": self.owner, "team": self.team,
            "name": self.name, "models": list(self.models), **self.quota.as_dict(), "expires_at": self.expires_at,
            "enabled": self.enabled, "metadata": dict(self.metadata), "created_at": self.created_at,
            "revoked_at": self.revoked_at,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> KeyRecord:
        return cls(
            id=str(data["id"]), digest=str(data["digest"]), prefix=str(data.get("prefix", "")), owner=str(data["owner"]),
            team=data.get("team") or None, name=str(data.get("name") or ""), models=tuple(data.get("models") or ()),
            quota=Quota.from_dict(dict(data)), expires_at=data.get("expires_at"), enabled=bool(data.get("enabled", True)),
            metadata=dict(data.get("metadata") or {}), created_at=float(data.get("created_at") or 0.0),
            revoked_at=data.get("revoked_at"),
        )


@dataclass(frozen=True, slots=True)
class SubjectLimits:
    """The limits of an owner (``owner:<id>``) or a team (``team:<name>``), set apart from any key."""

    subject: str
    quota: Quota = field(default_factory=Quota)

    def as_dict(self) -> dict[str, Any]:
        return {"subject": self.subject, **self.quota.as_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SubjectLimits:
        return cls(str(data["subject"]), Quota.from_dict(dict(data)))
