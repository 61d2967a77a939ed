"""Fake Azure OpenAI, AWS Bedrock and Google Vertex AI: real HTTP servers on 127.0.0.1.

Each is a :class:`tests.fake_upstream.FakeUpstream` (same recording, scripting and replies)
that first checks the cloud's own authentication and URL shape, then answers in the cloud's
wire format:

* :class:`FakeAzure`: ``/openai/v1/chat/completions`` (model in the body) and
  ``/openai/deployments/{deployment}/{chat/completions,embeddings}?api-version=``; an
  ``api-key`` header or ``Authorization: Bearer`` with a token in ``entra_tokens``;
* :class:`FakeBedrock`: ``/model/{id}/converse`` and ``/converse-stream`` (AWS event stream
  framing written here, independently of the relay's decoder) with SigV4 checked by botocore's
  own signer, or a Bedrock API key as a bearer; ``/openai/v1/chat/completions`` and
  ``/anthropic/v1/messages`` (the API-key endpoints);
* :class:`FakeVertex`: ``/v1/projects/{p}/locations/{r}/publishers/google/models/{m}:
  generateContent`` / ``:streamGenerateContent`` and ``publishers/anthropic/.../:rawPredict`` /
  ``:streamRawPredict`` (``anthropic_version: vertex-2023-10-16``, no ``model``), with a bearer
  token issued by its own OAuth token endpoint (``POST /token``, a JWT-bearer grant whose
  assertion is verified against the service account's public key).
"""

from __future__ import annotations

import base64
import dataclasses
import hmac
import json
import re
import struct
import threading
import uuid
import zlib
from typing import Any
from urllib.parse import parse_qsl, unquote

import orjson

from tests.fake_upstream import (
    TOOL_ARGUMENT_PIECE,
    Behaviour,
    FakeUpstream,
    RecordedRequest,
    _json_reply,
    _new_id,
    _Reply,
    plan_reply,
)

# ---- AWS event stream framing (the fake's own encoder) -------------------------------

def _header(name: str, value: Any) -> bytes:
    raw = name.encode()
    out = struct.pack(">B", len(raw)) + raw
    if isinstance(value, bool):
        return out + (b"\x00" if value else b"\x01")
    if isinstance(value, int):
        return out + b"\x04" + struct.pack(">i", value)
    if isinstance(value, uuid.UUID):
        return out + b"\x09" + value.bytes
    if isinstance(value, bytes):
        return out + b"\x06" + struct.pack(">H", len(value)) + value
    text = str(value).encode()
    return out + b"\x07" + struct.pack(">H", len(text)) + text


def frame(headers: dict[str, Any], payload: bytes) -> bytes:
    """One event stream message."""
    encoded = b"".join(_header(k, v) for k, v in headers.items())
    total = 12 + len(encoded) + len(payload) + 4
    prelude = struct.pack(">II", total, len(encoded))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    body = prelude + encoded + payload
    return body + struct.pack(">I", zlib.crc32(body))


def event(kind: str, payload: dict[str, Any]) -> bytes:
    payload = {**payload, "p": "abcdefghijklmnopqrstuvwxyzABCDEF"[: len(kind)]}  # AWS pads its events
    return frame({":event-type": kind, ":content-type": "application/json", ":message-type": "event"}, orjson.dumps(payload))


def exception(kind: str, message: str) -> bytes:
    headers = {":exception-type": kind, ":content-type": "application/json", ":message-type": "exception"}
    return frame(headers, orjson.dumps({"message": message}))


# ---- Converse ------------------------------------------------------------------------


