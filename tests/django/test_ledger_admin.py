"""The ledger in the Django admin: read-only, filtered by caller, managed key, team, model,
provider, status, date and request id, with totals equal to ``/v1/usage``'s for the same filter; the usage page
draws spend per day per model and per caller."""

from __future__ import annotations

import json
import re
import time
from decimal import Decimal

import pytest

from asgi_ai_relay.storage import LedgerRow
from tests.conftest import make_config

pytestmark = pytest.mark.django_db

KEYS = [{"key": "key-ann", "caller": "ann"}, {"key": "key-bob", "caller": "bob"}, {"key": "key-ops", "caller": "ops", "admin": True}]
LIST = "/admin/django_ai_relay/ledgerentry/"


@pytest.fixture
def ledger_site(settings, upstream, tmp_path):
    settings.AI_RELAY = make_config(upstream, api_keys=KEYS, storage={"ledger": f"sqlite:///{tmp_path}/ledger.db"},
                                    models={"test-model": {"provider": "up", "upstream": "gpt-4o-mini", "price": {"input": 2.5, "output": 10}},
                                            "other-model": {"provider": "up", "upstream": "gpt-4o", "price": {"input": 5, "output": 15}}})
    return settings


def call(client, key, model, text, request_id):
    return client.post("/ai/v1/chat/completions", data=json.dumps({"model": model, "messages": [{"role": "user", "content": text}]}),
                       content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {key}", HTTP_X_REQUEST_ID=request_id)


def spend(client):
    from django_ai_relay import conf

    for i in range(3):
        assert call(client, "key-ann", "test-model", "ann " + "word " * 10 * i, f"ann-{i}").status_code == 200
    assert call(client, "key-ann", "other-model", "ann other", "ann-other").status_code == 200
    assert call(client, "key-bob", "test-model", "bob asks", "bob-0").status_code == 200
    assert call(client, "key-bob", "no-such-model", "bob asks", "bob-404").status_code == 404
    relay = conf.relay()
    relay.ledger.record(LedgerRow(ts=time.time() - 3 * 86400, request_id="ann-old", caller="ann", endpoint="chat.completions",
                                  model="test-model", provider="up", prompt_tokens=100, completion_tokens=50,
                                  cost_usd=Decimal("0.00075"), latency_ms=300.0))
    relay.ledger.flush()


def totals(html):
    return {name: value for name, value in re.findall(r'<td data-total="(\w+)">([^<]*)</td>', html)}


def usage(client, query):
    answer = client.get(f"/ai/v1/usage?{query}", HTTP_AUTHORIZATION="Bearer key-ops")
    assert answer.status_code == 200
    return answer.json()


@pytest.mark.parametrize("query", ["", "caller=ann", "caller=bob", "model=test-model", "caller=ann&model=other-model",
                                   f"from={time.strftime('%Y-%m-%d', time.gmtime())}"])
def test_change_list_totals_equal_the_usage_api(ledger_site, client, admin_client, query):
    spend(client)
    page = admin_client.get(f"{LIST}?{query}")
    assert page.status_code == 200
    mine, theirs = totals(page.content.decode()), usage(client, query)
    assert mine and {k: str(theirs[k]) for k in mine} == mine
    assert page.content.decode().count('class="ledger-row"') == theirs["requests"]


def test_filters_search_and_read_only(ledger_site, client, admin_client, django_user_model):
    spend(client)
    html = admin_client.get(f"{LIST}?q=bob-404").content.decode()
    assert html.count('class="ledger-row"') == 1 and "bob-404" in html and totals(html)["errors"] == "1"
    assert admin_client.get(f"{LIST}?status=4xx").content.decode().count('class="ledger-row"') == 1
    assert admin_client.get(f"{LIST}?status=2xx&caller=ann").content.decode().count('class="ledger-row"') == 5
    assert admin_client.get(f"{LIST}?provider=up&model=other-model").content.decode().count('class="ledger-row"') == 1
    assert admin_client.get(f"{LIST}?from=nonsense").status_code == 400
    assert admin_client.get(f"{LIST}add/").status_code in (403, 404)
    staff = django_user_model.objects.create_user("staff", password="pw", is_staff=True)
    client.force_login(staff)
    assert client.get(LIST).status_code == 403  # staff without view_ledgerentry


def test_usage_page_draws_spend_per_day_per_model_and_caller(ledger_site, client, admin_client):
    spend(client)
    html = admin_client.get(f"{LIST}usage/").content.decode()
    charts = re.findall(r'<svg class="chart".*?</svg>', html, re.S)
    assert len(charts) == 2
    per_model, per_caller = charts
    # two days with spend (today, three days ago); today's bar has a segment per model / caller
    assert len(re.findall(r'<path class="mark"', per_model)) == 3
    assert len(re.findall(r'<path class="mark"', per_caller)) == 3
    assert "other-model" in per_model and "bob" in per_caller


def test_a_superuser_session_sees_the_dashboard(ledger_site, client, admin_client, admin_user):
    ledger_site.AI_RELAY = {**ledger_site.AI_RELAY, "dashboard": {"enabled": True}}
    spend(client)
    page = admin_client.get("/ai/dashboard")
    assert page.status_code == 200 and page["content-type"].startswith("text/html")
    assert '<svg class="chart"' in page.content.decode()


def test_key_and_team_filters_and_their_totals_equal_the_usage_api(ledger_site, client, admin_client):
    from django_ai_relay import conf

    spend(client)
    relay = conf.relay()
    for i, (key_id, team) in enumerate((("key_aaa", "research"), ("key_aaa", "research"), ("key_bbb", "research"), ("key_ccc", None))):
        relay.ledger.record(LedgerRow(ts=time.time() - 60, request_id=f"k-{i}", caller="ann", endpoint="chat.completions",
                                      model="test-model", provider="up", prompt_tokens=10 * (i + 1), completion_tokens=5,
                                      cost_usd=Decimal("0.0001") * (i + 1), key_id=key_id, team=team))
    relay.ledger.flush()
    page = admin_client.get(LIST).content.decode()
    assert '<select name="key">' in page and '<option value="key_bbb">' in page and '<option value="research">' in page
    for query, rows in (("key=key_aaa", 2), ("team=research", 3), ("key=key_ccc&caller=ann", 1), ("team=research&key=key_ccc", 0)):
        html = admin_client.get(f"{LIST}?{query}").content.decode()
        assert html.count('class="ledger-row"') == rows == usage(client, query)["requests"], query
        if rows:
            mine, theirs = totals(html), usage(client, query)
            assert {k: str(theirs[k]) for k in mine} == mine
    charts = admin_client.get(f"{LIST}usage/?team=research").content.decode()
    assert 'value="research"' in charts and "bob" not in re.findall(r'<svg class="chart".*?</svg>', charts, re.S)[1]
