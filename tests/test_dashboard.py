"""The dashboard at ``{prefix}/dashboard``: off unless enabled, admin callers only, and a page
whose charts a real browser draws with the ledger's numbers (headless Chromium, the Debian
package: a screenshot with the chart's colour where the chart is, and the SVG marks in the DOM)."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from decimal import Decimal

import httpx
import orjson
import pytest

from asgi_ai_relay import Caller, Relay, RelayMiddleware
from asgi_ai_relay.dashboard.svg import PALETTE
from asgi_ai_relay.storage import LedgerRow
from tests.conftest import REQUIRE_SERVICES, make_config
from tests.live import LiveServer
from tests.png import count_colour, read_png
from tests.relay_calls import chat, get, relays  # noqa: F401

KEYS = [{"key": "key-ann", "caller": "ann"}, {"key": "key-bob", "caller": "bob"}, {"key": "key-ops", "caller": "ops", "admin": True}]
BLUE = tuple(int(PALETTE[0][i:i + 2], 16) for i in (1, 3, 5))


def body(text):
    return {"model": "test-model", "messages": [{"role": "user", "content": text}], "max_tokens": 20}


def chromium():
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        message = "headless Chromium is not installed (apt-get install -y chromium)"
        if REQUIRE_SERVICES:
            pytest.fail(message)
        pytest.skip(message)
    return found


def browse(binary, url, tmp_path, *args):
    command = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
               f"--user-data-dir={tmp_path / 'profile'}", "--force-device-scale-factor=1", *args, url]
    done = subprocess.run(command, capture_output=True, timeout=90, cwd=tmp_path)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    return done.stdout


async def spend(relay):
    """Traffic of two callers today (one unknown model: an error row) and rows of two days ago."""
    for i in range(3):
        assert (await chat(relay, body(f"ann asks {i} " + "words " * 40 * i), key="key-ann")).status == 200
    assert (await chat(relay, body("bob asks"), key="key-bob")).status == 200
    assert (await chat(relay, {**body("x"), "model": "no-such-model"}, key="key-bob")).status == 404
    relay.ledger.record(LedgerRow(ts=time.time() - 2 * 86400, request_id="old-1", caller="ann", endpoint="chat.completions",
                                  model="test-model", provider="up", prompt_tokens=900, completion_tokens=300,
                                  cost_usd=Decimal("0.00525"), latency_ms=420.0))


async def test_dashboard_is_off_unless_enabled_and_for_admins_only(upstream, relays):
    off = relays(make_config(upstream, api_keys=KEYS))
    assert (await get(off, "/dashboard", key="key-ops")).status == 404
    relay = relays(make_config(upstream, api_keys=KEYS, dashboard={"enabled": True}))
    refused = await get(relay, "/dashboard", key="key-ann")
    assert refused.status == 403 and orjson.loads(refused.body)["error"]["type"] == "permission_error"
    assert (await get(relay, "/dashboard")).status == 403  # anonymous
    page = await get(relay, "/dashboard", key="key-ops")
    assert page.status == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src" not in page.headers["content-security-policy"] and b"<script" not in page.body
    assert (await get(relay, "/dashboard", query="from=yesterday", key="key-ops")).status == 400


async def test_dashboard_numbers_are_the_usage_reports(upstream, relays, tmp_path):
    relay = relays(make_config(upstream, api_keys=KEYS, storage={"ledger": f"sqlite:///{tmp_path}/u.db"},
                               dashboard={"enabled": True}, budgets={"callers": {"ann": {"daily": "0.01"}}}))
    await spend(relay)
    relay.ledger.flush()
    usage = orjson.loads((await get(relay, "/v1/usage", query="group_by=caller", key="key-ops")).body)
    html = (await get(relay, "/dashboard", key="key-ops")).body.decode()
    assert f"${Decimal(usage['cost_usd']):,.4f}" in html
    assert f">{usage['requests']:,}<" in html and usage["errors"] == 1
    for group in usage["groups"]:
        assert f"<td>{group['key']['caller']}</td><td>{group['requests']:,}</td>" in html
    assert "ann (day)" in html  # budget use of the budgeted caller
    only_bob = (await get(relay, "/dashboard", query="caller=bob", key="key-ops")).body.decode()
    assert "<td>ann</td>" not in only_bob and "<td>bob</td>" in only_bob


def test_dashboard_renders_in_headless_chromium(upstream, tmp_path):
    binary = chromium()

    async def admin_for_the_browser(request):  # the host's own auth: its operator
        return Caller("ops", admin=True) if "authorization" not in request.headers else None

    config = make_config(upstream, api_keys=KEYS, storage={"ledger": f"sqlite:///{tmp_path}/u.db"}, dashboard={"enabled": True})
    empty = Relay(make_config(upstream, storage={"ledger": "memory://"}, dashboard={"enabled": True}), auth=admin_for_the_browser)
    relay = Relay(config, auth=admin_for_the_browser)
    with LiveServer(RelayMiddleware(relay=relay)) as server, LiveServer(RelayMiddleware(relay=empty)) as bare:
        for i, key in enumerate(("key-ann", "key-ann", "key-bob")):
            answer = httpx.post(f"{server.url}/ai/v1/chat/completions", json=body(f"hello {i} " + "more " * 30 * i),
                                headers={"authorization": f"Bearer {key}"}, timeout=30)
            assert answer.status_code == 200
        assert httpx.post(f"{server.url}/ai/v1/chat/completions", json={**body("x"), "model": "no-such-model"},
                          headers={"authorization": "Bearer key-bob"}, timeout=30).status_code == 404
        relay.ledger.record(LedgerRow(ts=time.time() - 2 * 86400, request_id="old-1", caller="ann", endpoint="chat.completions",
                                      model="test-model", provider="up", prompt_tokens=900, completion_tokens=300,
                                      cost_usd=Decimal("0.00525"), latency_ms=420.0))
        relay.ledger.flush()
        size = "--window-size=1500,1600"
        dom = browse(binary, f"{server.url}/ai/dashboard", tmp_path, "--dump-dom").decode()
        shot, bare_shot = tmp_path / "dashboard.png", tmp_path / "empty.png"
        browse(binary, f"{server.url}/ai/dashboard", tmp_path, size, f"--screenshot={shot}")
        browse(binary, f"{bare.url}/ai/dashboard", tmp_path, size, f"--screenshot={bare_shot}")
    # The DOM: the spend chart is an inline SVG with a mark per day with spend (today, two days ago).
    spend_chart = re.search(r'<svg class="chart"[^>]*aria-label="spend per day".*?</svg>', dom, re.S)
    assert spend_chart is not None
    marks = re.findall(r'<path class="mark" d="M[^"]+" fill="#2563eb">', spend_chart.group(0))
    assert len(marks) == 2, spend_chart.group(0)[:500]
    # The picture: the chart's colour fills the bars in the chart's region (left column, top),
    # and an empty ledger draws none there.
    width, height, rows = read_png(shot.read_bytes())
    region = (0, 100, min(width, 760), min(height, 500))
    drawn = count_colour(rows, BLUE, region=region)
    _, _, bare_rows = read_png(bare_shot.read_bytes())
    assert drawn > 1500, drawn
    assert count_colour(bare_rows, BLUE, region=region) < 200
