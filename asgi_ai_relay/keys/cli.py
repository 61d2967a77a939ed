"""``python -m asgi_ai_relay.keys``: relay API keys from the command line.

Managed keys (in the store ``storage.keys`` names; ``--config relay.toml`` reads it and
``keys.secret`` from the relay's config, ``--store URI`` names a store directly)::

    python -m asgi_ai_relay.keys --store sqlite:///relay-keys.db create --owner ada --models 'gpt-*' --rpm 60 --daily 5
    python -m asgi_ai_relay.keys --store ... list [--owner ada] [--team research]
    python -m asgi_ai_relay.keys --store ... set KEY_ID --tpm 20000 --monthly 50 --expires 2027-01-01T00:00:00+00:00
    python -m asgi_ai_relay.keys --store ... revoke KEY_ID | rotate KEY_ID | show KEY_ID
    python -m asgi_ai_relay.keys --store ... limits team:research --daily 100

A new or rotated key is printed once; the store keeps only its digest. A static key for the
configuration's ``api_keys`` (no store)::

    python -m asgi_ai_relay.keys create --caller team-a [--admin] [--priority high]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from typing import Any

import orjson

from ..config import load_config
from ..errors import ConfigurationError, StorageError
from .admin import KeyAdmin, NoSuchKey
from .record import Hasher
from .static import PRIORITIES, static_create
from .store import keys_from_uri

__all__ = ["main"]


def _limit_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rpm", type=int, help="requests per minute (0: none)")
    parser.add_argument("--tpm", type=int, help="tokens per minute (0: none)")
    parser.add_argument("--daily", help="USD per UTC day ('' : none)")
    parser.add_argument("--monthly", help="USD per UTC month ('' : none)")


def _key_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", help="a label for people")
    parser.add_argument("--team", help="the team whose limits also apply")
    parser.add_argument("--models", help="comma-separated aliases or glob patterns ('': every model)")
    parser.add_argument("--expires", dest="expires_at", help="ISO 8601 date-time or Unix time ('': never)")
    parser.add_argument("--metadata", help="a JSON object")
    _limit_options(parser)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m asgi_ai_relay.keys", description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--store", help="the key store URI (default: storage.keys of --config)")
    parser.add_argument("--config", help="the relay's TOML config (storage.keys, keys.secret)")
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create", help="make a key (shown once)")
    create.add_argument("--owner", help="the caller id (host user id) a managed key belongs to")
    create.add_argument("--caller", help="a static key for the config's api_keys instead")
    create.add_argument("--admin", action="store_true", help="static key: may read every caller's usage")
    create.add_argument("--priority", choices=PRIORITIES, default="normal", help="static key: its priority")
    _key_options(create)
    listing = commands.add_parser("list", help="the keys (never their secrets)")
    listing.add_argument("--owner")
    listing.add_argument("--team")
    for name, text in (("show", "one key"), ("revoke", "disable a key for good"), ("rotate", "a new secret, same key")):
        commands.add_parser(name, help=text).add_argument("id")
    edit = commands.add_parser("set", help="change a key's limits, models, expiry, state")
    edit.add_argument("id")
    _key_options(edit)
    state = edit.add_mutually_exclusive_group()
    state.add_argument("--enable", dest="enabled", action="store_const", const=True)
    state.add_argument("--disable", dest="enabled", action="store_const", const=False)
    limits = commands.add_parser("limits", help="the limits of owner:<id> or team:<name> (shown without options)")
    limits.add_argument("subject")
    _limit_options(limits)
    return parser


def _changes(args: argparse.Namespace) -> dict[str, Any]:
    names = ("name", "team", "models", "expires_at", "metadata", "rpm", "tpm", "daily", "monthly", "enabled")
    out = {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}
    if "metadata" in out:
        out["metadata"] = orjson.loads(out["metadata"])
    return out


def _admin(args: argparse.Namespace) -> KeyAdmin:
    config = load_config(args.config) if args.config else None
    uri = args.store or (config.storage.keys if config is not None else "") or os.environ.get("RELAY_KEYS_STORE", "")
    if not uri:
        raise ConfigurationError("no key store: give --store URI, or --config with storage.keys set")
    secret = config.keys.secret.get() if config is not None and config.keys.secret is not None else None
    return KeyAdmin(keys_from_uri(uri), Hasher(secret))


def _show(data: Any) -> None:
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")


async def _run(args: argparse.Namespace) -> int:
    admin = _admin(args)
    try:
        command = args.command
        if command == "create":
            record, key = await admin.create(args.owner, _changes(args))
            sys.stdout.write(f"New key {record.id} for {record.owner} (shown once; give it to its owner now):\n\n    {key}\n\n")
            _show(record.public())
        elif command == "rotate":
            record, key = await admin.rotate(args.id)
            sys.stdout.write(f"New secret for {record.id} (shown once; the old one no longer works):\n\n    {key}\n\n")
        elif command == "list":
            _show([r.public() for r in await admin.store.records(args.owner, args.team)])
        elif command == "show":
            _show((await admin.get(args.id)).public())
        elif command == "revoke":
            _show((await admin.revoke(args.id)).public())
        elif command == "set":
            _show((await admin.update(args.id, _changes(args))).public())
        elif command == "limits":
            changes = _changes(args)
            if changes:
                _show((await admin.set_limits(args.subject, changes)).as_dict())
            else:
                found = await admin.store.limits(args.subject)
                _show(found.as_dict() if found is not None else None)
    finally:
        await admin.store.aclose()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "create" and args.owner is None:
        if args.caller is None:
            sys.stderr.write("create: give --owner (a managed key) or --caller (a static key for api_keys)\n")
            return 2
        return static_create(args.caller, args.admin, args.priority)
    try:
        return asyncio.run(_run(args))
    except NoSuchKey as exc:
        sys.stderr.write(f"no key with id {exc.args[0]!r}\n")
    except (ValueError, ConfigurationError, StorageError) as exc:
        sys.stderr.write(f"{exc}\n")
    return 1
