"""The OpenAPI 3.1 document of the relay's own endpoints, served at ``{prefix}/openapi.json``.

Built once per relay (at start-up), from the routes it serves; the request schemas say what the
relay itself checks (``protocol/openai.py``, ``protocol/anthropic.py``), leaving the parameters
it passes through open (``additionalProperties``).
"""

from __future__ import annotations

from typing import Any

__all__ = ["openapi_document"]

_REF = "#/components/schemas/"

_TEXT_PART: dict[str, Any] = {"type": "object", "required": ["type"], "properties": {"type": {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,63}$"}}}
_CHAT_MESSAGE: dict[str, Any] = {
    "type": "object",
    "required": ["role", "content"],
    "properties": {
        "role": {"enum": ["system", "developer", "user", "assistant", "tool", "function"]},
        "content": {"oneOf": [{"type": "string"}, {"type": "array", "items": _TEXT_PART}]},
        "name": {"type": "string"},
        "tool_call_id": {"type": "string"},
    },
}
_TOKENS: dict[str, Any] = {"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": 0}}
_EMBEDDINGS_REQUEST: dict[str, Any] = {
    "type": "object",
    "required": ["model", "input"],
    "properties": {
        "model": {"type": "string", "minLength": 1},
        "input": {"oneOf": [
            {"type": "string", "minLength": 1}, {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}},
            _TOKENS, {"type": "array", "minItems": 1, "items": _TOKENS},
        ]},
        "encoding_format": {"enum": ["float", "base64"]},
        "dimensions": {"type": "integer", "minimum": 1},
        "user": {"type": "string"},
    },
}
_CHAT_REQUEST: dict[str, Any] = {
    "type": "object",
    "required": ["model", "messages"],
    "properties": {
        "model": {"type": "string", "minLength": 1},
        "messages": {"type": "array", "minItems": 1, "items": _CHAT_MESSAGE},
        "stream": {"type": "boolean"},
        "temperature": {"type": "number", "minimum": 0, "maximum": 2},
        "top_p": {"type": "number", "minimum": 0, "maximum": 1},
        "n": {"type": "integer", "minimum": 1, "maximum": 128},
        "max_tokens": {"type": "integer", "minimum": 1},
        "max_completion_tokens": {"type": "integer", "minimum": 1},
        "stop": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}, {"type": "null"}]},
        "tools": {"type": "array", "items": {"type": "object"}},
        "user": {"type": "string"},
    },
}
_ANTHROPIC_MESSAGE: dict[str, Any] = {
    "type": "object",
    "required": ["role", "content"],
    "properties": {
        "role": {"enum": ["user", "assistant"]},
        "content": {"oneOf": [{"type": "string"}, {"type": "array", "items": _TEXT_PART}]},
    },
}
_MESSAGES_REQUEST: dict[str, Any] = {
    "type": "object",
    "required": ["model", "messages", "max_tokens"],
    "properties": {
        "model": {"type": "string", "minLength": 1},
        "messages": {"type": "array", "minItems": 1, "items": _ANTHROPIC_MESSAGE},
        "max_tokens": {"type": "integer", "minimum": 1},
        "system": {"oneOf": [{"type": "string"}, {"type": "array", "items": _TEXT_PART}]},
        "stream": {"type": "boolean"},
        "temperature": {"type": "number", "minimum": 0, "maximum": 1},
        "stop_sequences": {"type": "array", "items": {"type": "string"}},
    },
}
_RESPONSES_REQUEST: dict[str, Any] = {
    "type": "object",
    "required": ["model", "input"],
    "properties": {
        "model": {"type": "string", "minLength": 1},
        "input": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "object"}}]},
        "instructions": {"type": "string"},
        "previous_response_id": {"type": "string"},
        "store": {"type": "boolean"},
        "stream": {"type": "boolean"},
        "temperature": {"type": "number", "minimum": 0, "maximum": 2},
        "top_p": {"type": "number", "minimum": 0, "maximum": 1},
        "max_output_tokens": {"type": "integer", "minimum": 1},
        "tools": {"type": "array", "items": {"type": "object", "properties": {"type": {"enum": ["function", "namespace"]}}}},
    },
}
_OPENAI_ERROR: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "object", "required": ["message", "type"], "properties": {
        "message": {"type": "string"}, "type": {"type": "string"}, "param": {"type": ["string", "null"]}, "code": {"type": ["string", "null"]},
    }}},
}
_ANTHROPIC_ERROR: dict[str, Any] = {
    "type": "object",
    "required": ["type", "error"],
    "properties": {"type": {"const": "error"}, "error": {"type": "object", "required": ["type", "message"]}},
}
_GEMINI_ERROR: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "object", "required": ["code", "message", "status"]}},
}
_GEMINI_REQUEST: dict[str, Any] = {
    "type": "object",
    "required": ["contents"],
    "properties": {
        "contents": {"type": "array", "minItems": 1, "items": {"type": "object", "required": ["parts"], "properties": {
            "role": {"type": "string", "enum": ["user", "model"]},
            "parts": {"type": "array", "items": {"type": "object", "properties": {"text": {"type": "string"}}}},
        }}},
        "systemInstruction": {"type": "object"}, "generationConfig": {"type": "object"},
        "tools": {"type": "array", "items": {"type": "object"}}, "toolConfig": {"type": "object"},
    },
}
_ERROR_STATUSES = {
    "400": "Invalid request", "401": "No valid credentials", "403": "Not allowed", "404": "Unknown model or path",
    "413": "Body over max_body_bytes", "429": "Rate limited (Retry-After)", "502": "Upstream failure",
    "503": "Unavailable (Retry-After)", "504": "Upstream timeout",
}


