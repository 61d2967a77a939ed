from __future__ import annotations

from django.urls import path

from tests.workers.hosts import whoami_view

urlpatterns = [path("whoami", whoami_view)]
