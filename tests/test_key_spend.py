"""The spend of managed keys and teams: each ledger row names its key (the key's id, never its
secret nor digest) and team; ``/v1/usage`` groups and filters by them (from SQLite's hourly
sums and from the rows alike, equal to the rows' own sums); the dashboard shows spend and
budget use per key and team; older SQLite and PostgreSQL ledgers gain the columns on open."""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections import defaultdict
from decimal import Decimal

import orjson
import pytest

from asgi_ai_relay.keys.record import Hasher
from asgi_ai_relay.storage import LEDGER_COLUMNS, LedgerQuery, LedgerRow, aggregate, ledger_from_uri
from tests.test_ledger_hourly import older_trigger
from asgi_ai_relay.storage import hourly
from asgi_ai_relay.storage.sqlite import SQLiteLedger
from tests.keys_helpers import ADMIN_KEY, CHAT, call, create_key, keys_config
from tests.relay_calls import chat, get, relays  # noqa: F401


def body(text: str) -> dict:
    return {"model": "test-model", **CHAT, "messages": [{"role": "user", "content": text}]}


async def usage(relay, query: str, key: str = ADMIN_KEY) -> dict:
    answer = await get(relay, "/v1/usage", query=query, key=key)
    assert answer.status == 200, answer.body
    return orjson.loads(answer.body)


def groups_of(report: dict, name: str) -> dict[str, tuple[int, Decimal]]:
    return {g["key"][name]: (g["requests"], Decimal(g["cost_usd"])) for g in report["groups"]}


def row_sums(rows, column: str) -> dict[str, tuple[int, Decimal]]:
    out: dict[str, list] = defaultdict(lambda: [0, Decimal(0)])
    for row in rows:
        out[getattr(row, column) or ""][0] += 1
        out[getattr(row, column) or ""][1] += row.cost_usd
    return {name: (n, usd) for name, (n, usd) in out.items()}


def model_rows(relay):
    """The ledger's rows of model requests (what ``/v1/usage`` sums; not the admin API's)."""
    return [row for row in relay.ledger.rows() if row.endpoint in relay.model_endpoints]


async def traffic(relay):
    """Keys of two owners, two in team research, one in no team; and a static caller's row."""
    laptop, made_laptop = await create_key(relay, "ada", name="laptop", team="research")
    ci, made_ci = await create_key(relay, "ada", name="ci", team="research")
    bob, made_bob = await create_key(relay, "bob", name="bob-key")
    for key, n in ((laptop, 3), (ci, 1), (bob, 2)):
        for i in range(n):
            assert (await chat(relay, body(f"request {i} " + "words " * 30 * i), key=key)).status == 200
    assert (await chat(relay, body("the admin's own"), key=ADMIN_KEY)).status == 200
    relay.ledger.flush()
    return {"laptop": (laptop, made_laptop), "ci": (ci, made_ci), "bob": (bob, made_bob)}


async def test_rows_name_the_key_and_team_and_usage_groups_by_them(upstream, relays, tmp_path):
    path = tmp_path / "u.db"
    relay = relays(keys_config(upstream, storage={"ledger": f"sqlite:///{path}"}))
    keys = await traffic(relay)
    rows = model_rows(relay)
    laptop_id, ci_id, bob_id = (keys[name][1]["id"] for name in ("laptop", "ci", "bob"))
    assert {(r.caller, r.key_id, r.team) for r in rows} == {
        ("ada", laptop_id, "research"), ("ada", ci_id, "research"), ("bob", bob_id, None), ("root", None, None)}
    # Never a secret nor a digest, in the rows or anywhere in the file.
    stored = path.read_bytes() + (tmp_path / "u.db-wal").read_bytes() if (tmp_path / "u.db-wal").exists() else path.read_bytes()
    for secret, _ in keys.values():
        assert secret.encode() not in stored and Hasher().digest(secret).encode() not in stored

    # Per key and per team, equal to the rows' own sums: from the hourly sums (no range) and
    # from the rows (a range inside the hour).
    by_key, by_team = row_sums(rows, "key_id"), row_sums(rows, "team")
    assert by_key[laptop_id][0] == 3 and by_key[ci_id][0] == 1 and by_key[bob_id][0] == 2
    since = f"from={min(r.ts for r in rows) - 1}"
    for query in ("", since):
        assert groups_of(await usage(relay, f"group_by=key&{query}"), "key") == by_key
        assert groups_of(await usage(relay, f"group_by=team&{query}"), "team") == by_team
        both = await usage(relay, f"group_by=team,key&{query}")
        assert {(g["key"]["team"], g["key"]["key"]) for g in both["groups"]} == {
            ("research", laptop_id), ("research", ci_id), ("", bob_id), ("", "")}
    assert sum(usd for _, usd in by_key.values()) == Decimal((await usage(relay, ""))["cost_usd"])

    # Filters: key= and team= (an admin's), and a key's own caller sees its own rows only.
    only = await usage(relay, f"key={laptop_id}")
    assert (only["requests"], Decimal(only["cost_usd"])) == by_key[laptop_id]
    team = await usage(relay, "team=research&group_by=key")
    assert set(groups_of(team, "key")) == {laptop_id, ci_id}
    mine = await usage(relay, "group_by=key", key=keys["bob"][0])
    assert groups_of(mine, "key") == {bob_id: by_key[bob_id]}
    assert (await usage(relay, f"key={laptop_id}", key=keys["bob"][0]))["requests"] == 0
    assert (await get(relay, "/v1/usage", query="caller=ada", key=keys["bob"][0])).status == 403
    bad = await get(relay, "/v1/usage", query="group_by=secret", key=ADMIN_KEY)
    assert bad.status == 400 and b"key, team" in bad.body


