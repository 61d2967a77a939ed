"""The Claude Code binaries the tests run: the pinned older release (``CLAUDE_CODE_BIN``, or
``claude`` on PATH) and the current one (``CLAUDE_CODE_CURRENT_BIN``); .ci/run installs both
from npm. A test parametrized on :data:`RELEASES` skips, with the reason, when one is missing."""

from __future__ import annotations

import os
import shutil

import pytest

__all__ = ["RELEASES", "claude_binary"]

#: Release name -> the environment variable naming its binary.
_VARIABLES = {"2.1.197": "CLAUDE_CODE_BIN", "current": "CLAUDE_CODE_CURRENT_BIN"}


def _binary(release: str) -> str | None:
    found = os.environ.get(_VARIABLES[release])
    return found or (shutil.which("claude") if release == "2.1.197" else None)


#: One pytest parameter per release, skipped when its binary is not installed.
RELEASES = [
    pytest.param(release, id=f"claude-{release}", marks=pytest.mark.skipif(
        _binary(release) is None, reason=f"Claude Code {release} is not installed (set {_VARIABLES[release]})"))
    for release in _VARIABLES
]


def claude_binary(release: str) -> str:
    found = _binary(release)
    assert found is not None
    return found
