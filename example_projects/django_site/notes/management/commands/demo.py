"""``python manage.py demo [--asgi]``: migrate, create the demo users, serve on 127.0.0.1:$PORT."""

from __future__ import annotations

import os
from typing import Any

from django.contrib.auth.models import Permission, User
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser


class Command(BaseCommand):
    help = "Set up the demo database and users, then serve the site (WSGI runserver, or uvicorn with --asgi)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--asgi", action="store_true", help="serve under uvicorn instead of runserver")

    def handle(self, *args: Any, **options: Any) -> None:
        call_command("migrate", interactive=False, verbosity=0)
        permission = Permission.objects.get(codename="use_relay", content_type__app_label="django_ai_relay")
        for name, allowed in (("ada", True), ("grace", False)):
            user, created = User.objects.get_or_create(username=name)
            if created:
                user.set_password(f"{name}-password")
                user.save()
            if allowed:
                user.user_permissions.add(permission)
        port = int(os.environ.get("PORT", "8000"))
        base = f"http://127.0.0.1:{port}"
        self.stderr.write(
            f"""
Notes (Django) with asgi-ai-relay at {base}/ai - open {base}/ and log in as ada / ada-password, or
call it as a script would, with a relay key (start with DEMO_RELAY_KEY=some-key):

  curl {base}/ai/v1/chat/completions -H "authorization: Bearer $DEMO_RELAY_KEY" \\
       -H 'content-type: application/json' -d '{{"model": "gpt-4.1", "messages": [{{"role": "user", "content": "Hello"}}]}}'
"""
        )
        if options["asgi"]:
            import uvicorn

            uvicorn.run("site_config.asgi:application", host="127.0.0.1", port=port, lifespan="off")
        else:
            call_command("runserver", f"127.0.0.1:{port}", use_reloader=False)