async def test_memory_ledger_groups_by_key_as_sql_does(upstream, relays):
    relay = relays(keys_config(upstream))  # memory://: summed in Python
    keys = await traffic(relay)
    rows = model_rows(relay)
    assert groups_of(await usage(relay, "group_by=key"), "key") == row_sums(rows, "key_id")
    laptop_id = keys["laptop"][1]["id"]
    assert (await usage(relay, f"key={laptop_id}"))["requests"] == 3


async def test_dashboard_shows_spend_and_budget_use_per_key_and_team(upstream, relays, tmp_path):
    relay = relays(keys_config(upstream, storage={"ledger": f"sqlite:///{tmp_path}/u.db"}, dashboard={"enabled": True}))
    keys = await traffic(relay)
    laptop_id = keys["laptop"][1]["id"]
    assert (await call(relay, "PATCH", f"/v1/keys/{laptop_id}", {"daily": "1"})).status == 200
    assert (await call(relay, "PUT", "/v1/key_limits/team:research", {"monthly": "2"})).status == 200
    report = await usage(relay, "group_by=key")
    spent = {g["key"]["key"]: g for g in report["groups"]}
    research = groups_of(await usage(relay, "group_by=team"), "team")["research"]
    html = (await get(relay, "/dashboard", key=ADMIN_KEY)).body.decode()
    for name in ("laptop", "ci", "bob"):
        made = keys[name][1]
        label = f"{made['prefix']} ({made['name']})"
        group = spent[made["id"]]
        assert f"<td>{label}</td><td>{group['requests']:,}</td>" in html
        assert f"${Decimal(group['cost_usd']):,.4f}" in html
        assert keys[name][0] not in html  # the prefix only, never the key
    assert f"<td>research</td><td>{research[0]:,}</td>" in html and f"${research[1]:,.4f}" in html
    assert 'aria-label="spend per key"' in html and 'aria-label="spend per team"' in html
    # Budget use of the key (its daily budget) and of the team (its monthly one).
    laptop = Decimal(spent[laptop_id]["cost_usd"])
    assert f"{keys['laptop'][1]['prefix']} (laptop) (day): {laptop / 1 * 100:.0f}% of $1.0000 ({'$'}{laptop:,.4f})" in html
    assert f"team research (month): {research[1] / 2 * 100:.0f}% of $2.0000 ({'$'}{research[1]:,.4f})" in html
    # Narrowed to one key: only its rows.
    for which in (laptop_id, keys["laptop"][1]["prefix"]):  # by its id or its visible prefix
        one = (await get(relay, "/dashboard", query=f"key={which}", key=ADMIN_KEY)).body.decode()
        assert "(ci)</td>" not in one and "(laptop)</td><td>3</td>" in one


def _old_sqlite_file(path) -> None:
    """A ledger file as the version before key and team wrote it: the row table without those
    columns, the hourly sums without them in their key, and that version's trigger."""
    old = [name for name in LEDGER_COLUMNS if name not in ("key_id", "team")]
    schema = hourly._SCHEMA.replace("key_id TEXT NOT NULL, team TEXT NOT NULL, ", "").replace(", key_id, team)", ")")
    trigger = (older_trigger(when=False).replace(", key_id, team", "")  # (that version's trigger added every row)
               .replace("COALESCE(NEW.key_id, ''), COALESCE(NEW.team, ''), ", ""))
    assert "key_id" not in schema and "key_id" not in trigger and "team" not in trigger
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"CREATE TABLE relay_usage (id INTEGER PRIMARY KEY AUTOINCREMENT, {', '.join(old)}, "
                 "cost_u INTEGER, cost_f INTEGER, saved_u INTEGER, saved_f INTEGER)")
    conn.execute(schema)
    conn.execute(trigger)
    now = time.time() - 7200
    for i in range(4):
        conn.execute("INSERT INTO relay_usage (ts, request_id, caller, endpoint, model, status, prompt_tokens, cost_usd, "
                     "cost_u, cost_f, saved_u, saved_f) VALUES (?, ?, 'ada', 'chat.completions', 'test-model', 200, 10, "
                     "'0.25', 250000, 0, 0, 0)", (now + i, f"old-{i}"))
    conn.close()


