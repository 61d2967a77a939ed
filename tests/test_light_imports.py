"""A relay on the embedded defaults loads no client library it does not use: Redis, httpx
(and what httpx's command line pulls in: click, rich, pygments), psycopg, the cloud SDKs.
Each is imported when a configuration names it (a redis:// URI, http.client = "httpx", a
webhook, a postgresql:// ledger, a Bedrock or Vertex provider)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: Top-level packages a relay on memory, SQLite and its own HTTP client never needs.
UNUSED = ("redis", "httpx", "click", "rich", "pygments", "psycopg", "botocore", "google", "azure", "aiohttp")


def loaded_by(script: str) -> set[str]:
    code = textwrap.dedent(script) + textwrap.dedent("""
        import json, sys
        print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_a_relay_on_the_defaults_loads_no_unused_client_library(tmp_path):
    loaded = loaded_by(f"""
        import asyncio
        from asgi_ai_relay import Relay, RelayMiddleware
        from asgi_ai_relay.config import load_config

        config = load_config({{
            "providers": {{"up": {{"kind": "openai_compatible", "base_url": "http://127.0.0.1:9/v1", "api_key": "k"}}}},
            "models": {{"m": {{"provider": "up", "upstream": "m", "price": {{"input": 1, "output": 2}}}}}},
            "storage": {{"ledger": "sqlite:///{tmp_path}/u.db"}},
            "limits": {{"caller": {{"rpm": 100}}}},
        }})
        relay = Relay(config)
        RelayMiddleware(None, relay=relay)
        relay.ledger, relay.cache, relay.providers
    """)
    assert not loaded & set(UNUSED), sorted(loaded & set(UNUSED))


def test_a_configuration_that_names_redis_loads_it():
    """The control: the same probe sees a library that is used."""
    loaded = loaded_by("""
        from asgi_ai_relay.storage import cache_from_uri
        cache_from_uri("redis://127.0.0.1:6379/0")
    """)
    assert "redis" in loaded
