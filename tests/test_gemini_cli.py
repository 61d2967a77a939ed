"""Gemini CLI (``@google/gemini-cli``, its own binary) pointed at the relay's Gemini-native
routes (``GOOGLE_GEMINI_BASE_URL``), with OpenAI-, Anthropic- and Gemini-format fake upstreams
behind it: a text turn and a tool round trip in one non-interactive run (``gemini -p``).

The tool is one the CLI discovers through its own ``tools.discoveryCommand`` (a script that
declares ``keep_note(text)``) and runs through ``tools.callCommand`` (a script that keeps its
arguments in a file), so the test sees that the CLI really ran the call the fake provider made.
It runs when ``GEMINI_CLI_BIN`` names the binary or ``gemini`` is on PATH (``.ci/run`` installs
it from npm); it needs no network beyond 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
from starlette.applications import Starlette

from asgi_ai_relay import Relay, RelayMiddleware
from tests.live import LiveServer
from tests.test_formats_e2e import config

CLIENT_KEY = "client-gemini-cli-key-7f3a"
PROMPT = "Keep this note about the relay"


def _gemini_binary() -> str | None:
    return os.environ.get("GEMINI_CLI_BIN") or shutil.which("gemini")


@pytest.fixture
def relay(upstream):
    settings = config(upstream)
    settings.update(require_auth=True, api_keys=[{"key": CLIENT_KEY, "caller": "gemini-dev"}])
    return Relay(settings)


@pytest.fixture
def server(relay):
    with LiveServer(RelayMiddleware(Starlette(), relay=relay)) as live:
        yield live


def _home(tmp_path):
    """A HOME with the CLI's settings: API-key auth, no telemetry, one discovered tool."""
    (tmp_path / ".gemini").mkdir()
    declaration = {"name": "keep_note", "description": "Keep a note.",
                   "parametersJsonSchema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}}
    discover = tmp_path / "discover.sh"
    discover.write_text(f"#!/bin/sh\necho '{json.dumps([declaration])}'\n")
    call = tmp_path / "call.sh"
    call.write_text(f"#!/bin/sh\ncat > {tmp_path}/kept-$1.json\necho '{{\"kept\": true}}'\n")
    for script in (discover, call):
        script.chmod(0o755)
    settings = {
        "security": {"auth": {"selectedType": "gemini-api-key"}},
        "privacy": {"usageStatisticsEnabled": False},
        "telemetry": {"enabled": False},
        "general": {"disableAutoUpdate": True, "disableUpdateNag": True},
        "tools": {"discoveryCommand": str(discover), "callCommand": str(call), "core": ["discovered_tool_keep_note"]},
    }
    (tmp_path / ".gemini" / "settings.json").write_text(json.dumps(settings))


@pytest.mark.skipif(_gemini_binary() is None, reason="Gemini CLI is not installed (set GEMINI_CLI_BIN)")
@pytest.mark.parametrize("provider", ["oa", "an", "ge"])
def test_gemini_cli_runs_a_tool_loop(server, upstream, relay, provider, tmp_path, secret_scan):
    secret_scan.add("RELAY_KEY", CLIENT_KEY)
    _home(tmp_path)
    model = f"m-{provider}"
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "GOOGLE_GEMINI_BASE_URL": f"{server.url}/ai",
        "GEMINI_API_KEY": CLIENT_KEY,
        "GEMINI_CLI_TRUST_WORKSPACE": "true",
        "NO_COLOR": "1",
    }
    done = subprocess.run(
        [_gemini_binary(), "-m", model, "-p", PROMPT, "--output-format", "json", "--yolo"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-2000:])
    outcome = json.loads(done.stdout[done.stdout.index("{"):])
    # The fake answers "Echo: " + the last user text (the CLI's session context, then the prompt).
    assert outcome["response"].startswith("Echo: ") and outcome["response"].endswith(PROMPT)
    tools = outcome["stats"]["tools"]["byName"]
    assert tools["discovered_tool_keep_note"]["success"] == 1
    kept = json.loads((tmp_path / "kept-keep_note.json").read_text())
    assert kept["text"].endswith(PROMPT)  # the CLI ran the fake provider's call, with its arguments
    rows = relay.ledger.rows()
    assert [(r.endpoint, r.status, r.caller, r.model) for r in rows] == [("streamGenerateContent", 200, "gemini-dev", model)] * 2
    assert all(r.completion_tokens > 0 and r.cost_usd > 0 for r in rows)
    # The tool's result went back upstream in the provider's own format, answering its call.
    last = upstream.last_request
    assert last.api == {"oa": "openai", "an": "anthropic", "ge": "gemini"}[provider]
    body = last.json
    if provider == "oa":
        call = body["messages"][-2]["tool_calls"][0]
        assert call["function"]["name"] == "discovered_tool_keep_note"
        assert body["messages"][-1]["role"] == "tool" and body["messages"][-1]["tool_call_id"] == call["id"]
        assert json.loads(json.loads(body["messages"][-1]["content"])["output"]) == {"kept": True}
    elif provider == "an":
        call = body["messages"][-2]["content"][-1]
        assert call["type"] == "tool_use" and call["name"] == "discovered_tool_keep_note"
        result = body["messages"][-1]["content"][0]
        assert result["type"] == "tool_result" and result["tool_use_id"] == call["id"]
    else:
        assert last.path.endswith(":streamGenerateContent") and last.query == {"alt": "sse"}
        assert body["contents"][-2]["parts"][-1]["functionCall"]["name"] == "discovered_tool_keep_note"
        assert body["contents"][-1]["parts"][0]["functionResponse"]["name"] == "discovered_tool_keep_note"
    assert CLIENT_KEY not in str(last.headers) and CLIENT_KEY not in last.query_string
