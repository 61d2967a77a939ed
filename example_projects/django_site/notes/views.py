from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

NOTES = ["Buy milk", "Ship the relay", "Call the plumber"]


@login_required
def home(request: HttpRequest) -> HttpResponse:
    """The site's own page; its script calls the relay with the session it already has."""
    return render(request, "notes/home.html", {"notes": NOTES, "prompt": "Summarize: " + "; ".join(NOTES)})
