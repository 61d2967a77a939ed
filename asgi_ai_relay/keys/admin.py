"""Managing keys: create (the key shown once), list, edit limits, revoke, rotate, and the limits
of owners and teams. The CLI (:mod:`.cli`) and the admin API (:mod:`.api`) both go through
:class:`KeyAdmin`, so both validate the same way.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from ..policy import Quota
from .directory import KeyDirectory
from .record import Hasher, KeyRecord, SubjectLimits
from .store import KeyStore

__all__ = ["EDITABLE", "KeyAdmin", "NoSuchKey", "parse_changes"]

#: What a key's edit may change.
EDITABLE = ("name", "team", "models", "rpm", "tpm", "daily", "monthly", "expires_at", "enabled", "metadata")


class NoSuchKey(LookupError):
    pass


def _expiry(value: object) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError("expires_at: a Unix time or an ISO 8601 date-time")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            moment = datetime.fromisoformat(value)
            return moment.timestamp()
    raise ValueError("expires_at: a Unix time or an ISO 8601 date-time")


def _models(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [m.strip() for m in value.split(",") if m.strip()]
    if not isinstance(value, list | tuple) or not all(isinstance(m, str) and m for m in value):
        raise ValueError("models: a list of model names or glob patterns")
    return tuple(value)


def parse_changes(data: Mapping[str, Any], allowed: tuple[str, ...] = EDITABLE) -> dict[str, Any]:
    """Record fields from a JSON object or the CLI's options (only those given).

    :raises ValueError: naming the field that is not valid.
    """
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise ValueError(f"unknown field {unknown[0]!r} (known: {', '.join(allowed)})")
    out: dict[str, Any] = {}
    for name in ("name", "team"):
        if name in data:
            value = data[name]
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{name}: a string")
            out[name] = value or ("" if name == "name" else None)
    if "models" in data:
        out["models"] = _models(data["models"] or [])
    if "expires_at" in data:
        out["expires_at"] = _expiry(data["expires_at"])
    if "enabled" in data:
        if not isinstance(data["enabled"], bool):
            raise ValueError("enabled: true or false")
        out["enabled"] = data["enabled"]
    if "metadata" in data:
        if not isinstance(data["metadata"], dict):
            raise ValueError("metadata: an object")
        out["metadata"] = dict(data["metadata"])
    limits = {k: data[k] for k in ("rpm", "tpm", "daily", "monthly") if k in data}
    if limits:
        for name in ("rpm", "tpm"):
            if isinstance(limits.get(name), bool) or not isinstance(limits.get(name, 0), int | None):
                raise ValueError(f"{name}: a whole number")
        out["limits"] = limits
    return out


def _with_limits(quota: Quota, limits: Mapping[str, Any]) -> Quota:
    try:
        return Quota.from_dict({**quota.as_dict(), **limits})
    except (ValueError, ArithmeticError) as exc:
        raise ValueError(f"limits: {exc}") from exc


class KeyAdmin:
    """:param directory: this relay's lookups, told of every change at once (optional)."""

    def __init__(self, store: KeyStore, hasher: Hasher, directory: KeyDirectory | None = None) -> None:
        self.store = store
        self.hasher = hasher
        self.directory = directory

    async def _changed(self, *digests: str) -> None:
        if self.directory is not None:
            for digest in digests:
                self.directory.invalidate(digest)

    async def create(self, owner: str, data: Mapping[str, Any]) -> tuple[KeyRecord, str]:
        """A new key for ``owner``. :raises ValueError: for a field that is not valid."""
        if not isinstance(owner, str) or not owner:
            raise ValueError("owner: the caller id (host user id) the key belongs to")
        changes = parse_changes(data)
        limits = changes.pop("limits", {})
        record, key = KeyRecord.create(self.hasher, owner, **changes)
        record = replace(record, quota=_with_limits(record.quota, limits))
        await self.store.put(record)
        await self._changed(record.digest)
        return record, key

    async def get(self, key_id: str) -> KeyRecord:
        record = await self.store.get(key_id)
        if record is None:
            raise NoSuchKey(key_id)
        return record

    async def update(self, key_id: str, data: Mapping[str, Any]) -> KeyRecord:
        """:raises NoSuchKey, ValueError:"""
        record = await self.get(key_id)
        changes = parse_changes(data)
        limits = changes.pop("limits", None)
        if limits is not None:
            changes["quota"] = _with_limits(record.quota, limits)
        if changes.get("enabled") is True:
            changes["revoked_at"] = None
        elif changes.get("enabled") is False and record.enabled:
            changes["revoked_at"] = time.time()
        updated = replace(record, **changes)
        await self.store.put(updated)
        await self._changed(record.digest)
        return updated

    async def revoke(self, key_id: str) -> KeyRecord:
        return await self.update(key_id, {"enabled": False})

    async def rotate(self, key_id: str) -> tuple[KeyRecord, str]:
        """A new secret for the key (same id and limits); the old one stops working."""
        record = await self.get(key_id)
        rotated, key = record.rotated(self.hasher)
        await self.store.put(rotated)
        await self._changed(record.digest, rotated.digest)
        return rotated, key

    async def set_limits(self, subject: str, data: Mapping[str, Any]) -> SubjectLimits:
        """The limits of ``owner:<id>`` or ``team:<name>``. :raises ValueError:"""
        kind, _, name = subject.partition(":")
        if kind not in ("owner", "team") or not name:
            raise ValueError("subject: owner:<id> or team:<name>")
        changes = parse_changes(data, ("rpm", "tpm", "daily", "monthly"))
        current = await self.store.limits(subject)
        quota = _with_limits(current.quota if current is not None else Quota(), changes.get("limits", {}))
        limits = SubjectLimits(subject, quota)
        await self.store.put_limits(limits)
        await self._changed("*")
        return limits
