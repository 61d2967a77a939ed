"""The thinnest reasonable Python relay: Starlette + one shared httpx.AsyncClient.

It reads the request body, POSTs it unchanged to the upstream and returns the
bytes; ``stream: true`` requests are relayed with a StreamingResponse over
``aiter_raw()``.  No auth, no accounting, no retries: this is the floor any
Python relay built on the same stack can reach.

Upstream base URL (ending in /v1) comes from PASSTHROUGH_UPSTREAM.
PASSTHROUGH_CLIENT=aiohttp swaps the shared httpx.AsyncClient for one
aiohttp.ClientSession (same app otherwise): the floor for an aiohttp-based relay.
Run: uvicorn passthrough:app --app-dir benchmarks --loop uvloop --http httptools
"""

from __future__ import annotations

import contextlib
import os

import httpx
import orjson
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

UPSTREAM = os.environ.get("PASSTHROUGH_UPSTREAM", "http://127.0.0.1:8001/v1").rstrip("/")
HEADERS = {"content-type": "application/json", "authorization": "Bearer bench-dummy"}

CLIENT = os.environ.get("PASSTHROUGH_CLIENT", "httpx")

_client: httpx.AsyncClient | None = None
_session = None  # aiohttp.ClientSession when CLIENT == "aiohttp"


@contextlib.asynccontextmanager
async def lifespan(app):
    global _client, _session
    if CLIENT == "aiohttp":
        import aiohttp

        _session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=256, keepalive_timeout=30),
            timeout=aiohttp.ClientTimeout(total=30),
            skip_auto_headers=("User-Agent",),
        )
        try:
            yield
        finally:
            await _session.close()
        return
    # Keep enough idle connections for the highest benchmark concurrency (64):
    # httpx's default of 20 keep-alive connections would make it reconnect.
    _client = httpx.AsyncClient(
        timeout=httpx.Timeout(30.0),
        limits=httpx.Limits(max_connections=256, max_keepalive_connections=256),
    )
    try:
        yield
    finally:
        await _client.aclose()


async def chat_completions(request: Request) -> Response:
    body = await request.body()
    try:
        stream = bool(orjson.loads(body).get("stream"))
    except Exception:
        stream = False
    url = UPSTREAM + "/chat/completions"
    if _session is not None:
        return await _aiohttp_post(url, body, stream)
    if not stream:
        r = await _client.post(url, content=body, headers=HEADERS)
        return Response(r.content, status_code=r.status_code, media_type=r.headers.get("content-type"))
    up = await _client.send(_client.build_request("POST", url, content=body, headers=HEADERS), stream=True)
    return StreamingResponse(
        up.aiter_raw(),
        status_code=up.status_code,
        media_type=up.headers.get("content-type"),
        background=BackgroundTask(up.aclose),
    )


async def _aiohttp_post(url: str, body: bytes, stream: bool) -> Response:
    up = await _session.post(url, data=body, headers=HEADERS)
    ctype = up.headers.get("content-type")
    if not stream:
        try:
            data = await up.read()
        finally:
            up.release()
        return Response(data, status_code=up.status, media_type=ctype)

    async def chunks():
        async for chunk in up.content.iter_any():
            yield chunk

    return StreamingResponse(chunks(), status_code=up.status, media_type=ctype, background=BackgroundTask(up.release))


async def models(request: Request) -> Response:
    if _session is not None:
        async with _session.get(UPSTREAM + "/models", headers=HEADERS) as up:
            return Response(await up.read(), status_code=up.status, media_type=up.headers.get("content-type"))
    r = await _client.get(UPSTREAM + "/models", headers=HEADERS)
    return Response(r.content, status_code=r.status_code, media_type=r.headers.get("content-type"))


app = Starlette(
    routes=[
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
    ],
    lifespan=lifespan,
)