def _errors(schema: str) -> dict[str, Any]:
    body = {"application/json": {"schema": {"$ref": _REF + schema}}}
    return {status: {"description": text, "content": body} for status, text in _ERROR_STATUSES.items()}


def _json(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema or {"type": "object"}}}}


def _post(summary: str, request: str, error: str, *, stream: bool) -> dict[str, Any]:
    ok = _json("The answer")
    if stream:
        ok["content"]["text/event-stream"] = {"schema": {"type": "string"}}
    return {
        "post": {
            "summary": summary,
            "requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": _REF + request}}}},
            "responses": {"200": ok, **_errors(error)},
        }
    }


def _get(summary: str, parameters: tuple[str, ...] = (), content_type: str = "application/json") -> dict[str, Any]:
    ok = {"description": summary, "content": {content_type: {"schema": {"type": "object"} if content_type == "application/json" else {"type": "string"}}}}
    query = [{"name": name, "in": "query", "required": False, "schema": {"type": "string"}} for name in parameters]
    return {"get": {"summary": summary, "parameters": query, "responses": {"200": ok, **_errors("OpenAIError")}}}


def _gemini(models: dict[str, Any]) -> dict[str, Any]:
    """The Gemini-native operations, the model a path parameter."""
    name = {"name": "model", "in": "path", "required": True, "schema": models}
    paths: dict[str, Any] = {}
    for action, summary in (("generateContent", "Gemini generateContent"), ("streamGenerateContent", "Gemini stream (?alt=sse)"),
                            ("countTokens", "Gemini token count")):
        operation = _post(summary, "GeminiRequest", "GeminiError", stream=action == "streamGenerateContent")
        operation["post"]["parameters"] = [name]
        paths[f"/v1beta/models/{{model}}:{action}"] = operation
    paths["/v1beta/models"] = _get("The chat models, in Gemini's list shape")
    return paths


def openapi_document(prefix: str, version: str, models: list[str]) -> dict[str, Any]:
    """The document for a relay mounted at ``prefix``.

    :param prefix: the relay prefix (``/ai``); the document's server URL.
    :param version: the package version, as ``info.version``.
    :param models: the model names it serves (others: 404).
    """
    model = {"type": "string", "enum": sorted(models)} if models else {"type": "string", "minLength": 1}
    chat = {**_CHAT_REQUEST, "properties": {**_CHAT_REQUEST["properties"], "model": model}}
    messages = {**_MESSAGES_REQUEST, "properties": {**_MESSAGES_REQUEST["properties"], "model": model}}
    embeddings = {**_EMBEDDINGS_REQUEST, "properties": {**_EMBEDDINGS_REQUEST["properties"], "model": model}}
    responses = {**_RESPONSES_REQUEST, "properties": {**_RESPONSES_REQUEST["properties"], "model": model}}
    stored = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "asgi-ai-relay", "version": version, "description": "OpenAI- and Anthropic-compatible relay endpoints."},
        "servers": [{"url": prefix or "/"}],
        "security": [{"bearer": []}, {"apiKey": []}],
        "paths": {
            "/v1/chat/completions": _post("OpenAI Chat Completions", "ChatRequest", "OpenAIError", stream=True),
            "/v1/messages": _post("Anthropic Messages", "MessagesRequest", "AnthropicError", stream=True),
            "/v1/responses": _post("OpenAI Responses", "ResponsesRequest", "OpenAIError", stream=True),
            "/v1/responses/input_tokens": _post("Responses input token count (no upstream call)", "ResponsesRequest", "OpenAIError", stream=False),
            "/v1/responses/{id}": {
                method: {**_get(summary)["get"], "parameters": [stored]}
                for method, summary in (("get", "The caller's own stored response"), ("delete", "Forget the caller's own stored response"))
            },
            "/v1/messages/count_tokens": _post("Anthropic token count", "MessagesRequest", "AnthropicError", stream=False),
            "/v1/embeddings": _post("OpenAI Embeddings", "EmbeddingsRequest", "OpenAIError", stream=False),
            "/v1/models": _get("The models this relay serves, with prices"),
            "/v1/usage": _get("Usage and cost from the ledger", ("caller", "model", "key", "team", "from", "to", "group_by", "compare")),
            "/v1/health": _get("Upstream health as the breakers see it; ?ready: readiness, 503 when not ready", ("ready",)),
            "/readyz": _get("Readiness for probes, without authentication (503 when not ready)"),
            "/metrics": _get("Prometheus metrics (when enabled)", content_type="text/plain"),
            "/openapi.json": _get("This document"),
            **_gemini(model),
        },
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "A relay API key, or the host's own login"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
            },
            "schemas": {
                "ChatRequest": chat, "MessagesRequest": messages, "EmbeddingsRequest": embeddings, "ResponsesRequest": responses,
                "OpenAIError": _OPENAI_ERROR, "AnthropicError": _ANTHROPIC_ERROR,
                "GeminiRequest": _GEMINI_REQUEST, "GeminiError": _GEMINI_ERROR,
            },
        },
    }
