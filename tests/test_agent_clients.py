"""Real agent clients pointed at the relay, with the fake upstream behind it.

* the OpenAI Agents SDK, in Chat Completions mode and in its default (Responses) mode, driving
  OpenAI-, Anthropic- and Gemini-backed models through a tool call and its result;
* Claude Code (Anthropic format, its own CLI binary) driving OpenAI-, Gemini- and
  Anthropic-backed models through a tool call (``Read``) and its result, at the pinned older
  release and the current one (see :mod:`tests.claude_code`: ``CLAUDE_CODE_BIN``,
  ``CLAUDE_CODE_CURRENT_BIN``; ``npm install @anthropic-ai/claude-code``); it needs no network
  beyond 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from starlette.applications import Starlette

from asgi_ai_relay import Relay, RelayMiddleware
from tests.claude_code import RELEASES, claude_binary
from tests.live import LiveServer
from tests.test_formats_e2e import config


@pytest.fixture
def relay(upstream):
    return Relay(config(upstream))


@pytest.fixture
def server(relay):
    with LiveServer(RelayMiddleware(Starlette(), relay=relay)) as live:
        yield live


API = {"an": "anthropic", "ge": "gemini", "oa": "openai"}
#: The Agents SDK's two ways of calling a model, and the relay endpoint each one reaches.
SDK_MODES = {"chat": ("OpenAIChatCompletionsModel", "chat.completions"), "responses": ("OpenAIResponsesModel", "responses")}


@pytest.mark.parametrize("mode", sorted(SDK_MODES))
@pytest.mark.parametrize("provider", ["an", "ge", "oa"])
async def test_openai_agents_sdk_runs_a_tool_loop(server, upstream, relay, provider, mode):
    """Chat Completions mode and the SDK's default (Responses) mode, to every upstream format."""
    agents = pytest.importorskip("agents")
    from openai import AsyncOpenAI

    agents.set_tracing_disabled(True)
    seen: list[str] = []

    @agents.function_tool
    def lookup_weather(city: str) -> str:
        """The weather in a city."""
        seen.append(city)
        return f"sunny in {city}"

    model_class, endpoint = SDK_MODES[mode]
    client = AsyncOpenAI(base_url=f"{server.url}/ai/v1", api_key="client-key", max_retries=0)
    model = getattr(agents, model_class)(model=f"m-{provider}", openai_client=client)
    agent = agents.Agent(name="weather", instructions="Use the tool.", tools=[lookup_weather], model=model)
    result = await agents.Runner.run(agent, "Paris")
    assert seen == ["Paris"]
    assert result.final_output == "Echo: Paris"
    rows = relay.ledger.rows()
    assert [(r.endpoint, r.status) for r in rows] == [(endpoint, 200)] * 2
    assert all(r.completion_tokens > 0 for r in rows)
    assert upstream.requests[-1].api == API[provider]
    last = upstream.requests[-1].json
    if provider == "oa":
        assert last["messages"][-1] == {"role": "tool", "tool_call_id": last["messages"][-2]["tool_calls"][0]["id"], "content": "sunny in Paris"}


@pytest.mark.parametrize("release", RELEASES)
@pytest.mark.parametrize("provider", ["oa", "ge", "an"])
def test_claude_code_runs_a_tool_loop(server, upstream, relay, provider, release, tmp_path):
    target = tmp_path / "notes.txt"
    target.write_text("relay notes\n")
    model = f"m-{provider}"
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "ANTHROPIC_BASE_URL": f"{server.url}/ai",
        "ANTHROPIC_API_KEY": "client-key",
        "ANTHROPIC_MODEL": model,
        "ANTHROPIC_DEFAULT_HAIKU_MODEL": model,
        "ANTHROPIC_SMALL_FAST_MODEL": model,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_TELEMETRY": "1",
    }
    done = subprocess.run(
        [claude_binary(release), "-p", str(target), "--output-format", "json", "--tools", "Read"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    outcome = json.loads(done.stdout)
    assert outcome["is_error"] is False and outcome["num_turns"] == 2
    assert outcome["result"].startswith("Echo: ") and outcome["result"].endswith(str(target))
    messages = [r for r in relay.ledger.rows() if r.endpoint == "messages"]
    assert [r.status for r in messages] == [200, 200] and all(r.model == model for r in messages)
    # The Read tool ran on the fake's call (the fake fills every string argument with the prompt)
    # and its result went back upstream, answering that call, in the provider's format.
    last = dict(upstream.last_request.json)
    if provider != "ge":  # the current release puts a system turn after the last user turn
        turns = list(last["messages"])
        while turns[-1]["role"] in ("system", "developer"):
            turns.pop()
        last["messages"] = turns
    if provider == "oa":
        call = last["messages"][-2]["tool_calls"][0]
        assert call["function"]["name"] == "Read"
        assert last["messages"][-1]["role"] == "tool" and last["messages"][-1]["tool_call_id"] == call["id"]
    elif provider == "ge":
        assert last["contents"][-2]["parts"][-1]["functionCall"]["name"] == "Read"
        assert last["contents"][-1]["parts"][0]["functionResponse"]["name"] == "Read"
    else:
        call = last["messages"][-2]["content"][-1]
        assert call["type"] == "tool_use" and call["name"] == "Read"
        assert last["messages"][-1]["content"][0]["tool_use_id"] == call["id"]
