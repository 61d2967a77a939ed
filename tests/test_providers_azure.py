"""Azure OpenAI through the relay, driven by the official openai and anthropic SDKs: the v1 API
and classic deployment URLs, ``api-key`` and Microsoft Entra ID tokens refreshed off the
request path (a credential object with ``get_token``, as azure-identity's are)."""

from __future__ import annotations

import asyncio
import threading
import time
from types import SimpleNamespace

import anthropic
import openai
import pytest
from starlette.applications import Starlette

from asgi_ai_relay import Relay, RelayMiddleware
from asgi_ai_relay.config import load_config
from asgi_ai_relay.errors import ConfigurationError, UpstreamConnectError
from asgi_ai_relay.providers.credentials import TokenSource
from tests.fake_cloud import FakeAzure
from tests.fake_upstream import Fault, echo_reply, fake_tool_arguments, plan_reply
from tests.live import LiveServer
from tests.relay_calls import until

AZURE_KEY = "azure-key-0123456789abcdef"
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather", "parameters": SCHEMA}}]
MESSAGES = [{"role": "user", "content": "Weather in Paris please"}]
PRICE = {"input": 2, "output": 10}


class Credential:
    """What azure-identity's credentials are to the relay: ``get_token(scope)`` returning an
    object with ``token`` and ``expires_on``. Tokens are registered with the fake Azure."""

    def __init__(self) -> None:
        self.azure: FakeAzure | None = None
        self.lifetime = 3600.0
        self.fail: Exception | None = None
        self.calls = 0
        self.scopes: list[str] = []
        self.lock = threading.Lock()

    def get_token(self, *scopes: str) -> SimpleNamespace:
        with self.lock:
            self.calls += 1
            self.scopes.extend(scopes)
            if self.fail is not None:
                raise self.fail
            token = f"eyJ0eXAiOiJKV1Qi.entra-token-{self.calls}-secret"
            assert self.azure is not None
            self.azure.entra_tokens.add(token)
            return SimpleNamespace(token=token, expires_on=int(time.time() + self.lifetime))


CREDENTIAL = Credential()


@pytest.fixture(scope="module")
def azure():
    with FakeAzure(api_key=AZURE_KEY, deployments={"prod-gpt4o": "gpt-4o", "embed-small": "text-embedding-3-small"}) as fake:
        yield fake


@pytest.fixture(autouse=True)
def _reset(azure, secret_scan, monkeypatch):
    azure.reset()
    azure.refusals.clear()
    azure.entra_tokens.clear()
    CREDENTIAL.__init__()
    CREDENTIAL.azure = azure
    monkeypatch.setenv("TEST_AZURE_KEY", AZURE_KEY)
    secret_scan.add("AZURE_KEY", AZURE_KEY)
    secret_scan.add("ENTRA_TOKEN", ".entra-token-")


def config(azure, **provider):
    providers = {
        "az-v1": {"kind": "azure_openai", "base_url": azure.url, "api_key": "env:TEST_AZURE_KEY"},
        "az-classic": {"kind": "azure_openai", "base_url": f"{azure.url}/openai", "api_version": "2024-10-21", "api_key": "env:TEST_AZURE_KEY"},
    }
    for name, extra in provider.items():
        providers[name.replace("_", "-")] = {"kind": "azure_openai", "base_url": f"{azure.url}/openai/v1", **extra}
    models = {
        "gpt-v1": {"provider": "az-v1", "upstream": "prod-gpt4o", "price": PRICE},
        "gpt-classic": {"provider": "az-classic", "upstream": "prod-gpt4o", "price": PRICE},
        "embed": {"provider": "az-classic", "upstream": "embed-small", "kind": "embedding", "dimensions": 1536, "price": {"input": 0.02}},
    }
    if "az_entra" in provider:
        models["gpt-entra"] = {"provider": "az-entra", "upstream": "prod-gpt4o", "price": PRICE}
    return {"storage": {"ledger": "memory://"}, "providers": providers, "models": models,
            "retry": {"max_attempts": 2, "base_delay": 0.001, "max_delay": 0.002},
            "breaker": {"failure_threshold": 2, "cooldown": 60}}


