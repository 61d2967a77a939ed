"""The admin for ``RelayKey``: make a key (its secret shown once, in the page's message), edit its
limits, revoke it (clear *enabled*, or the list's action), rotate its secret (the list's action)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from . import keys
from .models import RelayKey

__all__ = ["RelayKeyAdmin"]


@admin.register(RelayKey)
class RelayKeyAdmin(admin.ModelAdmin):
    list_display = ("prefix", "name", "user", "group", "enabled", "expires_at", "rpm", "tpm", "daily_budget",
                    "monthly_budget", "created_at")
    list_filter = ("enabled", "group")
    search_fields = ("prefix", "name", "user__username")
    readonly_fields = ("prefix", "created_at", "revoked_at")
    actions = ("revoke", "rotate")
    fieldsets = (
        (None, {"fields": ("name", "user", "group", "enabled", "expires_at", "prefix", "created_at", "revoked_at")}),
        ("What it may call", {"fields": ("allowed_models", "rpm", "tpm", "daily_budget", "monthly_budget")}),
        ("Metadata", {"fields": ("metadata",), "classes": ("collapse",)}),
    )

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        secret = None if change else keys.issue(obj)
        if change and "enabled" in form.changed_data:
            obj.revoked_at = None if obj.enabled else timezone.now()
        super().save_model(request, obj, form, change)
        if secret is not None:
            self.message_user(request, f"The new key (shown only this once; copy it now): {secret}", messages.WARNING)

    @admin.action(description="Revoke the selected keys")
    def revoke(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        for key in queryset.filter(enabled=True):
            key.enabled, key.revoked_at = False, timezone.now()
            key.save(update_fields=["enabled", "revoked_at"])
        self.message_user(request, "Revoked.", messages.SUCCESS)

    @admin.action(description="Rotate the selected keys' secrets (shown once)")
    def rotate(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        for key in queryset:
            secret = keys.issue(key)
            key.save(update_fields=["digest", "prefix"])
            self.message_user(request, f"New secret for {key.name or key.pk} (shown only this once): {secret}",
                              messages.WARNING)


from . import ledger_admin  # noqa: F401  (the ledger's change list and usage page)
