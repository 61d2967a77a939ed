"""Relay keys: stored hashed, made by a command that shows the key once, never kept in clear."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import httpx
import pytest

from asgi_ai_relay import Relay, RelayMiddleware
from asgi_ai_relay.errors import ConfigurationError
from asgi_ai_relay.keys import config_entry, key_hash, new_key
from tests.conftest import RELAY_KEY

ROOT = Path(__file__).resolve().parents[2]


def create(*args):
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'integrations'}"}
    done = subprocess.run(
        [sys.executable, "-m", "asgi_ai_relay.keys", "create", *args], capture_output=True, text=True, env=env, timeout=30, check=True
    )
    return done.stdout


async def models(config, key):
    relay = Relay(config)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(RelayMiddleware(relay=relay)), base_url="http://r") as http:
        response = await http.get("/ai/v1/models", headers={"authorization": f"Bearer {key}"} if key else {})
    return response, relay


async def test_create_command_shows_the_key_once_and_a_config_line_with_its_hash(tmp_path):
    out = create("--caller", "team-a", "--priority", "high")
    key = next(line.strip() for line in out.splitlines() if line.strip().startswith("rk-"))
    assert out.count(key) == 1 and len(key) > 40
    toml_line = next(line.strip() for line in out.splitlines() if line.strip().startswith("{ hash"))
    assert key not in toml_line and key_hash(key) in toml_line
    (tmp_path / "relay.toml").write_text(f"require_auth = true\napi_keys = [{toml_line}]\n[storage]\nledger = \"memory://\"\n")
    config = str(tmp_path / "relay.toml")
    ok, relay = await models(config, key)
    assert ok.status_code == 200
    (row,) = relay.ledger.rows()
    assert row.caller == "team-a"
    assert relay.keys.lookup(key).priority == "high"
    assert (await models(config, key + "x"))[0].status_code == 401
    assert (await models(config, key_hash(key)))[0].status_code == 401  # the hash is not a key
    assert (await models(config, None))[0].status_code == 401


def test_two_keys_are_never_the_same():
    assert len({new_key() for _ in range(100)}) == 100


def test_clear_keys_are_not_kept_either():
    relay = Relay({"api_keys": [{"key": "env:TEST_RELAY_KEY", "caller": "a"}, {"key": "rk-literal-key", "caller": "b"}]})
    kept = repr(relay.config) + repr(vars(relay.keys))
    assert RELAY_KEY not in kept and "rk-literal-key" not in kept
    assert all(len(digest) == 32 for digest in relay.keys._callers)
    assert relay.keys.lookup(RELAY_KEY).id == "a" and relay.keys.lookup("rk-literal-key").id == "b"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"caller": "a"}, "api_keys\\[0\\].key: required"),
        ({"key": "k", "hash": key_hash("k"), "caller": "a"}, "not both"),
        ({"hash": "md5:abcd", "caller": "a"}, "api_keys\\[0\\].hash"),
        ({"hash": "sha256:xyz", "caller": "a"}, "api_keys\\[0\\].hash"),
        ({"hash": "sha256:" + "ab" * 31, "caller": "a"}, "api_keys\\[0\\].hash"),
    ],
)
def test_bad_key_entries_are_named(entry, message):
    with pytest.raises(ConfigurationError, match=message):
        Relay({"api_keys": [entry]})


def test_config_entry_as_python():
    assert config_entry("rk-x", "ops", admin=True) == {"hash": key_hash("rk-x"), "caller": "ops", "admin": True}
    assert tomllib.loads("k = " + '{ hash = "sha256:00", caller = "a\\"b" }')["k"]["caller"] == 'a"b'
