from __future__ import annotations

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("django_ai_relay", "0002_ledgerentry"),
        ("auth", "0001_initial"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="RelayKey",
            fields=[
                ("id", models.AutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("name", models.CharField(blank=True, max_length=200)),
                ("prefix", models.CharField(editable=False, max_length=16)),
                ("digest", models.CharField(editable=False, max_length=64, unique=True)),
                ("allowed_models", models.TextField(blank=True, help_text="Allowed models: aliases or glob patterns (gpt-*), one per line.")),
                ("rpm", models.PositiveIntegerField(default=0, verbose_name="requests per minute")),
                ("tpm", models.PositiveIntegerField(default=0, verbose_name="tokens per minute")),
                ("daily_budget", models.DecimalField(blank=True, decimal_places=6, max_digits=14, null=True, verbose_name="daily budget (USD)")),
                ("monthly_budget", models.DecimalField(blank=True, decimal_places=6, max_digits=14, null=True, verbose_name="monthly budget (USD)")),
                ("expires_at", models.DateTimeField(blank=True, null=True)),
                ("enabled", models.BooleanField(default=True, help_text="Clear to revoke the key.")),
                ("metadata", models.JSONField(blank=True, default=dict)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("revoked_at", models.DateTimeField(blank=True, editable=False, null=True)),
                ("group", models.ForeignKey(blank=True, help_text="The team whose limits also apply.", null=True,
                                            on_delete=django.db.models.deletion.SET_NULL, related_name="relay_keys", to="auth.group")),
                ("user", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="relay_keys",
                                           to=settings.AUTH_USER_MODEL)),
            ],
            options={"verbose_name": "relay key", "ordering": ("-created_at",)},
        ),
    ]
