"""Model discovery in both shapes: ``GET /v1/models`` answers Anthropic's list format when the
caller sends ``anthropic-version`` (the anthropic SDK, Claude Code's gateway model discovery)
and OpenAI's otherwise."""

from __future__ import annotations

import anthropic
import openai
import pytest
from starlette.applications import Starlette

from asgi_ai_relay import Relay, RelayMiddleware
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
