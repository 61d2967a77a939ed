"""The documents name real tests: every ``tests/file.py::test_name`` in ``docs/guarantees.md`` (and ``docs/pricing.md``)
is one the suite collects, so a test renamed or removed cannot leave a guarantee unproved."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NAMED = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")


def named_tests(document: Path) -> set[tuple[str, str]]:
    return set(NAMED.findall(document.read_text(encoding="utf-8")))


def collected(files: set[str]) -> set[tuple[str, str]]:
    """What pytest collects from ``files``, one (file, test function) per test, parameters aside."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *sorted(files)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    found = set()
    for line in result.stdout.splitlines():
        path, sep, name = line.partition("::")
        if sep:
            found.add((path, name.split("::")[-1].split("[")[0]))
    return found


def test_every_test_the_guarantees_name_exists():
    named = named_tests(ROOT / "docs" / "guarantees.md")
    assert len(named) > 50
    missing = sorted(named - collected({path for path, _ in named}))
    assert missing == [], "named in docs/guarantees.md but not collected: " + ", ".join(f"{p}::{n}" for p, n in missing)


def test_the_readme_links_the_guarantees_and_scaling():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "docs/guarantees.md" in readme
    assert "## Scaling out" in readme and "docs/scaling.md" in readme


def test_every_test_the_pricing_page_names_exists():
    named = named_tests(ROOT / "docs" / "pricing.md")
    assert len(named) > 15
    missing = sorted(named - collected({path for path, _ in named}))
    assert missing == [], "named in docs/pricing.md but not collected: " + ", ".join(f"{p}::{n}" for p, n in missing)
    assert "docs/pricing.md" in (ROOT / "README.md").read_text(encoding="utf-8")
