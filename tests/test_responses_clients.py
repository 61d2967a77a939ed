"""Real Responses API clients pointed at the relay, with the fake upstream behind it.

* the OpenAI Agents SDK in its default mode (``OpenAIResponsesModel``) through a tool loop;
* the Codex CLI (``@openai/codex``, its own binary), ``codex exec`` with a custom model provider
  (``wire_api = "responses"``) whose ``base_url`` is the relay on 127.0.0.1. It runs when the
  ``codex`` binary is on PATH or named by ``CODEX_BIN``; it needs no network beyond 127.0.0.1.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from starlette.applications import Starlette

from asgi_ai_relay import Relay, RelayMiddleware
from tests.live import LiveServer
from tests.test_formats_e2e import config

API = {"an": "anthropic", "ge": "gemini", "oa": "openai"}


@pytest.fixture
def relay(upstream):
    return Relay(config(upstream))


@pytest.fixture
def server(relay):
    with LiveServer(RelayMiddleware(Starlette(), relay=relay)) as live:
        yield live


@pytest.mark.parametrize("provider", ["an", "ge", "oa"])
async def test_openai_agents_sdk_default_mode_runs_a_tool_loop(server, upstream, relay, provider):
    agents = pytest.importorskip("agents")
    from openai import AsyncOpenAI

    agents.set_tracing_disabled(True)
    seen: list[str] = []

    @agents.function_tool
    def lookup_weather(city: str) -> str:
        """The weather in a city."""
        seen.append(city)
        return f"sunny in {city}"

    client = AsyncOpenAI(base_url=f"{server.url}/ai/v1", api_key="client-key", max_retries=0)
    model = agents.OpenAIResponsesModel(model=f"m-{provider}", openai_client=client)
    agent = agents.Agent(name="weather", instructions="Use the tool.", tools=[lookup_weather], model=model)
    result = await agents.Runner.run(agent, "Paris")
    assert seen == ["Paris"]
    assert result.final_output == "Echo: Paris"
    rows = relay.ledger.rows()
    assert [(r.endpoint, r.status) for r in rows] == [("responses", 200)] * 2
    assert all(r.completion_tokens > 0 for r in rows)
    assert upstream.requests[-1].api == API[provider]
    last = upstream.requests[-1].json
    if provider == "oa":
        assert last["messages"][-1] == {"role": "tool", "tool_call_id": last["messages"][-2]["tool_calls"][0]["id"], "content": "sunny in Paris"}


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
