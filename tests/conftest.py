"""Fixtures shared by the whole suite: the fake upstream, relay configs, real services."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fake_upstream import FakeUpstream
from tests.secret_scan import SecretScanner, install

UPSTREAM_KEY = "sk-upstream-secret-0123456789"
RELAY_KEY = "rk-relay-key-for-tests"

#: Set by .ci/run: a test that needs Redis or PostgreSQL fails instead of skipping.
REQUIRE_SERVICES = os.environ.get("RELAY_TEST_REQUIRE_SERVICES") == "1"


@pytest.fixture(scope="session")
def _upstream_server() -> Iterator[FakeUpstream]:
    with FakeUpstream(api_key=UPSTREAM_KEY) as upstream:
        yield upstream


@pytest.fixture(scope="session", autouse=True)
def _secret_scanner() -> Iterator[SecretScanner]:
    scanner = SecretScanner({"UPSTREAM_KEY": UPSTREAM_KEY, "RELAY_KEY": RELAY_KEY})
    with pytest.MonkeyPatch.context() as patch:
        handler = install(scanner, patch.setattr)
        try:
            yield scanner
        finally:
            logging.getLogger().removeHandler(handler)


@pytest.fixture(autouse=True)
def secret_scan(_secret_scanner: SecretScanner) -> Iterator[SecretScanner]:
    """Fails the test when a watched secret showed in a log record, an answer of the relay, a
    ledger row, or (the caller's key) a request the fake upstream received. A test that
    configures a secret of its own adds it: ``secret_scan.add("NAME", value)``."""
    scanner = _secret_scanner
    scanner.findings.clear()
    watched = dict(scanner.secrets)
    yield scanner
    findings, scanner.findings[:] = list(scanner.findings), []
    scanner.secrets = watched
    scanner.content.clear()
    if findings:
        pytest.fail("secrets leaked:\n" + "\n".join(f"  {where}: {name} in {excerpt!r}" for where, name, excerpt in findings))


@pytest.fixture
def upstream(_upstream_server: FakeUpstream, _secret_scanner: SecretScanner) -> Iterator[FakeUpstream]:
    """The fake provider (a real HTTP server on 127.0.0.1), reset for each test."""
    _upstream_server.reset()
    if not _upstream_server.running:
        _upstream_server.start()
    yield _upstream_server
    _secret_scanner.scan_requests(_upstream_server.requests, ("RELAY_KEY",))
    _upstream_server.reset()
    if not _upstream_server.running:
        _upstream_server.start()


@pytest.fixture(autouse=True)
def _upstream_key_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_UPSTREAM_KEY", UPSTREAM_KEY)
    monkeypatch.setenv("TEST_RELAY_KEY", RELAY_KEY)


def make_config(upstream: FakeUpstream | None = None, **overrides: Any) -> dict[str, Any]:
    """A relay config whose ``test-model`` goes to the fake upstream (OpenAI format)."""
    config: dict[str, Any] = {"storage": {"ledger": "memory://"}}
    if upstream is not None:
        config["providers"] = {
            "up": {"kind": "openai_compatible", "base_url": f"{upstream.url}/v1", "api_key": "env:TEST_UPSTREAM_KEY"},
        }
        config["models"] = {
            "test-model": {"provider": "up", "upstream": "gpt-4o-mini", "price": {"input": 2.5, "output": 10}},
        }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return config


def _service_unavailable(name: str, url: str, exc: Exception) -> None:
    message = f"{name} is not reachable at {url} ({exc}); start it or set the URL"
    if REQUIRE_SERVICES:
        pytest.fail(message + " (RELAY_TEST_REQUIRE_SERVICES=1 makes this a failure)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def redis_url() -> str:
    """A real Redis; skips (or fails under CI) when there is none."""
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    try:
        import redis

        client = redis.Redis.from_url(url, socket_connect_timeout=2)
        client.ping()
        client.close()
    except Exception as exc:  # noqa: BLE001 - any failure means "not available"
        _service_unavailable("Redis", url, exc)
    return url


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """A real PostgreSQL; skips (or fails under CI) when there is none."""
    url = os.environ.get("POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
    try:
        import psycopg

        with psycopg.connect(url, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:  # noqa: BLE001
        _service_unavailable("PostgreSQL", url, exc)
    return url
