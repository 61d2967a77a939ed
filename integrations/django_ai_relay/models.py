"""No tables: unmanaged models that carry the relay's permissions and give the ledger its admin."""

from __future__ import annotations

from django.db import models

__all__ = ["LedgerEntry", "RelayAccess"]


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
