from __future__ import annotations

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("django_ai_relay", "0001_initial")]

    operations = [
        migrations.CreateModel(
            name="LedgerEntry",
            fields=[("id", models.AutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID"))],
            options={
                "managed": False,
                "default_permissions": ("view",),
                "verbose_name": "AI relay ledger entry",
                "verbose_name_plural": "AI relay ledger",
            },
        ),
    ]