@pytest.fixture
def relay(azure):
    return Relay(config(azure, az_entra={"auth": "entra", "credential": "tests.test_providers_azure:CREDENTIAL"}))


@pytest.fixture
def server(relay):
    with LiveServer(RelayMiddleware(Starlette(), relay=relay)) as live:
        yield live


@pytest.fixture
def gpt(server):
    return openai.OpenAI(base_url=f"{server.url}/ai/v1", api_key="client-secret-abc", max_retries=0)


def test_url_shapes_and_api_key_header(gpt, azure, relay):
    for model, path in (("gpt-v1", "/openai/v1/chat/completions"), ("gpt-classic", "/openai/deployments/prod-gpt4o/chat/completions")):
        reply = gpt.chat.completions.create(model=model, messages=MESSAGES)
        request = azure.last_request
        assert request.path == path and request.headers["api-key"] == AZURE_KEY
        assert "authorization" not in request.headers and "client-secret-abc" not in repr(request.headers)
        assert request.json["model"] == "prod-gpt4o"
        plan = plan_reply({**request.json, "model": "gpt-4o"}, "openai")
        assert reply.choices[0].message.content == echo_reply({"messages": MESSAGES}, "openai")
        assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (plan.prompt_tokens, plan.completion_tokens)
    assert azure.requests[1].query == {"api-version": "2024-10-21"}
    assert [(r.provider, r.status) for r in relay.ledger.rows()] == [("az-v1", 200), ("az-classic", 200)]


@pytest.mark.parametrize("model", ["gpt-v1", "gpt-classic"])
def test_stream_with_tool_call_and_usage(gpt, azure, relay, model):
    chunks = list(gpt.chat.completions.create(model=model, messages=MESSAGES, tools=TOOLS, stream=True, stream_options={"include_usage": True}))
    arguments = "".join(c.choices[0].delta.tool_calls[0].function.arguments or "" for c in chunks if c.choices and c.choices[0].delta.tool_calls)
    assert orjson_loads(arguments) == fake_tool_arguments(SCHEMA, "Weather in Paris please")
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]
    plan = plan_reply({**azure.last_request.json, "model": "gpt-4o"}, "openai")
    assert chunks[-1].usage.completion_tokens == plan.completion_tokens and chunks[-1].usage.prompt_tokens == plan.prompt_tokens
    (row,) = relay.ledger.rows()
    assert row.stream and row.status == 200 and row.completion_tokens == plan.completion_tokens


def orjson_loads(text):
    import orjson

    return orjson.loads(text)


def test_classic_embeddings_and_responses(gpt, azure):
    vectors = gpt.embeddings.create(model="embed", input=["one", "two"])
    assert azure.last_request.path == "/openai/deployments/embed-small/embeddings" and len(vectors.data) == 2
    answer = gpt.responses.create(model="gpt-classic", input="Say hi")
    assert azure.last_request.path == "/openai/deployments/prod-gpt4o/chat/completions"
    assert answer.output_text == echo_reply({"messages": [{"role": "user", "content": "Say hi"}]}, "openai")


def test_anthropic_sdk_to_azure(server, azure):
    claude = anthropic.Anthropic(base_url=f"{server.url}/ai", api_key="client-secret-abc", max_retries=0)
    with claude.messages.stream(model="gpt-v1", max_tokens=100, messages=MESSAGES) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == echo_reply({"messages": MESSAGES}, "openai") and final.stop_reason == "end_turn"
    assert azure.last_request.path == "/openai/v1/chat/completions" and final.usage.output_tokens > 0


