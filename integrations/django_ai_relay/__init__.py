"""Django integration for asgi-ai-relay."""
