"""What the managed-key tests share: a relay config with a chat and an embedding model on the
fake upstream and an admin key, the admin API's calls, and one request per model route."""

from __future__ import annotations

import orjson

from asgi_ai_relay import Relay, RelayRequest, RelayResponse
from tests.conftest import make_config

ADMIN_KEY = "admin-key-for-managed-keys"
CHAT = {"messages": [{"role": "user", "content": "hello from a managed key"}], "max_tokens": 20}


def keys_config(upstream, store: str = "memory://", **overrides):
    storage = {"ledger": "memory://", "keys": store, **overrides.pop("storage", {})}
    config = make_config(upstream, api_keys=[{"key": ADMIN_KEY, "caller": "root", "admin": True}],
                         storage=storage, retry={"max_attempts": 1}, queue={"on_limit": "reject"}, **overrides)
    config["providers"]["an"] = {"kind": "anthropic", "base_url": f"{upstream.url}/v1", "api_key": "env:TEST_UPSTREAM_KEY"}
    config["models"] = {
        **config["models"],
        "claude-model": {"provider": "an", "upstream": "claude-sonnet-4-5", "price": {"input": 3, "output": 15}},
        "other-model": {"provider": "up", "upstream": "gpt-4o", "price": {"input": 2.5, "output": 10}},
        "emb-model": {"provider": "up", "upstream": "text-embedding-3-small", "kind": "embedding", "dimensions": 8,
                      "price": {"input": "0.02"}},
    }
    return config


async def call(relay: Relay, method: str, path: str, body=None, key: str = ADMIN_KEY, query: str = "") -> RelayResponse:
    headers = {"content-type": "application/json", "authorization": f"Bearer {key}"}
    return await relay.handle(RelayRequest(method, path, headers, orjson.dumps(body) if body is not None else b"", query=query))


async def create_key(relay: Relay, owner: str = "ada", **fields) -> tuple[str, dict]:
    response = await call(relay, "POST", "/v1/keys", {"owner": owner, **fields})
    assert response.status == 201, response.body
    made = orjson.loads(response.body)
    return made.pop("key"), made


#: One request per model route: (path, body) with ``{model}`` filled in.
ROUTES = {
    "chat": ("/v1/chat/completions", lambda m: {"model": m, **CHAT}),
    "messages": ("/v1/messages", lambda m: {"model": m, **CHAT}),
    "responses": ("/v1/responses", lambda m: {"model": m, "input": "hello from a managed key", "max_output_tokens": 20}),
    "embeddings": ("/v1/embeddings", lambda m: {"model": m, "input": "hello from a managed key"}),
    "count_tokens": ("/v1/messages/count_tokens", lambda m: {"model": m, "messages": CHAT["messages"]}),
}


def model_for(route: str) -> str:
    return {"embeddings": "emb-model", "count_tokens": "claude-model"}.get(route, "test-model")


async def on_route(relay: Relay, route: str, key: str, model: str | None = None) -> RelayResponse:
    path, body = ROUTES[route]
    return await call(relay, "POST", path, body(model or model_for(route)), key=key)


def error_of(response: RelayResponse) -> dict:
    """The error of any wire format: OpenAI's ``error.code`` or Anthropic's ``error.type``."""
    return orjson.loads(response.body)["error"]