def test_wrong_key_is_the_relays_502_without_the_key(gpt, azure, monkeypatch):
    monkeypatch.setenv("TEST_AZURE_KEY", "wrong-" + AZURE_KEY)
    relay = Relay(config(azure))
    with LiveServer(RelayMiddleware(Starlette(), relay=relay)) as live:
        client = openai.OpenAI(base_url=f"{live.url}/ai/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(model="gpt-v1", messages=MESSAGES)
    assert caught.value.status_code == 502 and AZURE_KEY not in str(caught.value.body)


# ---- Microsoft Entra ID ----------------------------------------------------------------


def test_entra_token_sent_as_bearer_and_refreshed_before_expiry_off_the_request_path(gpt, azure):
    CREDENTIAL.lifetime = 120  # inside the 300 s refresh margin from the start
    gpt.chat.completions.create(model="gpt-entra", messages=MESSAGES)
    assert CREDENTIAL.calls == 1 and CREDENTIAL.scopes == ["https://cognitiveservices.azure.com/.default"]
    first = azure.last_request.headers["authorization"]
    assert first == "Bearer eyJ0eXAiOiJKV1Qi.entra-token-1-secret" and "api-key" not in azure.last_request.headers
    # Near its expiry the token still serves this request while a refresh runs beside it.
    gpt.chat.completions.create(model="gpt-entra", messages=MESSAGES)
    assert azure.last_request.headers["authorization"] == first
    asyncio.run(until(lambda: CREDENTIAL.calls == 2 and len(azure.entra_tokens) == 2))
    CREDENTIAL.lifetime = 3600
    gpt.chat.completions.create(model="gpt-entra", messages=MESSAGES)
    assert azure.last_request.headers["authorization"] == "Bearer eyJ0eXAiOiJKV1Qi.entra-token-2-secret"
    assert azure.refusals == []


def test_token_failure_is_an_upstream_error_retried_and_counted_by_the_breaker(gpt, azure, relay, secret_scan):
    secret_scan.add("CREDENTIAL_SECRET", "client-secret-in-exception")
    CREDENTIAL.fail = RuntimeError("AADSTS7000215: Invalid client secret client-secret-in-exception")
    with pytest.raises(openai.APIStatusError) as caught:
        gpt.chat.completions.create(model="gpt-entra", messages=MESSAGES)
    assert caught.value.status_code == 502
    assert "could not get an access token (RuntimeError)" in caught.value.message
    assert CREDENTIAL.calls == 2  # retried, as any upstream failure is
    with pytest.raises(openai.APIStatusError) as opened:
        gpt.chat.completions.create(model="gpt-entra", messages=MESSAGES)
    assert opened.value.status_code == 503 and CREDENTIAL.calls == 2  # the breaker is open: no attempt
    assert azure.requests == [] and [r.status for r in relay.ledger.rows()] == [502, 503]


def test_config_errors_name_the_key(azure):
    with pytest.raises(ConfigurationError, match=r"providers.az.base_url: required"):
        load_config({"providers": {"az": {"kind": "azure_openai"}}})
    with pytest.raises(ConfigurationError, match=r"providers.az.credential: cannot import 'nowhere:thing'"):
        Relay(config(azure, az={"auth": "entra", "credential": "nowhere:thing"})).providers
    parsed = load_config({"providers": {"a": {"kind": "azure_openai", "base_url": "https://r.openai.azure.com/openai/"}}})
    assert parsed.providers["a"].base_url == "https://r.openai.azure.com/openai/v1"


# ---- the token source on its own ------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_token_source_refresh_rules():
    async def scenario():
        clock, issued = Clock(), []
        gate = threading.Event()

        def fetch():
            gate.wait(5)
            issued.append(f"token-source-test-{len(issued)}")
            return issued[-1], clock.now + 1000

        source = TokenSource("p", fetch, margin=300, clock=clock)
        gate.set()
        waiters = await asyncio.gather(*(source.get() for _ in range(5)))
        t0, t1 = "token-source-test-0", "token-source-test-1"
        assert waiters == [t0] * 5 and source.fetches == 1  # one fetch shared by every waiter
        clock.now += 600  # 400 s left: no refresh
        assert await source.get() == t0 and source.fetches == 1
        clock.now += 200  # 200 s left: answer at once, refresh beside it
        gate.clear()
        assert await source.get() == t0 and source.fetches == 2
        assert await source.get() == t0 and source.fetches == 2  # the refresh is in flight: not started twice
        gate.set()
        await until(lambda: source._task is None)
        assert await source.get() == t1
        await source.aclose()

    asyncio.run(scenario())


def test_token_source_failure_names_only_the_type_and_recovers():
    async def scenario():
        clock, outcomes = Clock(), [ValueError("secret-in-message"), ("token-source-good-one", 5000.0)]

        def fetch():
            outcome = outcomes.pop(0)
            if isinstance(outcome, Exception):
                raise outcome
            return outcome

        source = TokenSource("vault", fetch, clock=clock)
        with pytest.raises(UpstreamConnectError) as caught:
            await source.get()
        assert str(caught.value) == "Provider 'vault' could not get an access token (ValueError)."
        assert caught.value.__cause__ is None and caught.value.__suppress_context__
        assert await source.get() == "token-source-good-one"
        clock.now = 6000.0  # expired: the next request waits for a new one
        outcomes.append(RuntimeError("down"))
        with pytest.raises(UpstreamConnectError):
            await source.get()
        await source.aclose()

    asyncio.run(scenario())


def test_entra_default_credential_needs_the_extra_or_builds(azure):
    relay = Relay(config(azure, az_entra={"auth": "entra"}))
    provider = relay.providers["az-entra"]  # azure-identity is installed here: DefaultAzureCredential builds without network
    assert provider.token is not None and provider.auth_headers() == {}


# ---- Claude on Microsoft Foundry (Anthropic format) --------------------------------------


def test_claude_on_foundry_with_a_key_and_with_entra(azure):
    providers = {
        "foundry": {"kind": "anthropic", "base_url": f"{azure.url}/anthropic/", "api_key": "env:TEST_AZURE_KEY"},
        "foundry-entra": {"kind": "anthropic", "base_url": f"{azure.url}/anthropic", "auth": "entra",
                          "credential": "tests.test_providers_azure:CREDENTIAL", "scope": "https://ai.azure.com/.default"},
    }
    models = {"claude": {"provider": "foundry", "upstream": "claude-sonnet-4-5"}, "claude-entra": {"provider": "foundry-entra", "upstream": "claude-sonnet-4-5"}}
    relay = Relay({"storage": {"ledger": "memory://"}, "providers": providers, "models": models})
    with LiveServer(RelayMiddleware(Starlette(), relay=relay)) as live:
        claude = anthropic.Anthropic(base_url=f"{live.url}/ai", api_key="client-secret-abc", max_retries=0)
        message = claude.messages.create(model="claude", max_tokens=100, messages=MESSAGES)
        assert azure.last_request.path == "/anthropic/v1/messages" and azure.last_request.headers["x-api-key"] == AZURE_KEY
        assert message.content[0].text == echo_reply({"messages": MESSAGES}, "anthropic")
        tools = [{"name": "get_weather", "input_schema": SCHEMA}]
        with claude.messages.stream(model="claude-entra", max_tokens=100, messages=MESSAGES, tools=tools) as stream:
            final = stream.get_final_message()
    request = azure.last_request
    assert request.headers["authorization"] == "Bearer eyJ0eXAiOiJKV1Qi.entra-token-1-secret" and "x-api-key" not in request.headers
    assert CREDENTIAL.scopes == ["https://ai.azure.com/.default"]
    assert final.content[0].type == "tool_use" and final.content[0].input == fake_tool_arguments(SCHEMA, "Weather in Paris please")
    assert azure.refusals == [] and [r.status for r in relay.ledger.rows()] == [200, 200]


def test_token_source_bounds_the_wait_for_a_hung_identity_service():
    from asgi_ai_relay.errors import UpstreamTimeout

    async def scenario():
        gate = threading.Event()
        source = TokenSource("slow", lambda: (gate.wait(5), ("token-source-slow-one", time.time() + 3600))[1], timeout=0.05)
        try:
            with pytest.raises(UpstreamTimeout, match="got no access token within 0.05s"):
                await source.get()
        finally:
            gate.set()
        await until(lambda: source._task is None)
        assert await source.get() == "token-source-slow-one"  # the fetch finished in its thread and is kept
        await source.aclose()

    asyncio.run(scenario())
