"""Relay API keys: make one, and the config entry that stores only its hash.

    python -m asgi_ai_relay.keys create --caller team-a [--admin] [--priority high]

prints the new key once (hand it to the caller; it cannot be shown again) and the ``api_keys``
entry to add to the relay's configuration, in TOML and as a Python mapping (Django, Flask).
"""

from __future__ import annotations

import argparse
import hashlib
import secrets
import sys
from collections.abc import Sequence

__all__ = ["config_entry", "key_hash", "main", "new_key"]

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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m asgi_ai_relay.keys", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create", help="make a key and print its config entry")
    create.add_argument("--caller", required=True, help="the caller id the key stands for")
    create.add_argument("--admin", action="store_true", help="may read every caller's usage")
    create.add_argument("--priority", choices=PRIORITIES, default="normal")
    args = parser.parse_args(argv)
    key = new_key()
    entry = config_entry(key, args.caller, admin=args.admin, priority=args.priority)
    out = sys.stdout
    out.write(f"New relay key for {args.caller} (shown once; give it to the caller now):\n\n    {key}\n\n")
    out.write(f"Add to api_keys in the relay config (TOML):\n\n    {_toml(entry)}\n\n")
    out.write(f"or, in Django's AI_RELAY / Flask's app.config['AI_RELAY']:\n\n    {entry!r}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