def test_older_sqlite_ledger_gains_the_columns_on_open(tmp_path):
    path = tmp_path / "old.db"
    _old_sqlite_file(path)
    ledger = SQLiteLedger(str(path))
    try:
        ledger.record(LedgerRow(ts=time.time(), request_id="new", caller="ada", endpoint="chat.completions",
                                model="test-model", cost_usd=Decimal("0.5"), key_id="key_0123", team="research"))
        rows = ledger.rows()
        assert [(r.request_id, r.key_id, r.team) for r in rows] == [
            *((f"old-{i}", None, None) for i in range(4)), ("new", "key_0123", "research")]
        conn = sqlite3.connect(path)
        assert {"key_id", "team"} <= {r[1] for r in conn.execute("PRAGMA table_info(relay_usage_hourly)")}
        conn.close()
        # The hourly sums were made again with the old rows, and keep counting new ones.
        for group_by in (("key",), ("team", "caller")):
            assert {k: (t.requests, t.cost_usd) for k, t in aggregate(ledger, LedgerQuery(), group_by).items()} == {
                k: (t.requests, t.cost_usd) for k, t in _python(rows, group_by).items()}
        key = aggregate(ledger, LedgerQuery(key_id="key_0123"), ())
        assert {k: (t.requests, t.cost_usd) for k, t in key.items()} == {("test-model",): (1, Decimal("0.5"))}
        assert aggregate(ledger, LedgerQuery(), ("key",))[("test-model", "")].cost_usd == Decimal("1")
    finally:
        ledger.close()
    # Opened again: nothing summed twice.
    again = SQLiteLedger(str(path))
    try:
        assert aggregate(again, LedgerQuery(), ())[("test-model",)].requests == 5
    finally:
        again.close()


def _python(rows, group_by):
    from asgi_ai_relay.storage.sums import aggregate_rows

    return aggregate_rows(rows, group_by)


@pytest.mark.postgres
def test_older_postgres_ledger_gains_the_columns_on_open(postgres_url, tmp_path):
    import psycopg

    from asgi_ai_relay.storage.postgres_schema import _TYPES

    table = f"relay_usage_{uuid.uuid4().hex}"
    old = [name for name in ("row_id", *LEDGER_COLUMNS) if name not in ("key_id", "team")]
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (id BIGSERIAL PRIMARY KEY, "
                     + ", ".join(f"{name} {_TYPES.get(name, 'TEXT')}" for name in old) + ")")
        conn.execute(f"INSERT INTO {table} (row_id, ts, request_id, caller, endpoint, model, cost_usd) "
                     "VALUES ('old-1', %s, 'old-1', 'ada', 'chat.completions', 'test-model', 0.25)", (time.time() - 60,))
    ledger = ledger_from_uri(f"{postgres_url}?table={table}&spool={tmp_path / 'spool.db'}")
    try:
        ledger.record(LedgerRow(ts=time.time(), request_id="new", caller="ada", endpoint="chat.completions",
                                model="test-model", cost_usd=Decimal("0.5"), key_id="key_0123", team="research"))
        rows = ledger.rows()
        assert [(r.request_id, r.key_id, r.team) for r in rows] == [("old-1", None, None), ("new", "key_0123", "research")]
        totals = aggregate(ledger, LedgerQuery(), ("key", "team"))
        assert {k: (t.requests, t.cost_usd) for k, t in totals.items()} == {
            ("test-model", "", ""): (1, Decimal("0.25")), ("test-model", "key_0123", "research"): (1, Decimal("0.5"))}
        assert aggregate(ledger, LedgerQuery(team="research"), ())[("test-model",)].requests == 1
    finally:
        ledger.close()
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {table}")