def converse_to_anthropic(body: dict[str, Any]) -> dict[str, Any]:
    """A Converse request as the Anthropic body the shared reply planner reads."""

    def block(b: dict[str, Any]) -> dict[str, Any]:
        if "text" in b:
            return {"type": "text", "text": b["text"]}
        if "toolUse" in b:
            use = b["toolUse"]
            return {"type": "tool_use", "id": use["toolUseId"], "name": use["name"], "input": use["input"]}
        if "toolResult" in b:
            result = b["toolResult"]
            texts = [{"type": "text", "text": c.get("text", json.dumps(c.get("json")))} for c in result["content"]]
            return {"type": "tool_result", "tool_use_id": result["toolUseId"], "content": texts}
        if "image" in b:
            return {"type": "image", "source": {"type": "base64", "media_type": "image/" + b["image"]["format"], "data": ""}}
        raise ValueError(f"unknown Converse block {sorted(b)}")

    out: dict[str, Any] = {
        "messages": [{"role": m["role"], "content": [block(b) for b in m["content"]]} for m in body["messages"]],
        "max_tokens": (body.get("inferenceConfig") or {}).get("maxTokens", 4096),
    }
    if body.get("system"):
        out["system"] = "\n".join(s["text"] for s in body["system"])
    tools = (body.get("toolConfig") or {}).get("tools") or []
    if tools:
        out["tools"] = [
            {"name": t["toolSpec"]["name"], "description": t["toolSpec"].get("description", ""), "input_schema": t["toolSpec"]["inputSchema"]["json"]}
            for t in tools
        ]
        choice = (body.get("toolConfig") or {}).get("toolChoice") or {}
        if "any" in choice:
            out["tool_choice"] = {"type": "any"}
        elif "tool" in choice:
            out["tool_choice"] = {"type": "tool", "name": choice["tool"]["name"]}
    return out


def _converse_usage(plan: Any) -> dict[str, Any]:
    uncached = plan.prompt_tokens - plan.cached_tokens - plan.cache_creation_tokens
    return {
        "inputTokens": uncached,
        "outputTokens": plan.completion_tokens,
        "totalTokens": plan.prompt_tokens + plan.completion_tokens,
        "cacheReadInputTokens": plan.cached_tokens,
        "cacheWriteInputTokens": plan.cache_creation_tokens,
    }


def _stop(plan: Any) -> str:
    return "tool_use" if plan.tool_call else ("max_tokens" if plan.truncated else "end_turn")


def converse_reply(plan: Any) -> dict[str, Any]:
    if plan.tool_call is not None:
        content = [{"toolUse": {"toolUseId": _new_id("tooluse_"), "name": plan.tool_call.name, "input": plan.tool_call.arguments}}]
    else:
        content = [{"text": plan.text}]
    return {
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": _stop(plan),
        "usage": _converse_usage(plan),
        "metrics": {"latencyMs": 42},
    }


def converse_stream(plan: Any) -> list[bytes]:
    """The frames of a ConverseStream answer, each cut in two so frames straddle reads."""
    frames = [event("messageStart", {"role": "assistant"})]
    if plan.tool_call is not None:
        start = {"toolUse": {"toolUseId": _new_id("tooluse_"), "name": plan.tool_call.name}}
        frames.append(event("contentBlockStart", {"contentBlockIndex": 0, "start": start}))
        args = plan.tool_call.arguments_json
        for i in range(0, len(args), TOOL_ARGUMENT_PIECE):
            frames.append(event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"toolUse": {"input": args[i : i + TOOL_ARGUMENT_PIECE]}}}))
    else:
        for piece in plan.pieces:
            frames.append(event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": piece}}))
    frames.append(event("contentBlockStop", {"contentBlockIndex": 0}))
    frames.append(event("messageStop", {"stopReason": _stop(plan)}))
    frames.append(event("metadata", {"usage": _converse_usage(plan), "metrics": {"latencyMs": 42}}))
    out: list[bytes] = []
    for f in frames:
        cut = len(f) // 3
        out += [f[:cut], f[cut:]]
    return out


# ---- SigV4, checked with botocore's own signer ---------------------------------------

_AUTH = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/(?P<service>[^/]+)/aws4_request, "
    r"SignedHeaders=(?P<signed>[^,]+), Signature=(?P<signature>[0-9a-f]{64})$"
)


