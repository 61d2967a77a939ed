"""Managed keys in a FastAPI host, called with the official openai SDK: limits and allowed
models of the key, and an ``auth=`` hook whose callers carry their own limits."""

from __future__ import annotations

import httpx
import openai
import pytest
from fastapi import FastAPI

from asgi_ai_relay import RelayMiddleware
from asgi_ai_relay.policy import limited_caller
from tests.keys_helpers import ADMIN_KEY, keys_config


def sdk(app, key):
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://host")
    return openai.AsyncOpenAI(base_url="http://host/ai/v1", api_key=key, http_client=http, max_retries=0), http


async def team_token(request):
    if request.headers.get("authorization") == "Bearer team-token":
        return limited_caller("eve", models=["test-model"], rpm=1)
    return None


async def test_managed_keys_and_hook_limits_through_the_openai_sdk(upstream, tmp_path):
    app = FastAPI()
    app.add_middleware(RelayMiddleware, config=keys_config(upstream, f"sqlite:///{tmp_path}/keys.db"), auth=team_token)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://host") as http:
        made = (await http.post("/ai/v1/keys", json={"owner": "ada", "models": ["test-*"], "tpm": 10_000, "rpm": 2},
                                headers={"authorization": f"Bearer {ADMIN_KEY}"})).json()
    client, transport = sdk(app, made["key"])
    async with transport:
        reply = await client.chat.completions.create(model="test-model", messages=[{"role": "user", "content": "hi"}],
                                                     max_tokens=20)
        assert reply.choices[0].message.content
        with pytest.raises(openai.PermissionDeniedError, match="other-model"):
            await client.chat.completions.create(model="other-model", messages=[{"role": "user", "content": "hi"}])
        await client.chat.completions.create(model="test-model", messages=[{"role": "user", "content": "hi"}], max_tokens=20)
        with pytest.raises(openai.RateLimitError):
            await client.chat.completions.create(model="test-model", messages=[{"role": "user", "content": "hi"}])
    hooked, transport = sdk(app, "team-token")
    async with transport:
        await hooked.chat.completions.create(model="test-model", messages=[{"role": "user", "content": "hi"}], max_tokens=20)
        with pytest.raises(openai.PermissionDeniedError):
            await hooked.embeddings.create(model="emb-model", input="hi")
        with pytest.raises(openai.RateLimitError):
            await hooked.chat.completions.create(model="test-model", messages=[{"role": "user", "content": "hi"}])
