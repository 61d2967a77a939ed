"""The base of the config reader: one table of the config and its typed, validated values."""

from __future__ import annotations

import os
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any, Self

from ..errors import ConfigurationError
from .schema import CAPABILITIES, Secret


class _Table:
    """Reads one table of the config, knowing its dotted path for error messages.

    :raises ConfigurationError: when the value at ``path`` is not a table.
    """

    def __init__(self, data: Any, path: str) -> None:
        if not isinstance(data, Mapping):
            raise ConfigurationError(f"{path or 'config'}: expected a table, got {type(data).__name__}")
        self.data = data
        self.path = path


    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def only(self, *allowed: str) -> None:
        unknown = sorted(set(self.data) - set(allowed))
        if unknown:
            raise ConfigurationError(
                f"{self.key(unknown[0])}: unknown key (allowed here: {', '.join(sorted(allowed))})"
            )

    def sub(self, name: str) -> Self:
        return type(self)(self.data.get(name, {}), self.key(name))

    def get(self, name: str, kind: type | tuple[type, ...], default: Any) -> Any:
        value = self.data.get(name, default)
        if value is default:
            return value
        if isinstance(value, bool) and kind in (int, float, (int, float)):
            raise ConfigurationError(f"{self.key(name)}: expected a number, got a boolean")
        if not isinstance(value, kind):
            expected = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            raise ConfigurationError(f"{self.key(name)}: expected {expected}, got {type(value).__name__}")
        return value

    def number(self, name: str, default: float) -> float:
        value = float(self.get(name, (int, float), default))
        if not value > 0:
            raise ConfigurationError(f"{self.key(name)}: must be greater than 0")
        return value

    def integer(self, name: str, default: int, *, minimum: int = 1) -> int:
        value = int(self.get(name, int, default))
        if value < minimum:
            raise ConfigurationError(f"{self.key(name)}: must be at least {minimum}")
        return value

    def decimal(self, name: str, default: Decimal | None) -> Decimal | None:
        value = self.data.get(name, default)
        if value is default:
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float, str, Decimal)):
            raise ConfigurationError(f"{self.key(name)}: expected a number")
        try:
            result = Decimal(str(value))
        except InvalidOperation as exc:
            raise ConfigurationError(f"{self.key(name)}: not a number: {value!r}") from exc
        if result < 0 or not result.is_finite():
            raise ConfigurationError(f"{self.key(name)}: must be a finite number >= 0")
        return result

    def secret(self, name: str) -> Secret | None:
        value = self.get(name, str, None)
        if value is None:
            return None
        if value.startswith("env:"):
            var = value[4:]
            if var not in os.environ:
                raise ConfigurationError(f"{self.key(name)}: environment variable {var} is not set")
            return Secret(os.environ[var], f"env:{var}")
        return Secret(value)

    def headers(self, name: str) -> dict[str, str]:
        table = self.get(name, Mapping, {})
        out: dict[str, str] = {}
        for header, value in table.items():
            if not isinstance(value, str) or not header or any(c in header + value for c in "\r\n"):
                raise ConfigurationError(f"{self.key(name)}.{header}: header values must be single-line strings")
            out[header.lower()] = value
        return out

    def choice(self, name: str, choices: tuple[str, ...]) -> str:
        value = self.get(name, str, choices[0])
        if value not in choices:
            raise ConfigurationError(f"{self.key(name)}: one of {', '.join(choices)}, not {value!r}")
        return str(value)

    def names(self, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        values = self.get(name, list, list(default))
        if not all(isinstance(v, str) for v in values):
            raise ConfigurationError(f"{self.key(name)}: expected a list of model names")
        return tuple(values)

    def capabilities(self, name: str) -> frozenset[str]:
        values = self.names(name, ())
        for value in values:
            if value not in CAPABILITIES:
                raise ConfigurationError(f"{self.key(name)}: unknown capability {value!r} (one of {', '.join(CAPABILITIES)})")
        return frozenset(values)
