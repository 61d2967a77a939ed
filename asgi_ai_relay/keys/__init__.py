"""Relay API keys: the configuration's static ``api_keys`` and managed keys in a store.

Managed keys (``storage.keys``) belong to an owner (a host user id) and optionally a team, and
carry the models they may call, RPM/TPM, daily/monthly budgets, an expiry, an enabled flag and
metadata. A request made with one runs as its owner, with the key's, the owner's and the team's
limits all applied (:mod:`asgi_ai_relay.policy`). See ``docs/keys.md``.
"""

from __future__ import annotations

from .admin import KeyAdmin, NoSuchKey
from .cli import main
from .directory import KeyDirectory, key_caller
from .record import Hasher, KeyRecord, SubjectLimits, new_secret
from .static import config_entry, key_hash, new_key
from .store import KeyStore, MemoryKeys, keys_from_uri

__all__ = [
    "Hasher",
    "KeyAdmin",
    "KeyDirectory",
    "KeyRecord",
    "KeyStore",
    "MemoryKeys",
    "NoSuchKey",
    "SubjectLimits",
    "config_entry",
    "key_caller",
    "key_hash",
    "keys_from_uri",
    "main",
    "new_key",
    "new_secret",
]
