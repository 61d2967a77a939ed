"""A small FastAPI service that already exists, with the relay mounted at /ai.

Run it:   python example_projects/fastapi_service/main.py       (or: make demo)

With no provider key in the environment every model is served by the offline mock provider.
Set OPENAI_API_KEY (or ANTHROPIC_API_KEY, GEMINI_API_KEY, DEEPSEEK_API_KEY) to relay the
matching default model to the real provider, or point AI_RELAY_CONFIG at a TOML file.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from asgi_ai_relay import RelayMiddleware

PROVIDER_KEYS = {
    "openai": "OPENAI_API_KEY",
    "anthropic": "ANTHROPIC_API_KEY",
    "gemini": "GEMINI_API_KEY",
    "deepseek": "DEEPSEEK_API_KEY",
}


def relay_config() -> dict[str, Any] | str:
    """AI_RELAY_CONFIG when set; otherwise a provider for every key found, the mock for the rest."""
    path = os.environ.get("AI_RELAY_CONFIG")
    if path:
        return path
    providers = {name: {"api_key": f"env:{var}"} for name, var in PROVIDER_KEYS.items() if os.environ.get(var)}
    return {"prefix": "/ai", "providers": providers}


app = FastAPI(title="Notes service")
app.add_middleware(RelayMiddleware, config=relay_config())

NOTES: list[str] = ["Buy milk", "Ship the relay"]


class Note(BaseModel):
    text: str


@app.get("/")
async def index() -> dict[str, Any]:
    return {"service": "notes", "notes": len(NOTES), "ai": "/ai/v1/chat/completions"}


@app.get("/notes")
async def list_notes() -> list[str]:
    return NOTES


@app.post("/notes")
async def add_note(note: Note) -> dict[str, int]:
    NOTES.append(note.text)
    return {"count": len(NOTES)}


def main() -> None:
    import logging

    import uvicorn

    # The relay logs one line per request on "asgi_ai_relay"; the host decides where it goes.
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s %(message)s")

    host = os.environ.get("HOST", "127.0.0.1")
    port = int(os.environ.get("PORT", "8000"))
    base = f"http://{host}:{port}"
    print(
        f"""
Notes service with asgi-ai-relay mounted at {base}/ai

  curl {base}/ai/v1/chat/completions -H 'content-type: application/json' \\
       -d '{{"model": "gpt-4.1", "messages": [{{"role": "user", "content": "Hello"}}]}}'

  python -c "from openai import OpenAI; c = OpenAI(base_url='{base}/ai/v1', api_key='unused'); \\
print(c.chat.completions.create(model='gpt-4.1', messages=[{{'role': 'user', 'content': 'Hello'}}]).choices[0].message.content)"

  curl {base}/ai/v1/models        curl {base}/ai/v1/usage
""",
        file=sys.stderr,
        flush=True,
    )
    uvicorn.run(app, host=host, port=port, log_level="info")


if __name__ == "__main__":
    main()
