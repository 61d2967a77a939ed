"""A Django host with a protected page and a catch-all, to see whether a path trick reaches either."""

from __future__ import annotations

from django.http import HttpResponse, HttpResponseForbidden
from django.urls import path, re_path


def admin(request):
    if not request.user.is_staff:
        return HttpResponseForbidden("host admin: forbidden")
    return HttpResponse("host admin: secret")


def catch_all(request):
    return HttpResponse(f"host catch-all {request.path}")


urlpatterns = [path("admin", admin), re_path(r"^.*$", catch_all)]
