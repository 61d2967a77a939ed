"""AWS Bedrock's Converse API: ``POST {base_url}/model/{modelId}/converse`` and
``/converse-stream`` (answered in the binary ``application/vnd.amazon.eventstream`` framing).

``modelId`` is the model's ``upstream``: a model id (``anthropic.claude-sonnet-4-5-20250929-v1:0``),
a cross-region inference profile id (``us.``, ``eu.``, ``apac.``, ``global.`` prefixes) or an
ARN, percent-encoded into one path segment. With ``api_key`` (a Bedrock API key) requests carry
``Authorization: Bearer``; without, they are signed with SigV4 (:mod:`.sigv4`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import orjson

from ..config import ModelConfig, ProviderConfig, Timeouts
from ..reply import UpstreamHttp
from .base import HttpProvider, UpstreamResponse
from .sigv4 import SigV4Signer

__all__ = ["BedrockProvider", "bedrock_error", "model_url", "signer_for"]


def signer_for(provider: HttpProvider) -> SigV4Signer | None:
    """SigV4 unless the provider has a Bedrock API key (or a token) to send instead.

    :raises ConfigurationError: when botocore is missing or the region unset.
    """
    config = provider.config
    if config.api_key is not None or provider.token is not None:
        return None
    return SigV4Signer(config.name, config.cloud.region or "", profile=config.cloud.credential)


def model_url(base_url: str, model: ModelConfig, operation: str) -> str:
    # ':' stays as it is (a path may hold it, and every HTTP client sends it unchanged, so the
    # path signed is the path sent); '/' of an ARN is encoded into the one segment.
    return f"{base_url}/model/{quote(model.upstream, safe=':')}/{operation}"


def bedrock_error(payload: Any) -> str | None:
    """The message of a Bedrock error body (``{"message": ...}``)."""
    if isinstance(payload, dict) and isinstance(payload.get("message") or payload.get("Message"), str):
        return str(payload.get("message") or payload.get("Message"))
    return None


class BedrockProvider(HttpProvider):
    format = "bedrock"
    stream_content_type = "application/vnd.amazon.eventstream"

    def __init__(self, config: ProviderConfig, client: UpstreamHttp, timeouts: Timeouts) -> None:
        super().__init__(config, client, timeouts)
        self.signer = signer_for(self)
        self.per_request_auth = self.per_request_auth or self.signer is not None

    @property
    def default_headers(self) -> dict[str, str]:
        return {"accept": "application/json"}

    def url(self, model: ModelConfig, stream: bool) -> str:
        return model_url(self.config.base_url, model, "converse-stream" if stream else "converse")

    async def authorize(self, url: str, headers: Mapping[str, str], body: bytes) -> Mapping[str, str]:
        if self.signer is None:
            return await super().authorize(url, headers, body)
        return await self.signer.sign(url, headers, body)

    async def send(
        self, model: ModelConfig, body: dict[str, Any], *, stream: bool, headers: Mapping[str, str] | None = None
    ) -> UpstreamResponse:
        reply = await super().send(model, body, stream=stream, headers=headers)
        if reply.chunks is None and reply.body.startswith(b"{"):
            # Converse answers do not name the model: the completion takes the id asked for.
            reply.body = b'{"modelId":' + orjson.dumps(model.upstream) + (b"," if reply.body[1:].strip() != b"}" else b"") + reply.body[1:]
        return reply

    def error_message(self, payload: Any, raw: bytes) -> tuple[str, str | None]:
        message = bedrock_error(payload)
        return (message, None) if message is not None else super().error_message(payload, raw)
