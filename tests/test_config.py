"""The configuration schema: defaults, overrides, secrets from the environment, errors by key."""

from __future__ import annotations

from decimal import Decimal

import pytest

from asgi_ai_relay import ConfigurationError, load_config


def test_defaults_serve_the_catalog_offline():
    config = load_config(None)
    assert config.prefix == "/ai"
    assert {m: (c.provider, c.price.input, c.price.output) for m, c in config.models.items()} == {
        "gpt-4.1": ("mock", Decimal("2.00"), Decimal("8.00")),
        "claude-sonnet-4.5": ("mock", Decimal("3.00"), Decimal("15.00")),
        "gemini-2.5-flash": ("mock", Decimal("0.30"), Decimal("2.50")),
        "deepseek-v3.2": ("mock", Decimal("0.10"), Decimal("0.42")),
        "text-embedding-3-small": ("mock", Decimal("0.02"), Decimal("0")),
        "text-embedding-3-large": ("mock", Decimal("0.13"), Decimal("0")),
        "gemini-embedding-001": ("mock", Decimal("0.15"), Decimal("0")),
    }
    assert {m for m, c in config.models.items() if c.kind == "embedding"} == {
        "text-embedding-3-small", "text-embedding-3-large", "gemini-embedding-001"}
    assert config.storage.ledger == "sqlite:///relay-usage.db"


def test_a_configured_provider_takes_its_default_models(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-live-value")
    config = load_config({"providers": {"openai": {"api_key": "env:OPENAI_API_KEY"}}})
    assert config.models["gpt-4.1"].provider == "openai"
    assert config.models["claude-sonnet-4.5"].provider == "mock"
    openai = config.providers["openai"]
    assert openai.kind == "openai" and openai.base_url == "https://api.openai.com/v1"
    assert openai.api_key.get() == "sk-live-value"
    assert "sk-live-value" not in repr(openai) and "sk-live-value" not in repr(config)


def test_holysheep_style_relay_with_extra_headers(monkeypatch):
    monkeypatch.setenv("HOLYSHEEP_API_KEY", "hs-1")
    config = load_config(
        {
            "providers": {"holysheep": {"api_key": "env:HOLYSHEEP_API_KEY", "headers": {"X-Provider": "openai"}}},
            "models": {
                "claude-sonnet-4.5": {"provider": "holysheep", "headers": {"X-Provider": "anthropic"}},
                "cheap": {"provider": "holysheep", "upstream": "deepseek-chat", "price": {"input": 0.1, "output": "0.42"}},
            },
        }
    )
    hs = config.providers["holysheep"]
    assert (hs.kind, hs.base_url, dict(hs.headers)) == ("openai_compatible", "https://api.holysheep.ai/v1", {"x-provider": "openai"})
    sonnet = config.models["claude-sonnet-4.5"]
    assert sonnet.price.output == Decimal("15.00")  # the override keeps the catalog price
    assert dict(sonnet.headers) == {"x-provider": "anthropic"}
    assert config.models["cheap"].price.output == Decimal("0.42")


def test_toml_file(tmp_path):
    path = tmp_path / "relay.toml"
    path.write_text(
        'prefix = "/llm/"\n[providers.local]\nkind = "openai_compatible"\nbase_url = "http://127.0.0.1:9/v1"\n'
        '[models.local-model]\nprovider = "local"\nprice = { input = 1, output = 2 }\n'
    )
    config = load_config(path)
    assert config.prefix == "/llm"
    assert config.models["local-model"].upstream == "local-model"


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"prefx": "/ai"}, "prefx"),
        ({"prefix": "ai"}, "prefix"),
        ({"max_body_bytes": 0}, "max_body_bytes"),
        ({"max_body_bytes": "big"}, "max_body_bytes"),
        ({"timeouts": {"read": -1}}, "timeouts.read"),
        ({"timeouts": {"raed": 1}}, "timeouts.raed"),
        ({"providers": {"x": {"kind": "nope", "base_url": "http://a"}}}, "providers.x.kind"),
        ({"providers": {"x": {"kind": "openai_compatible"}}}, "providers.x.base_url"),
        ({"providers": {"x": {"base_url": "http://a", "api_key": "env:RELAY_TEST_UNSET_VAR"}}}, "providers.x.api_key"),
        ({"providers": {"x": {"base_url": "http://a", "headers": {"a": "b\r\nc: d"}}}}, "providers.x.headers.a"),
        ({"models": {"m": {"provider": "missing"}}}, "models.m.provider"),
        ({"models": {"m": {"provider": "mock", "price": {"input": -1}}}}, "models.m.price.input"),
        ({"models": {"m": {"provider": "mock", "price": {"input": "abc"}}}}, "models.m.price.input"),
        ({"models": {"m": {"provider": "mock", "fallbacks": ["ghost"]}}}, "models.m.fallbacks"),
        ({"models": {"m": {}}}, "models.m.provider"),
        ({"api_keys": [{"caller": "x"}]}, "api_keys[0].key"),
        ({"api_keys": [{"key": "k", "priority": "urgent"}]}, "api_keys[0].priority"),
        ({"require_auth": "yes"}, "require_auth"),
        ({"storage": {"ledger": 5}}, "storage.ledger"),
    ],
)
def test_errors_name_the_bad_key(data, key):
    with pytest.raises(ConfigurationError) as info:
        load_config(data)
    assert str(info.value).startswith(key + ":"), str(info.value)


def test_unreadable_toml_is_a_configuration_error(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("prefix = ")
    with pytest.raises(ConfigurationError):
        load_config(path)