def sigv4_problem(request: RecordedRequest, access_key: str, secret_key: str, token: str | None, region: str) -> str | None:
    """Why the request's signature is wrong, or None when botocore computes the same one."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    match = _AUTH.match(request.headers.get("authorization", ""))
    if match is None:
        return "missing or malformed SigV4 Authorization header"
    if match["key"] != access_key:
        return "unknown access key"
    if match["region"] != region or match["service"] != "bedrock":
        return f"credential scope {match['region']}/{match['service']} is not {region}/bedrock"
    signed = match["signed"].split(";")
    if token is not None and "x-amz-security-token" not in signed:
        return "the session token is not signed"
    if token is not None and request.headers.get("x-amz-security-token") != token:
        return "wrong session token"
    headers = {name: request.headers.get(name, "") for name in signed}
    query = f"?{request.query_string}" if request.query_string else ""
    url = f"http://{request.headers['host']}{request.raw_path}{query}"
    aws = AWSRequest(method=request.method, url=url, data=request.body, headers=headers)
    aws.context["timestamp"] = request.headers.get("x-amz-date", "")
    signer = SigV4Auth(Credentials(access_key, secret_key, token), "bedrock", region)
    if signer.signed_headers(signer.headers_to_sign(aws)) != match["signed"]:
        return "signed headers differ"
    expected = signer.signature(signer.string_to_sign(aws, signer.canonical_request(aws)), aws)
    return None if hmac.compare_digest(expected, match["signature"]) else "signature mismatch"


class _Cloud(FakeUpstream):
    """Shared: a rewrite step in front of the fake's normal replies."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.refusals: list[str] = []

    def _rewrite(self, request: RecordedRequest, path: str, body: Any | None = None, headers: dict[str, str] | None = None) -> RecordedRequest:
        body = request.json if body is None else body
        return dataclasses.replace(request, path=path, json=body, body=orjson.dumps(body), headers=headers or request.headers, api=None)

    def _refuse(self, status: int, why: str, shape: str = "openai") -> _Reply:
        self.refusals.append(why)
        if shape == "bedrock":
            reply = _json_reply(status, {"message": why})
            reply.headers["x-amzn-errortype"] = "UnrecognizedClientException" if status == 403 else "ValidationException"
            return reply
        if shape == "google":
            return _json_reply(status, {"error": {"code": status, "message": why, "status": "UNAUTHENTICATED"}})
        return _json_reply(status, {"error": {"code": str(status), "message": why}})


def _bearer(request: RecordedRequest) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token if scheme.lower() == "bearer" else None


