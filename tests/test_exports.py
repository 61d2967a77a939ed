"""The public API is what ``__all__`` says it is."""

from __future__ import annotations

import asgi_ai_relay


def test_all_names_are_exported_and_public():
    for name in asgi_ai_relay.__all__:
        assert hasattr(asgi_ai_relay, name), name
    public = {n for n in vars(asgi_ai_relay) if not n.startswith("_")} - {"annotations"}
    modules = {n for n in public if type(getattr(asgi_ai_relay, n)).__name__ == "module"}
    assert public - modules == set(asgi_ai_relay.__all__) - {"__version__"}
