"""In-process backends: nothing to install, nothing shared between workers."""

from __future__ import annotations

from .base import LedgerRow

__all__ = ["MemoryLedger"]


class MemoryLedger:
    """Keeps rows in a list; for tests and for hosts that do not want a file."""

    def __init__(self) -> None:
        self._rows: list[LedgerRow] = []

    def record(self, row: LedgerRow) -> None:
        self._rows.append(row)

    def flush(self) -> None:
        return None

    def rows(self) -> list[LedgerRow]:
        return list(self._rows)

    def close(self) -> None:
        return None
