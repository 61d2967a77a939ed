"""Real Responses API clients pointed at the relay, with the fake upstream behind it (the Agents
SDK in its default, Responses, mode is in ``tests/test_agent_clients.py`` beside its other mode).

* the Codex CLI (``@openai/codex``, its own binary), ``codex exec`` with a custom model provider
  (``wire_api = "responses"``) whose ``base_url`` is the relay on 127.0.0.1. It runs when the
  ``codex`` binary is on PATH or named by ``CODEX_BIN``; it needs no network beyond 127.0.0.1.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.test_agent_clients import API, relay, server  # noqa: F401 - fixtures

def _codex_binary() -> str | None:
    return os.environ.get("CODEX_BIN") or shutil.which("codex")


def _codex(server, tmp_path, model: str, prompt: str) -> subprocess.CompletedProcess[str]:
    home = tmp_path / "codex-home"
    home.mkdir(exist_ok=True)
    (home / "config.toml").write_text(
        f'model = "{model}"\nmodel_provider = "relay"\nweb_search = "disabled"\n\n'
        "[model_providers.relay]\n"
        'name = "relay"\n'
        f'base_url = "{server.url}/ai/v1"\n'
        'wire_api = "responses"\n'
        'env_key = "RELAY_KEY"\n'
    )
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "CODEX_HOME": str(home), "RELAY_KEY": "client-key"}
    binary = _codex_binary()
    assert binary is not None
    return subprocess.run(
        [binary, "exec", "--skip-git-repo-check", "--sandbox", "read-only", "-C", str(tmp_path), prompt],
        env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )


@pytest.mark.skipif(_codex_binary() is None, reason="the Codex CLI is not installed (set CODEX_BIN)")
@pytest.mark.parametrize("provider", ["oa", "an", "ge"])
def test_codex_exec_completes_a_turn_with_a_tool_round_trip(server, upstream, relay, provider, tmp_path):
    done = _codex(server, tmp_path, f"m-{provider}", "Say hello to the relay")
    assert done.returncode == 0, done.stderr[-2000:]
    # The fake upstream calls Codex's first tool; Codex answers the call, and the fake then echoes.
    assert "Echo: " in done.stdout and "Say hello to the relay" in done.stdout
    rows = [r for r in relay.ledger.rows() if r.endpoint == "responses"]
    assert len(rows) >= 2 and all(r.status == 200 and r.stream and r.completion_tokens > 0 for r in rows)
    first, last = upstream.requests[0], upstream.requests[-1]
    assert first.api == last.api == API[provider] and first.stream
    if provider == "oa":
        tools = {t["function"]["name"] for t in first.json["tools"]}
        assert "exec_command" in tools and "close_agent" in tools  # a namespace's tools, each its own
        call_id = last.json["messages"][-2]["tool_calls"][0]["id"]
        assert last.json["messages"][-1]["role"] == "tool" and last.json["messages"][-1]["tool_call_id"] == call_id
    elif provider == "an":
        assert last.json["messages"][-1]["content"][0]["type"] == "tool_result"
    else:
        assert "functionResponse" in last.json["contents"][-1]["parts"][0]
