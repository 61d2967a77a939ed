"""No tables: one unmanaged model whose only purpose is to carry the relay's permission."""

from __future__ import annotations

from django.db import models

__all__ = ["RelayAccess"]


class RelayAccess(models.Model):
    """Holds ``django_ai_relay.use_relay``; grant it to users or groups in the admin."""

    class Meta:
        managed = False
        default_permissions = ()
        permissions = [("use_relay", "Can call the AI relay")]
        verbose_name = "AI relay access"
