"""Static relay keys: make one, and the ``api_keys`` config entry that stores only its hash.

    python -m asgi_ai_relay.keys create --caller team-a [--admin] [--priority high]

prints the new key once (hand it to the caller; it cannot be shown again) and the ``api_keys``
entry to add to the relay's configuration, in TOML and as a Python mapping (Django, Flask).
"""

from __future__ import annotations

import hashlib
import secrets
import sys

__all__ = ["PRIORITIES", "config_entry", "key_hash", "new_key", "static_create"]

PRIORITIES = ("critical", "high", "normal", "low")


def new_key() -> str:
    """A new random relay key (256 bits)."""
    return "rk-" + secrets.token_urlsafe(32)


def key_hash(key: str) -> str:
    """The form ``api_keys`` stores: ``sha256:<hex>``."""
    return "sha256:" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def config_entry(key: str, caller: str, *, admin: bool = False, priority: str = "normal") -> dict[str, object]:
    """The ``api_keys`` entry for ``key``, holding its hash, never the key."""
    entry: dict[str, object] = {"hash": key_hash(key), "caller": caller}
    if admin:
        entry["admin"] = True
    if priority != "normal":
        entry["priority"] = priority
    return entry


def _toml(entry: dict[str, object]) -> str:
    def value(v: object) -> str:
        return "true" if v is True else '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'

    return "{ " + ", ".join(f"{k} = {value(v)}" for k, v in entry.items()) + " }"


def static_create(caller: str, admin: bool = False, priority: str = "normal") -> int:
    """Print a new static key once, and its ``api_keys`` entry (TOML and a Python mapping)."""
    key = new_key()
    entry = config_entry(key, caller, admin=admin, priority=priority)
    out = sys.stdout
    out.write(f"New relay key for {caller} (shown once; give it to the caller now):\n\n    {key}\n\n")
    out.write(f"Add to api_keys in the relay config (TOML):\n\n    {_toml(entry)}\n\n")
    out.write(f"or, in Django's AI_RELAY / Flask's app.config['AI_RELAY']:\n\n    {entry!r}\n")
    return 0
