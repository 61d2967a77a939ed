"""GET {prefix}/v1/usage and the savings report: the numbers are the ledger's, exactly."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal

import httpx
import orjson
import pytest

from asgi_ai_relay import Relay, RelayMiddleware
from asgi_ai_relay.report import main as report_main
from tests.conftest import make_config
from tests.live import LiveServer
from tests.relay_calls import relays, chat, get, pieces

KEYS = [
    {"key": "key-a", "caller": "a"},
    {"key": "key-b", "caller": "b"},
    {"key": "key-ops", "caller": "ops", "admin": True},
]
LISTS = {"direct": {"test-model": {"input": 5, "output": 20}}}


def config(upstream, ledger="memory://"):
    return make_config(upstream, api_keys=KEYS, storage={"ledger": ledger}, pricing={"currency": "CNY", "exchange_rate": "7.3", "lists": LISTS})


def msg(text, **extra):
    return {"model": "test-model", "messages": [{"role": "user", "content": text}], **extra}


async def traffic(relay):
    for i in range(3):
        await chat(relay, msg(f"a question {i}"), key="key-a")
    await chat(relay, msg("cached", temperature=0), key="key-a")
    await chat(relay, msg("cached", temperature=0), key="key-a")  # a hit
    await pieces(await chat(relay, msg("streamed", stream=True), key="key-b"))
    await chat(relay, msg("x", model="gpt-4.1"), key="key-b")  # the offline mock
    await chat(relay, {"model": "nope", "messages": []}, key="key-b")  # an error


def expected(rows, group=None):
    sums = defaultdict(lambda: defaultdict(Decimal))
    for r in rows:
        key = group(r) if group else "all"
        s = sums[key]
        s["requests"] += 1
        s["errors"] += r.status >= 400
        s["prompt_tokens"] += r.prompt_tokens
        s["completion_tokens"] += r.completion_tokens
        s["cost_usd"] += r.cost_usd
        s["cache_hits"] += r.cache_hit
        s["cache_saved_usd"] += r.cache_saved_usd
    return sums


def check(report, sums):
    assert report["requests"] == sums["requests"]
    assert report["errors"] == sums["errors"]
    assert report["prompt_tokens"] == sums["prompt_tokens"]
    assert report["completion_tokens"] == sums["completion_tokens"]
    assert Decimal(report["cost_usd"]) == sums["cost_usd"]
    assert Decimal(report["cost"]) == sums["cost_usd"] * Decimal("7.3")
    assert report["cache_hits"] == sums["cache_hits"]
    assert Decimal(report["cache_saved_usd"]) == sums["cache_saved_usd"]


@pytest.fixture
def ledger_uri(request, tmp_path):
    if request.param != "postgres":
        yield "memory://" if request.param == "memory" else f"sqlite:///{tmp_path}/u.db"
        return
    import uuid

    import psycopg

    url = request.getfixturevalue("postgres_url")
    table = f"relay_usage_{uuid.uuid4().hex}"
    yield f"{url}?table={table}&spool={tmp_path}/spool.db"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table}")


@pytest.mark.parametrize("ledger_uri", ["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
async def test_usage_matches_the_ledger(upstream, ledger_uri, relays):
    relay = relays(config(upstream, ledger_uri))
    await traffic(relay)
    chat_rows = [r for r in relay.ledger.rows() if r.endpoint == "chat.completions"]
    assert len(chat_rows) == 8

    everyone = orjson.loads((await get(relay, "/v1/usage", "group_by=caller", key="key-ops")).body)
    check(everyone, expected(chat_rows)["all"])
    assert everyone["currency"] == "CNY" and everyone["errors"] == 1
    by_caller = expected(chat_rows, lambda r: r.caller)
    assert [g["key"]["caller"] for g in everyone["groups"]] == sorted(by_caller) == ["a", "b"]  # a refused body is its caller's
    for group in everyone["groups"]:
        check(group, by_caller[group["key"]["caller"]])

    by_model = orjson.loads((await get(relay, "/v1/usage", "group_by=model,day&caller=a", key="key-ops")).body)
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    (only,) = by_model["groups"]
    assert only["key"] == {"model": "test-model", "day": day}
    check(only, expected([r for r in chat_rows if r.caller == "a"])["all"])
    assert only["cache_hits"] == 1 and only["cache_hit_rate"] == 0.2
    assert Decimal(only["cache_saved_usd"]) > 0
    await relay.shutdown()


async def test_a_caller_sees_only_its_own_usage(upstream, relays):
    relay = relays(config(upstream))
    await traffic(relay)
    mine = orjson.loads((await get(relay, "/v1/usage", key="key-b")).body)
    rows = [r for r in relay.ledger.rows() if r.endpoint == "chat.completions" and r.caller == "b"]
    check(mine, expected(rows)["all"])
    refused = await get(relay, "/v1/usage", "caller=a", key="key-b")
    assert refused.status == 403 and orjson.loads(refused.body)["error"]["code"] == "permission_denied"
    bad = await get(relay, "/v1/usage", "group_by=colour", key="key-ops")
    assert bad.status == 400 and b"group_by" in bad.body


async def test_time_filters_and_model_filter(upstream, relays):
    relay = relays(config(upstream))
    await traffic(relay)
    rows = [r for r in relay.ledger.rows() if r.endpoint == "chat.completions"]
    cut = rows[4].ts
    later = orjson.loads((await get(relay, "/v1/usage", f"from={cut}", key="key-ops")).body)
    check(later, expected([r for r in rows if r.ts >= cut])["all"])
    earlier = orjson.loads((await get(relay, "/v1/usage", f"to={cut}&model=test-model", key="key-ops")).body)
    check(earlier, expected([r for r in rows if r.ts < cut and r.model == "test-model"])["all"])
    assert (await get(relay, "/v1/usage", "from=yesterday", key="key-ops")).status == 400


async def test_savings_against_another_price_list(upstream, relays):
    relay = relays(config(upstream))
    await traffic(relay)
    report = orjson.loads((await get(relay, "/v1/usage", "group_by=month&compare=direct&model=test-model", key="key-ops")).body)
    rows = [r for r in relay.ledger.rows() if r.endpoint == "chat.completions" and r.model == "test-model"]
    direct = sum((Decimal(r.prompt_tokens) * 5 + Decimal(r.completion_tokens) * 20) / 10**6 for r in rows)
    actual = sum(r.cost_usd for r in rows)
    (month,) = report["groups"]
    assert month["key"] == {"month": datetime.now(UTC).strftime("%Y-%m")}
    assert Decimal(month["compare"]["cost_usd"]) == direct
    assert Decimal(month["compare"]["savings_usd"]) == direct - actual > 0
    assert (await get(relay, "/v1/usage", "compare=unknown", key="key-ops")).status == 400


async def test_report_cli(upstream, tmp_path, capsys, relays):
    uri = f"sqlite:///{tmp_path}/u.db"
    relay = relays(config(upstream, uri))
    await traffic(relay)
    await relay.shutdown()
    toml = tmp_path / "relay.toml"
    toml.write_text(
        f'[storage]\nledger = "{uri}"\n[pricing]\ncurrency = "CNY"\nexchange_rate = 7.3\n'
        '[pricing.lists.direct."test-model"]\ninput = 5\noutput = 20\n'
        f'[providers.up]\nkind = "openai_compatible"\nbase_url = "{upstream.url}/v1"\n'
        '[models.test-model]\nprovider = "up"\nprice = { input = 2.5, output = 10 }\n'
    )
    assert report_main(["--config", str(toml), "--compare", "direct", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    rows = relay.ledger.rows()  # every row, the usage endpoint's too: the CLI reads the whole ledger
    check(printed, expected(rows)["all"])
    assert report_main(["--config", str(toml), "--compare", "direct", "--group-by", "month,model"]) == 0
    table = capsys.readouterr().out
    assert "test-model" in table and "total" in table and "saved CNY" in table
    assert report_main(["--config", str(toml), "--group-by", "colour"]) == 2


def test_metrics_endpoint(upstream):
    relay = Relay(config(upstream))
    relay.metrics.watch_breaker_state(lambda: {("up",): 2})
    with LiveServer(RelayMiddleware(relay=relay)) as server:
        for _ in range(2):
            httpx.post(f"{server.url}/ai/v1/chat/completions", json=msg("m", temperature=0), headers={"authorization": "Bearer key-a"})
        text = httpx.get(f"{server.url}/ai/metrics").text
    assert 'relay_requests_total{cache="miss",endpoint="chat.completions",model="test-model",provider="up",status="200"} 1.0' in text
    assert 'relay_requests_total{cache="hit",endpoint="chat.completions",model="test-model",provider="up",status="200"} 1.0' in text
    assert 'relay_cache_total{result="hit"} 1.0' in text
    rows = relay.ledger.rows()
    prompt = sum(r.prompt_tokens for r in rows)
    assert f'relay_tokens_total{{kind="prompt",model="test-model"}} {float(prompt)}' in text
    assert 'relay_request_latency_seconds_count{endpoint="chat.completions",model="test-model"} 2.0' in text
    assert 'relay_breaker_state{provider="up"} 2.0' in text
    assert 'relay_queue_depth{state="waiting"} 0.0' in text


def test_metrics_can_be_turned_off(upstream):
    relay = Relay(make_config(upstream, metrics={"enabled": False}))
    assert relay.metrics is None
