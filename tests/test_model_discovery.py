"""Model discovery in both shapes: ``GET /v1/models`` answers Anthropic's list format when the
caller sends ``anthropic-version`` (the anthropic SDK, Claude Code's gateway model discovery)
and OpenAI's otherwise. Claude Code's own discovery (``CLAUDE_CODE_ENABLE_GATEWAY_MODEL_DISCOVERY``)
runs when its binary is installed."""

from __future__ import annotations

import json
import os
import subprocess

import anthropic
import openai
import pytest
from starlette.applications import Starlette

from asgi_ai_relay import Relay, RelayMiddleware
from tests.claude_code import RELEASES, claude_binary
from tests.live import LiveServer
from tests.test_formats_e2e import config


@pytest.fixture
def server(upstream):
    with LiveServer(RelayMiddleware(Starlette(), relay=Relay(config(upstream)))) as live:
        yield live


def chat_models(upstream):
    relay = Relay(config(upstream))
    return [alias for alias, model in relay.config.models.items() if model.kind == "chat"]


def test_anthropic_sdk_lists_models_in_its_shape(server, upstream):
    client = anthropic.Anthropic(base_url=f"{server.url}/ai", api_key="client-key", max_retries=0)
    page = client.models.list(limit=2)
    assert [m.type for m in page.data] == ["model", "model"] and page.has_more
    assert page.data[0].display_name == page.data[0].id and page.first_id == page.data[0].id
    every = [m.id for m in client.models.list(limit=2)]  # the SDK follows after_id page by page
    assert every == chat_models(upstream) and "m-oa" in every and "text-embedding-3-small" not in every


def test_openai_shape_without_anthropic_version(server, upstream):
    client = openai.OpenAI(base_url=f"{server.url}/ai/v1", api_key="client-key", max_retries=0)
    listed = client.models.list()
    assert {m.object for m in listed.data} == {"model"} and "m-an" in [m.id for m in listed.data]
    assert any(m.id == "text-embedding-3-small" for m in listed.data)  # OpenAI's shape lists every kind


@pytest.mark.parametrize("release", RELEASES)
def test_claude_code_gateway_model_discovery(upstream, release, tmp_path):
    relay = Relay(config(upstream))
    with LiveServer(RelayMiddleware(Starlette(), relay=relay)) as live:
        env = {
            "PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "ANTHROPIC_BASE_URL": f"{live.url}/ai",
            "ANTHROPIC_API_KEY": "client-key", "ANTHROPIC_MODEL": "m-oa", "CLAUDE_CODE_ENABLE_GATEWAY_MODEL_DISCOVERY": "1",
            "DISABLE_AUTOUPDATER": "1", "DISABLE_TELEMETRY": "1",
        }
        done = subprocess.run([claude_binary(release), "-p", "hello", "--output-format", "json"], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    (cached,) = tmp_path.rglob("gateway-models.json")
    models = json.loads(cached.read_text())["models"]
    # Claude Code keeps the claude-* models of the list, with the display names Anthropic's shape carries.
    assert {"id": "claude-sonnet-4.5", "display_name": "claude-sonnet-4.5"} in models
    assert ("models", 200) in [(r.endpoint, r.status) for r in relay.ledger.rows()]
