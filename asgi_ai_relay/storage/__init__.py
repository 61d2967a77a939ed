"""Backends chosen by URI: ``memory://`` and ``sqlite:///path`` are built in; others are
imported only when named, so the embedded defaults need nothing installed."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

from ..errors import ConfigurationError
from .base import LEDGER_COLUMNS, Ledger, LedgerRow
from .memory import MemoryLedger

__all__ = ["LEDGER_COLUMNS", "Ledger", "LedgerRow", "MemoryLedger", "ledger_from_uri"]


def _sqlite(uri: str) -> Ledger:
    from .sqlite import SQLiteLedger

    # sqlite:///relative.db and sqlite:////absolute/path.db, as SQLAlchemy spells them.
    return SQLiteLedger(uri[len("sqlite:///") :])


LEDGER_SCHEMES: dict[str, Callable[[str], Ledger]] = {
    "memory": lambda uri: MemoryLedger(),
    "sqlite": _sqlite,
}


def ledger_from_uri(uri: str) -> Ledger:
    """The ledger for ``uri``.

    :raises ConfigurationError: for a scheme no backend serves.
    """
    scheme = urlsplit(uri).scheme
    factory = LEDGER_SCHEMES.get(scheme)
    if factory is None:
        raise ConfigurationError(
            f"storage.ledger: unknown scheme {scheme!r} in {uri!r} (known: {', '.join(sorted(LEDGER_SCHEMES))})"
        )
    return factory(uri)
