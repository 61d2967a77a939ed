"""Flask integration for asgi-ai-relay."""
