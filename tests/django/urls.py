from __future__ import annotations

from django.contrib import admin
from django.http import HttpResponse
from django.urls import path


def host_form(request):
    """A route of the host's own: CSRF protection must still apply to it."""
    return HttpResponse(f"host {request.method}")


urlpatterns = [path("host/form", host_form), path("admin/", admin.site.urls)]