async def test_one_signed_alert_per_key_and_team_threshold(upstream, relays, tmp_path, caplog):
    """Key A (daily 4 requests' worth) and key B (no budget of its own) in team research (daily
    10 requests' worth), served by two workers in turn: each of the key's and the team's two
    thresholds alerts exactly once, naming its subject; the owner, with no budget, never."""
    import logging
    from datetime import UTC, datetime

    from tests.test_alerts import SECRET, cost_of, signed_alerts
    from tests.webhook_receiver import WebhookReceiver

    plain = {"model": "test-model", "messages": [{"role": "user", "content": "spend some money please"}]}
    each = cost_of(plain)

    def config(hook_url):
        return keys_config(upstream, store=f"sqlite:///{tmp_path}/keys.db",
                           storage={"ledger": f"sqlite:///{tmp_path}/u.db"}, budgets={"soft_threshold": "0.5"},
                           alerts={"webhook": {"url": hook_url, "secret": SECRET, "backoff": 0.05}})

    with WebhookReceiver() as hook:
        workers = [relays(config(hook.url)), relays(config(hook.url))]
        a, made_a = await create_key(workers[0], "ada", name="a", team="research", daily=str(each * 4))
        b, _ = await create_key(workers[0], "ada", name="b", team="research")
        assert (await call(workers[0], "PUT", "/v1/key_limits/team:research", {"daily": str(each * 10)})).status == 200
        with caplog.at_level(logging.WARNING, logger="asgi_ai_relay"):
            for key in (a, b):
                for n in range(30):
                    answer = await chat(workers[n % 2], plain, key=key)
                    if answer.status == 429:
                        break
                    assert answer.status == 200, answer.body
                else:
                    raise AssertionError("never refused")
            for worker in workers:
                await worker.shutdown()  # waits for the background deliveries
        alerts = signed_alerts(hook.posts)
        today = datetime.now(UTC).strftime("%Y-%m-%d")
        got = sorted((x["subject_kind"], x["subject_id"], x["threshold"], x["kind"]) for x in alerts)
        assert got == [("key", made_a["id"], "0.5", "soft"), ("key", made_a["id"], "1", "exceeded"),
                       ("team", "research", "0.5", "soft"), ("team", "research", "1", "exceeded")], got
        for alert in alerts:
            limit = each * (4 if alert["subject_kind"] == "key" else 10)
            assert (alert["budget"], alert["period"], Decimal(alert["limit_usd"])) == ("daily", today, limit)
            assert Decimal(alert["spent_usd"]) >= Decimal(alert["threshold"]) * limit
            assert alert["caller"] == f"{alert['subject_kind']}:{alert['subject_id']}"
        assert a not in str(alerts) and made_a["prefix"] not in str(alerts)  # the key's id, not its secret
        lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("budget: ")]
        assert sum(f"budget: key {made_a['id']} has used" in line for line in lines) == 2
        assert sum("budget: team research has used" in line for line in lines) == 2

        # A restart: the key's and the team's counters are seeded from the ledger's rows of
        # that key and team (both spent), and the claims say every alert was sent.
        again = relays(config(hook.url))
        assert (await chat(again, plain, key=a)).status == 429
        assert (await chat(again, plain, key=b)).status == 429
        await again.shutdown()
        assert len(hook.posts) == 4


@pytest.mark.redis
async def test_redis_budget_counters_of_a_key_and_a_team_are_seeded_from_their_ledger_rows(upstream, relays, tmp_path,
                                                                                          redis_url):
    """Budgets on Redis whose counters are gone (a flushed Redis, a new prefix): a key's and a
    team's are seeded from the ledger's rows of that key and team, not the owner's."""
    from tests.test_budget_redis import cleanup

    plain = {"model": "test-model", "messages": [{"role": "user", "content": "spend some money please"}]}
    prefixes = [f"t-{uuid.uuid4().hex}", f"t-{uuid.uuid4().hex}"]
    try:
        def config(prefix):
            return keys_config(upstream, store=f"sqlite:///{tmp_path}/keys.db",
                               storage={"ledger": f"sqlite:///{tmp_path}/u.db", "budgets": f"{redis_url}?prefix={prefix}&timeout=2"})

        first = relays(config(prefixes[0]))
        spent, made = await create_key(first, "ada", team="research")
        fresh, _ = await create_key(first, "ada")
        other_team, _ = await create_key(first, "ada", team="ops")
        for _ in range(3):
            assert (await chat(first, plain, key=spent)).status == 200
        first.ledger.flush()
        cost = sum(r.cost_usd for r in model_rows(first))
        assert (await call(first, "PATCH", f"/v1/keys/{made['id']}", {"daily": str(cost)})).status == 200
        assert (await call(first, "PUT", "/v1/key_limits/team:ops", {"daily": str(cost)})).status == 200
        await first.shutdown()

        again = relays(config(prefixes[1]))  # no counters on this prefix: seeded from the ledger
        assert (await chat(again, plain, key=spent)).status == 429  # its key's rows: spent
        assert (await chat(again, plain, key=fresh)).status == 200  # the owner's other key: not
        assert (await chat(again, plain, key=other_team)).status == 200  # team ops: no rows (not its owner's)
    finally:
        for prefix in prefixes:
            await cleanup(redis_url, prefix)
