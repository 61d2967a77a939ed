"""AWS Signature Version 4 for Bedrock, with botocore's own signer (the ``bedrock`` extra).

Credentials come from botocore's usual chain (environment, shared files and profiles, SSO,
container and instance roles), resolved in a worker thread the first time and again only when
botocore says temporary credentials need refreshing, so a request never waits on the network
for them unless they have run out. The secret key and session token are registered with
:mod:`asgi_ai_relay.redact`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from .. import redact
from ..errors import ConfigurationError, UpstreamConnectError

__all__ = ["SigV4Signer"]

#: The longest a request waits for the credential chain (instance metadata, STS...).
_WAIT = 30.0


class SigV4Signer:
    def __init__(self, provider: str, region: str, *, profile: str | None = None, service: str = "bedrock") -> None:
        """:raises ConfigurationError: when botocore is missing or the region unset."""
        try:
            import botocore.session
            from botocore.auth import SigV4Auth
            from botocore.awsrequest import AWSRequest
        except ImportError as exc:
            raise ConfigurationError(
                f'providers.{provider}: SigV4 signing needs botocore: pip install "asgi-ai-relay[bedrock]" '
                "(or set api_key to a Bedrock API key)"
            ) from exc
        if not region:
            raise ConfigurationError(f"providers.{provider}.region: required to sign requests (e.g. \"us-east-1\")")
        self.provider = provider
        self.region = region
        self.service = service
        self._auth = SigV4Auth
        self._request = AWSRequest
        self._session = botocore.session.Session(profile=profile)
        self._credentials: Any = None

    async def frozen(self) -> Any:
        """Credentials to sign with now.

        :raises UpstreamConnectError: when the chain has none, or refreshing them failed.
        """
        try:
            if self._credentials is None:
                self._credentials = await asyncio.wait_for(asyncio.to_thread(self._session.get_credentials), _WAIT)
            credentials = self._credentials
            if credentials is None:
                raise LookupError("no credentials in the chain")
            refresh_needed = getattr(credentials, "refresh_needed", None)
            if refresh_needed is not None and refresh_needed():
                frozen = await asyncio.wait_for(asyncio.to_thread(credentials.get_frozen_credentials), _WAIT)
            else:
                frozen = credentials.get_frozen_credentials()
        except Exception as exc:  # its text may hold a key: only the type is told
            raise UpstreamConnectError(
                f"Provider {self.provider!r} has no usable AWS credentials ({type(exc).__name__})."
            ) from None
        for secret in (frozen.secret_key, frozen.token):
            if secret:
                redact.register(secret)
        return frozen

    async def sign(self, url: str, headers: Mapping[str, str], body: bytes) -> dict[str, str]:
        """``headers`` plus ``Authorization``, ``X-Amz-Date`` (and ``X-Amz-Security-Token``)
        for a POST of ``body`` to ``url``."""
        frozen = await self.frozen()
        request = self._request(method="POST", url=url, data=body, headers=dict(headers))
        self._auth(frozen, self.service, self.region).add_auth(request)
        return {name.lower(): str(value) for name, value in request.headers.items()}