class FakeAzure(_Cloud):
    _DEPLOYMENT = re.compile(r"^/openai/deployments/(?P<deployment>[^/]+)/(?P<operation>chat/completions|embeddings)$")

    def __init__(self, *, api_key: str, deployments: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.azure_key = api_key
        self.entra_tokens: set[str] = set()
        #: deployment name -> the model it serves
        self.deployments = deployments or {}

    def _reply_for(self, request: RecordedRequest, behaviour: Behaviour) -> _Reply:
        key, token = request.headers.get("api-key"), _bearer(request)
        if request.headers.get("x-api-key") == self.azure_key:
            key = self.azure_key
        if key != self.azure_key and token not in self.entra_tokens:
            return self._refuse(401, "Access denied due to invalid subscription key or wrong API endpoint.")
        if request.path in ("/openai/v1/chat/completions", "/openai/v1/embeddings"):
            return super()._reply_for(self._rewrite(request, request.path.removeprefix("/openai")), behaviour)
        if request.path == "/anthropic/v1/messages":  # Claude on Microsoft Foundry
            if key is None and token is None and request.headers.get("x-api-key") != self.azure_key:
                return self._refuse(401, "Access denied")
            return super()._reply_for(self._rewrite(request, "/v1/messages"), behaviour)
        match = self._DEPLOYMENT.match(request.path)
        if match is None:
            return self._refuse(404, "Resource not found")
        if not request.query.get("api-version"):
            return self._refuse(400, "Missing required query parameter: api-version")
        model = self.deployments.get(match["deployment"])
        if model is None:
            return self._refuse(404, "The API deployment for this resource does not exist.")
        body = {**request.json, "model": model}
        return super()._reply_for(self._rewrite(request, f"/v1/{match['operation']}", body), behaviour)


class FakeBedrock(_Cloud):
    _CONVERSE = re.compile(r"^/model/(?P<model>[^/]+)/(?P<op>converse|converse-stream|invoke|invoke-with-response-stream)$")

    def __init__(self, *, region: str, access_key: str, secret_key: str, session_token: str | None = None, api_key: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.region = region
        self.aws = (access_key, secret_key, session_token)
        self.bedrock_key = api_key
        self.betas: list[Any] = []

    def _authorized(self, request: RecordedRequest, *, sigv4: bool) -> str | None:
        if self.bedrock_key is not None and self.bedrock_key in (_bearer(request), request.headers.get("x-api-key")):
            return None
        if not sigv4:
            return "invalid API key"
        return sigv4_problem(request, *self.aws, self.region)

    def _reply_for(self, request: RecordedRequest, behaviour: Behaviour) -> _Reply:
        match = self._CONVERSE.match(request.raw_path)  # the model id is one segment of the path as sent
        if match is None and request.path in ("/openai/v1/chat/completions", "/anthropic/v1/messages"):
            problem = self._authorized(request, sigv4=False)
            if problem:
                return self._refuse(401, problem)
            return super()._reply_for(self._rewrite(request, request.path.removeprefix("/openai").removeprefix("/anthropic")), behaviour)
        if match is None:
            return self._refuse(404, f"Unknown operation {request.path}", "bedrock")
        problem = self._authorized(request, sigv4=True)
        if problem:
            return self._refuse(403, f"The request signature we calculated does not match: {problem}", "bedrock")
        if behaviour.status is not None:
            reply = _json_reply(behaviour.status, {"message": f"Injected fault: HTTP {behaviour.status}"})
            if behaviour.retry_after is not None:
                reply.headers["retry-after"] = str(behaviour.retry_after)
            return reply
        if match["op"].startswith("invoke"):
            return self._invoke(request, unquote(match["model"]), match["op"] != "invoke", behaviour)
        if not isinstance(request.json, dict) or "model" in request.json or "messages" not in request.json:
            return self._refuse(400, "Malformed input request: #: extraneous key [model] is not permitted", "bedrock")
        plan = plan_reply(converse_to_anthropic(request.json), "anthropic", behaviour)
        if match["op"] == "converse":
            return _json_reply(200, converse_reply(plan))
        reply = _Reply(200, {"content-type": "application/vnd.amazon.eventstream"}, events=converse_stream(plan))
        if behaviour.stream_error_after is not None:
            reply.stream_error = exception("throttlingException", "Too many requests, please wait before trying again.")
        return reply


    def _invoke(self, request: RecordedRequest, model: str, stream: bool, behaviour: Behaviour) -> _Reply:
        """Claude's InvokeModel: Anthropic's body with ``anthropic_version: bedrock-2023-05-31``."""
        body = request.json
        if not isinstance(body, dict) or body.get("anthropic_version") != "bedrock-2023-05-31" or "model" in body or "stream" in body:
            return self._refuse(400, "Malformed input request: anthropic_version bedrock-2023-05-31 required; model, stream not permitted", "bedrock")
        self.betas.append(body.get("anthropic_beta"))
        body = {k: v for k, v in body.items() if k not in ("anthropic_version", "anthropic_beta")} | {"model": model, "stream": stream}
        reply = super()._reply_for(self._rewrite(request, "/v1/messages", body), behaviour)
        if not stream or reply.events is None:
            return reply
        frames = []
        for sse in reply.events:
            data = sse.split(b"data: ", 1)[1].strip()
            if b'"message_stop"' in data:  # Bedrock adds its metrics to the last event
                data = data[:-1] + b', "amazon-bedrock-invocationMetrics": {"inputTokenCount": 1, "outputTokenCount": 1}}'
            frames.append(event_bytes(data))
        reply.events = frames
        reply.headers["content-type"] = "application/vnd.amazon.eventstream"
        if behaviour.stream_error_after is not None:
            reply.stream_error = exception("throttlingException", "Too many requests, please wait before trying again.")
        return reply


def event_bytes(data: bytes) -> bytes:
    """An InvokeModelWithResponseStream ``chunk``: one Anthropic event as base64 JSON."""
    payload = orjson.dumps({"bytes": base64.b64encode(data).decode(), "p": "abcd"})
    return frame({":event-type": "chunk", ":content-type": "application/json", ":message-type": "event"}, payload)


class FakeVertex(_Cloud):
    _MODEL = re.compile(
        r"^/v1/projects/(?P<project>[^/]+)/locations/(?P<region>[^/]+)/publishers/(?P<publisher>google|anthropic)/models/(?P<model>[^/:]+):(?P<method>[A-Za-z]+)$"
    )

    def __init__(self, *, project: str, region: str, public_key: Any = None, expires_in: int = 3600, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.project = project
        self.region = region
        self.public_key = public_key
        self.expires_in = expires_in
        self.issued: list[str] = []
        self._issue_lock = threading.Lock()

    def _reply_for(self, request: RecordedRequest, behaviour: Behaviour) -> _Reply:
        if request.path == "/token":
            return self._token(request)
        if _bearer(request) not in self.issued:
            return self._refuse(401, "Request had invalid authentication credentials.", "google")
        match = self._MODEL.match(request.path)
        if match is None or (match["project"], match["region"]) != (self.project, self.region):
            return self._refuse(404, f"Unknown resource {request.path}", "google")
        model, method = unquote(match["model"]), match["method"]
        if match["publisher"] == "google" and method in ("generateContent", "streamGenerateContent", "countTokens"):
            return super()._reply_for(self._rewrite(request, f"/v1beta/models/{model}:{method}"), behaviour)
        if match["publisher"] == "anthropic" and model == "count-tokens" and method == "rawPredict":
            body = request.json
            if not isinstance(body, dict) or body.get("anthropic_version") != "vertex-2023-10-16" or "model" not in body:
                return self._refuse(400, "count-tokens takes the model in the body and anthropic_version vertex-2023-10-16")
            body = {k: v for k, v in body.items() if k != "anthropic_version"}
            return super()._reply_for(self._rewrite(request, "/v1/messages/count_tokens", body), behaviour)
        if match["publisher"] == "anthropic" and method in ("rawPredict", "streamRawPredict"):
            body = request.json
            if not isinstance(body, dict) or body.get("anthropic_version") != "vertex-2023-10-16" or "model" in body:
                return self._refuse(400, "anthropic_version must be vertex-2023-10-16 and model must not be in the body")
            body = {k: v for k, v in body.items() if k != "anthropic_version"} | {"model": model}
            if method == "streamRawPredict":
                body["stream"] = True
            return super()._reply_for(self._rewrite(request, "/v1/messages", body), behaviour)
        return self._refuse(404, f"Unknown method {method}", "google")

    def _token(self, request: RecordedRequest) -> _Reply:
        import jwt

        form = dict(parse_qsl(request.body.decode()))
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return _json_reply(400, {"error": "unsupported_grant_type"})
        try:
            claims = jwt.decode(form.get("assertion", ""), self.public_key, algorithms=["RS256"], audience="https://oauth2.googleapis.com/token")
        except jwt.PyJWTError as exc:
            return _json_reply(400, {"error": "invalid_grant", "error_description": type(exc).__name__})
        if "cloud-platform" not in claims.get("scope", ""):
            return _json_reply(400, {"error": "invalid_scope"})
        with self._issue_lock:
            token = f"ya29.fake-{len(self.issued)}-{uuid.uuid4().hex}"
            self.issued.append(token)
        return _json_reply(200, {"access_token": token, "expires_in": self.expires_in, "token_type": "Bearer"})


def service_account_file(path: Any, token_uri: str) -> Any:
    """Write a service-account JSON key (a fresh RSA key) whose token endpoint is ``token_uri``;
    returns the public key, for the fake to check assertions with."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    info = {
        "type": "service_account",
        "project_id": "relay-test",
        "private_key_id": "k1",
        "private_key": pem,
        "client_email": "relay@relay-test.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": token_uri,
    }
    path.write_text(json.dumps(info))
    return key.public_key()


__all__ = [
    "FakeAzure",
    "FakeBedrock",
    "FakeVertex",
    "converse_to_anthropic",
    "event",
    "exception",
    "frame",
    "service_account_file",
    "sigv4_problem",
]
