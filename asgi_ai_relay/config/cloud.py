"""Provider settings beyond a base URL and a key: cloud endpoints (Azure OpenAI, AWS Bedrock,
Google Vertex AI), how they authenticate, and the presets of OpenAI-compatible services with
their quirks written as flags (see docs/providers.md)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ..errors import ConfigurationError

if TYPE_CHECKING:
    from .table import _Table

__all__ = ["CLOUD_KEYS", "CLOUD_KINDS", "PRESETS", "RESPONSES_KINDS", "CloudSettings", "Quirks", "default_base_url", "read_cloud"]

#: Provider kinds this module adds to the plain ones.
CLOUD_KINDS = ("azure_openai", "bedrock", "bedrock_anthropic", "vertex", "vertex_anthropic")
CLOUD_KEYS = ("preset", "region", "project", "api_version", "auth", "credential", "scope", "quirks", "responses")
AUTHS = ("key", "entra", "google", "aws")


@dataclass(frozen=True, slots=True)
class Quirks:
    """What an OpenAI-compatible service does differently, as flags (``quirks = {...}``)."""

    #: False: ``stream_options`` is never sent (the service refuses it).
    stream_options: bool = True
    #: The name the service reads the output limit under (``max_tokens`` or
    #: ``max_completion_tokens``); the caller's other spelling is renamed. None: as sent.
    max_tokens_field: str | None = None
    #: False: the service ends a stream without ``data: [DONE]``; the relay ends it after the
    #: chunk with the finish reason (and the usage chunk, when one follows).
    sends_done: bool = True
    #: True: the service puts ``usage`` on the last chunk that still has ``choices``; the relay
    #: splits it into that chunk and a usage-only chunk, as OpenAI sends them.
    usage_with_choices: bool = False
    #: "strip": ``reasoning_content`` is taken out of assistant turns before they go up (the
    #: service refuses it there); "keep": sent back as the caller gave it.
    reasoning_content: str = "keep"


@dataclass(frozen=True, slots=True)
class CloudSettings:
    preset: str | None = None
    #: AWS region (Bedrock) or Google location (Vertex AI, ``global`` included).
    region: str | None = None
    #: Google Cloud project id (Vertex AI).
    project: str | None = None
    #: Azure OpenAI classic deployments (``/openai/deployments/{model}/...?api-version=``).
    api_version: str | None = None
    #: ``key`` (the kind's own header), ``entra`` (azure-identity), ``google`` (google-auth), ``aws`` (SigV4).
    auth: str = "key"
    #: entra: ``default`` or ``module:attr`` (a credential with ``get_token``, or a factory of one);
    #: google: a service-account JSON file (ADC when unset); aws: a profile name.
    credential: str | None = None
    #: The OAuth scope asked for (defaults per auth).
    scope: str | None = None
    quirks: Quirks = field(default_factory=Quirks)
    #: Whether the service serves ``POST {base_url}/responses`` itself (OpenAI's Responses API):
    #: Responses requests then go to it as sent, with only the model rewritten. ``None``: only
    #: kind ``openai`` does.
    responses: bool | None = None


#: Kinds whose services may serve the Responses API themselves (``responses = true``).
RESPONSES_KINDS = ("openai", "openai_compatible", "azure_openai")

_DEEPSEEK = Quirks(reasoning_content="strip")

#: name: (kind, base URL ({region} filled in), quirks)
PRESETS: dict[str, tuple[str, str, Quirks]] = {
    "mistral": ("openai_compatible", "https://api.mistral.ai/v1", Quirks(stream_options=False, max_tokens_field="max_tokens", usage_with_choices=True)),
    "groq": ("openai_compatible", "https://api.groq.com/openai/v1", Quirks(max_tokens_field="max_completion_tokens")),
    "together": ("openai_compatible", "https://api.together.xyz/v1", Quirks(max_tokens_field="max_tokens", usage_with_choices=True)),
    "fireworks": ("openai_compatible", "https://api.fireworks.ai/inference/v1", Quirks(max_tokens_field="max_tokens", usage_with_choices=True)),
    "xai": ("openai_compatible", "https://api.x.ai/v1", Quirks()),
    "openrouter": ("openai_compatible", "https://openrouter.ai/api/v1", Quirks()),
    "deepseek": ("openai_compatible", "https://api.deepseek.com/v1", _DEEPSEEK),
    "holysheep": ("openai_compatible", "https://api.holysheep.ai/v1", Quirks()),
    "ollama": ("openai_compatible", "http://127.0.0.1:11434/v1", Quirks(max_tokens_field="max_tokens")),
    "vllm": ("openai_compatible", "http://127.0.0.1:8000/v1", Quirks(max_tokens_field="max_tokens")),
    "bedrock": ("bedrock", "https://bedrock-runtime.{region}.amazonaws.com", Quirks()),
    "bedrock_anthropic": ("bedrock_anthropic", "https://bedrock-runtime.{region}.amazonaws.com", Quirks()),
    "bedrock_openai": ("openai_compatible", "https://bedrock-runtime.{region}.amazonaws.com/openai/v1", Quirks()),
    "bedrock_mantle": ("anthropic", "https://bedrock-mantle.{region}.api.aws/anthropic/v1", Quirks()),
    "vertex": ("vertex", "", Quirks()),
    "vertex_anthropic": ("vertex_anthropic", "", Quirks()),
}
_QUIRK_KEYS = ("stream_options", "max_tokens_field", "sends_done", "usage_with_choices", "reasoning_content")


def read_cloud(table: _Table, name: str, kind: str | None) -> tuple[str | None, str, CloudSettings]:
    """The preset's kind and base URL (``""`` when it has none) and the cloud settings of one
    ``[providers.NAME]`` table.

    :raises ConfigurationError: naming the key that is wrong.
    """
    preset = table.get("preset", str, None)
    if preset is not None and preset not in PRESETS:
        raise ConfigurationError(f"{table.key('preset')}: unknown preset {preset!r} (one of {', '.join(sorted(PRESETS))})")
    if preset is None:
        # A provider named like a preset is that preset, unless its kind says otherwise; a cloud
        # kind with no preset named starts from its own.
        named = name in PRESETS and kind in (None, PRESETS[name][0])
        preset = name if named else kind if kind in PRESETS else None
    preset_kind, url, quirks = PRESETS[preset] if preset is not None else (None, "", Quirks())
    region = table.get("region", str, None)
    if "{region}" in url:
        if region is None:
            raise ConfigurationError(f"{table.key('region')}: required for preset {preset!r} (e.g. \"us-east-1\")")
        url = url.format(region=region)
    auth = table.choice("auth", AUTHS)
    settings = CloudSettings(
        preset=preset,
        region=region,
        project=table.get("project", str, None),
        api_version=table.get("api_version", str, None),
        auth=auth,
        credential=table.get("credential", str, None),
        scope=table.get("scope", str, None),
        quirks=_quirks(table, quirks),
        responses=table.get("responses", bool, None),
    )
    return preset_kind, url, settings


def _quirks(table: _Table, base: Quirks) -> Quirks:
    raw = table.sub("quirks")
    raw.only(*_QUIRK_KEYS)
    values: dict[str, Any] = {}
    for flag in ("stream_options", "sends_done", "usage_with_choices"):
        if flag in raw.data:
            values[flag] = raw.get(flag, bool, None)
    if "max_tokens_field" in raw.data:
        values["max_tokens_field"] = raw.choice("max_tokens_field", ("max_tokens", "max_completion_tokens"))
    if "reasoning_content" in raw.data:
        values["reasoning_content"] = raw.choice("reasoning_content", ("keep", "strip"))
    return replace(base, **values)


def default_base_url(table: _Table, kind: str, base_url: str, cloud: CloudSettings) -> str:
    """The base URL a cloud kind builds from its region and project, and the one fix-up of a
    user's URL: an Anthropic base URL written as its SDK's ``ANTHROPIC_BASE_URL`` (no ``/v1``)
    gets ``/v1``.

    :raises ConfigurationError: when a setting the kind needs is missing.
    """
    if kind in ("vertex", "vertex_anthropic"):
        for needed in ("project", "region"):
            if getattr(cloud, needed) is None:
                raise ConfigurationError(f"{table.key(needed)}: required for kind {kind!r}")
        if not base_url:
            hosts = {"global": "aiplatform.googleapis.com", "us": "aiplatform.us.rep.googleapis.com", "eu": "aiplatform.eu.rep.googleapis.com"}
            host = hosts.get(str(cloud.region), f"{cloud.region}-aiplatform.googleapis.com")
            base_url = f"https://{host}/v1"
    if kind == "azure_openai":
        if not base_url:
            raise ConfigurationError(f"{table.key('base_url')}: required, https://RESOURCE.openai.azure.com (or …/openai/v1)")
        path = urlsplit(base_url).path.rstrip("/")
        if cloud.api_version is None and not path.endswith("/openai/v1"):
            base_url = base_url.rstrip("/") + ("/v1" if path.endswith("/openai") else "/openai/v1")
        elif cloud.api_version is not None:
            base_url = base_url.rstrip("/").removesuffix("/openai/v1").removesuffix("/openai")
    if kind == "anthropic" and base_url and not urlsplit(base_url).path.rstrip("/").endswith("/v1"):
        base_url = base_url.rstrip("/") + "/v1"
    if cloud.auth == "aws" and kind not in ("bedrock", "bedrock_anthropic"):
        raise ConfigurationError(f"{table.key('auth')}: \"aws\" (SigV4) is for kind 'bedrock', not {kind!r}")
    if cloud.responses and kind not in RESPONSES_KINDS:
        raise ConfigurationError(f"{table.key('responses')}: only kinds {', '.join(RESPONSES_KINDS)} serve the Responses API")
    if kind in ("bedrock", "bedrock_anthropic") and not base_url:
        raise ConfigurationError(f"{table.key('region')}: required for kind {kind!r} (or a base_url)")
    return base_url
