"""``RelayKey`` lookups for the middleware's default caller, and per-model permissions.

A request presenting a key (``Authorization: Bearer rk-...`` or ``x-api-key``) that matches a
``RelayKey`` runs as the key's user: the same caller id as that user's session, so the two
share the user's configured limits, budget and ledger rows; the key's own RPM/TPM, budgets and
models apply on top, and its group's ``budgets.callers["team:<name>"]``. Lookups are cached for
``AI_RELAY["keys"]["cache_ttl"]`` seconds per process (5 by default); saving or deleting a key
clears this process's cache at once, so the admin's revocation is seen here immediately and by
every other worker within the TTL.

``AI_RELAY_MODEL_PERMISSIONS`` turns on per-model permissions: ``"auto"`` needs
``django_ai_relay.use_model_<alias>`` for each model (created by ``migrate`` for the configured
models), a mapping ``{alias or glob: "app.permission"}`` needs the named permission for the
models it matches (others stay open). Superusers hold every permission.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from django.conf import settings
from django.db.models.signals import post_delete, post_save

from asgi_ai_relay import AuthenticationError, Caller, PermissionDenied, RelayError
from asgi_ai_relay.keys import Hasher, KeyRecord, key_caller
from asgi_ai_relay.keys.directory import refuse
from asgi_ai_relay.keys.record import PREFIX_CHARS, new_secret
from asgi_ai_relay.policy import CallerLimits, Quota, allowed, limits_of

from . import conf as relay_conf

__all__ = ["connect_signals", "issue", "key_caller_for", "model_patterns", "with_model_permissions"]

AUTO = "auto"
_lock = threading.Lock()
_cache: dict[str, tuple[float, Caller | RelayError | None]] = {}


def _hasher() -> Hasher:
    secret = relay_conf.relay().config.keys.secret
    return Hasher(secret.get() if secret is not None else None)


def issue(key: Any) -> str:
    """Give ``key`` (a ``RelayKey``) a new secret, stored as its digest; returns the secret,
    which exists only now."""
    secret = new_secret()
    key.digest, key.prefix = _hasher().digest(secret), secret[:PREFIX_CHARS]
    return secret


def _record(key: Any) -> KeyRecord:
    user = key.user
    return KeyRecord(
        id=f"key_{key.pk}", digest=key.digest, prefix=key.prefix, owner=user.get_username(),
        team=key.group.name if key.group_id else None, name=key.name, models=key.model_patterns,
        quota=Quota(key.rpm, key.tpm, key.daily_budget, key.monthly_budget),
        expires_at=key.expires_at.timestamp() if key.expires_at else None, enabled=key.enabled,
        metadata=key.metadata or {},
    )


def _resolve(digest: str) -> Caller | RelayError | None:
    from .models import RelayKey

    key = RelayKey.objects.select_related("user", "group").filter(digest=digest).first()
    if key is None:
        return None
    record = _record(key)
    try:
        refuse(record)
    except AuthenticationError as error:
        return error
    user = key.user
    if not user.is_active:
        return AuthenticationError(f"The API key {record.prefix}... belongs to an inactive account.")
    permission = relay_conf.conf.AI_RELAY_PERMISSION
    if permission and not user.has_perm(permission):
        return PermissionDenied(f"The key's account lacks the {permission} permission needed to call the relay.")
    return with_model_permissions(key_caller(record, user_id=user.pk), user)


def key_caller_for(presented: str) -> Caller | None:
    """The caller a presented key stands for, ``None`` when no ``RelayKey`` has it.

    :raises AuthenticationError: the key is revoked or expired, or its user inactive.
    :raises PermissionDenied: its user lacks ``AI_RELAY_PERMISSION``.
    """
    digest = _hasher().digest(presented)
    now = time.monotonic()
    ttl = relay_conf.relay().config.keys.cache_ttl
    cached = _cache.get(digest)
    if cached is not None and now - cached[0] < ttl:
        found = cached[1]
    else:
        found = _resolve(digest)
        with _lock:
            if len(_cache) > 10_000:
                _cache.clear()
            _cache[digest] = (now, found)
    if isinstance(found, RelayError):
        raise found
    return found


def model_patterns(user: Any, models: Iterable[str]) -> tuple[str, ...] | None:
    """The models of ``models`` ``user`` may call under ``AI_RELAY_MODEL_PERMISSIONS`` (``None``:
    the setting is off, every model)."""
    setting = getattr(settings, "AI_RELAY_MODEL_PERMISSIONS", None)
    if not setting:
        return None
    names = list(models)
    if setting == AUTO or setting is True:
        return tuple(m for m in names if user.has_perm(f"django_ai_relay.use_model_{m}"))
    mapping: dict[str, str] = dict(setting)
    out = []
    for model in names:
        needed = [perm for pattern, perm in mapping.items() if allowed(model, [pattern])]
        if all(user.has_perm(perm) for perm in needed):
            out.append(model)
    return tuple(out)


def with_model_permissions(caller: Caller, user: Any) -> Caller:
    """``caller`` allowed only the models ``user``'s permissions allow (when they are on)."""
    config = relay_conf.relay().config
    patterns = model_patterns(user, [*config.models, *config.routing.virtual])
    if patterns is None:
        return caller
    own = limits_of(caller) or CallerLimits()
    limits = replace(own, models=(*own.models, patterns))
    return replace(caller, extra={**caller.extra, "limits": limits})


def clear_cache(**kwargs: Any) -> None:
    with _lock:
        _cache.clear()


def create_model_permissions(**kwargs: Any) -> None:
    """After ``migrate``: a ``use_model_<alias>`` permission for every configured model."""
    from django.contrib.auth.models import Permission
    from django.contrib.contenttypes.models import ContentType

    from .models import RelayAccess

    try:
        config = relay_conf.conf.relay_config()
    except Exception:  # a configuration error is reported by the checks, not by migrate
        return
    content_type = ContentType.objects.get_for_model(RelayAccess, for_concrete_model=False)
    for alias in [*config.models, *config.routing.virtual]:
        Permission.objects.get_or_create(codename=f"use_model_{alias}"[:100], content_type=content_type,
                                         defaults={"name": f"Can call the model {alias}"[:255]})


def connect_signals(app: Any) -> None:
    from django.core.signals import setting_changed
    from django.db.models.signals import post_migrate

    from .models import RelayKey

    post_save.connect(clear_cache, sender=RelayKey, dispatch_uid="django_ai_relay.keys.saved")
    post_delete.connect(clear_cache, sender=RelayKey, dispatch_uid="django_ai_relay.keys.deleted")
    setting_changed.connect(clear_cache, dispatch_uid="django_ai_relay.keys.settings")
    post_migrate.connect(create_model_permissions, sender=app, dispatch_uid="django_ai_relay.keys.permissions")
