"""The relay's ledger in the Django admin: a read-only change list (filters by caller, model,
key, team, provider, status and date; search by request id; totals of the filtered rows) and a usage page
with spend per day per model and per caller, drawn as inline SVG charts.

The ledger is not in Django's database: it is the relay's ``storage.ledger`` (a SQLite file,
a PostgreSQL table, or memory), shared by every host of the relay and written off the request
path. So these views read it through the relay's ledger API and report code
(:mod:`.ledger_view`), not through the ORM; :class:`~.models.LedgerEntry` is unmanaged and
has no table. Who may look: superusers, and staff holding ``django_ai_relay.view_ledgerentry``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.safestring import mark_safe

from asgi_ai_relay.dashboard.svg import PALETTE, bar_chart
from asgi_ai_relay.errors import InvalidRequest

from . import conf
from .ledger_view import columns, ledger_page, usage_groups
from .models import LedgerEntry

__all__ = ["LedgerAdmin"]

_FILTERS = ("caller", "key", "team", "model", "provider", "status", "from", "to", "q")


def _cell(row: Any, name: str) -> str:
    value = getattr(row, name)
    if name == "ts":
        return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, Decimal):
        return f"{value:.6f}"
    if isinstance(value, float):
        return f"{value:.1f}"
    return "" if value is None else str(value)


@admin.register(LedgerEntry)
class LedgerAdmin(admin.ModelAdmin):  # type: ignore[misc]  # (Django is untyped here)
    """Read-only views of the relay's ledger (see the module docs)."""

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        user: Any = request.user
        return bool(user.is_active and user.is_staff and (user.is_superuser or user.has_perm("django_ai_relay.view_ledgerentry")))

    def has_module_permission(self, request: HttpRequest) -> bool:
        return self.has_view_permission(request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_urls(self) -> list[Any]:
        usage = path("usage/", self.admin_site.admin_view(self.usage_view), name="django_ai_relay_ledgerentry_usage")
        return [usage, *super().get_urls()]

    def _context(self, request: HttpRequest, title: str) -> dict[str, Any]:
        return {**self.admin_site.each_context(request), "opts": self.model._meta, "title": title,
                "usage_url": reverse("admin:django_ai_relay_ledgerentry_usage"),
                "list_url": reverse("admin:django_ai_relay_ledgerentry_changelist")}

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        if not self.has_view_permission(request):
            from django.core.exceptions import PermissionDenied

            raise PermissionDenied
        params = {name: request.GET.get(name, "") for name in _FILTERS}
        context = self._context(request, "AI relay ledger")
        try:
            page = ledger_page(conf.relay(), params, int(request.GET.get("p", "1") or 1))
        except (InvalidRequest, ValueError) as exc:
            context["error"] = getattr(exc, "message", str(exc))
            return TemplateResponse(request, "django_ai_relay/ledger_change_list.html", context, status=400)
        names = columns()
        options = [*page.choices.items(), ("status", ["2xx", "4xx", "5xx"])]
        context.update(page=page, columns=names, params=params,
                       filters=[(name, [(v, v == params[name]) for v in values]) for name, values in options],
                       rows=[[_cell(row, name) for name in names] for row in page.rows],
                       base_query=urlencode({k: v for k, v in params.items() if v}))
        return TemplateResponse(request, "django_ai_relay/ledger_change_list.html", context)

    def usage_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            from django.core.exceptions import PermissionDenied

            raise PermissionDenied
        params = {name: request.GET.get(name, "") for name in ("caller", "key", "team", "model", "from", "to")}
        context = self._context(request, "AI relay usage")
        try:
            days, groups = usage_groups(conf.relay(), params)
        except InvalidRequest as exc:
            context["error"] = exc.message
            return TemplateResponse(request, "django_ai_relay/ledger_usage.html", context, status=400)
        charts = []
        for kind, label in (("model", "Spend per day, per model (USD)"), ("caller", "Spend per day, per caller (USD)")):
            names = sorted(groups[kind], key=lambda n: -sum(groups[kind][n].values()))
            series = {n: [groups[kind][n].get(d, 0.0) for d in days] for n in names}
            legend = [(n, PALETTE[i % len(PALETTE)], f"{sum(series[n]):.6f}") for i, n in enumerate(names)]
            charts.append({"title": label, "svg": mark_safe(bar_chart(label, days, series, lambda v: f"${v:,.4f}")),
                           "legend": legend})
        context.update(charts=charts, params=params, days=days)
        return TemplateResponse(request, "django_ai_relay/ledger_usage.html", context)
