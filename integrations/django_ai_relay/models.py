"""The relay's permission carrier, the ledger's place in the admin (no table), and ``RelayKey``:
managed keys that belong to the site's users.

A key runs as its user (the same caller id as the user's session: one budget, one ledger
caller), optionally for a group (its team: ``budgets.callers["team:<group name>"]`` applies).
Only the key's digest is stored; the key is shown once, when it is made (the admin does it).
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

__all__ = ["LedgerEntry", "RelayAccess", "RelayKey"]


class RelayAccess(models.Model):
    """Holds ``django_ai_relay.use_relay``; grant it to users or groups in the admin."""

    class Meta:
        managed = False
        default_permissions = ()
        permissions = [("use_relay", "Can call the AI relay")]
        verbose_name = "AI relay access"


class LedgerEntry(models.Model):
    """The relay's ledger in the admin (``django_ai_relay.ledger_admin``): no table of its own.
    The ledger lives in the relay's store (``storage.ledger``: SQLite, PostgreSQL or memory),
    which the admin reads through the relay's ledger API; this model only gives the admin its
    place and the ``view_ledgerentry`` permission."""

    class Meta:
        managed = False
        default_permissions = ("view",)
        verbose_name = "AI relay ledger entry"
        verbose_name_plural = "AI relay ledger"


class RelayKey(models.Model):
    """One managed key. ``models``: aliases or glob patterns, one per line (empty: every model
    the user may call); RPM/TPM 0 and empty budgets mean no limit of the key's own."""

    name = models.CharField(max_length=200, blank=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="relay_keys")
    group = models.ForeignKey("auth.Group", on_delete=models.SET_NULL, null=True, blank=True, related_name="relay_keys",
                              help_text="The team whose limits also apply.")
    prefix = models.CharField(max_length=16, editable=False)
    digest = models.CharField(max_length=64, unique=True, editable=False)
    allowed_models = models.TextField(blank=True, help_text="Allowed models: aliases or glob patterns (gpt-*), one per line.")
    rpm = models.PositiveIntegerField("requests per minute", default=0)
    tpm = models.PositiveIntegerField("tokens per minute", default=0)
    daily_budget = models.DecimalField("daily budget (USD)", max_digits=14, decimal_places=6, null=True, blank=True)
    monthly_budget = models.DecimalField("monthly budget (USD)", max_digits=14, decimal_places=6, null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    enabled = models.BooleanField(default=True, help_text="Clear to revoke the key.")
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        verbose_name = "relay key"
        ordering = ("-created_at",)

    def __str__(self) -> str:
        return f"{self.prefix}... ({self.name or self.user})"

    @property
    def model_patterns(self) -> tuple[str, ...]:
        return tuple(line.strip() for line in self.allowed_models.replace(",", "\n").splitlines() if line.strip())
