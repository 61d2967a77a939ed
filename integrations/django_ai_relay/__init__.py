"""Django integration for asgi-ai-relay.

    INSTALLED_APPS = [..., "django_ai_relay"]
    MIDDLEWARE = [..., "django.contrib.auth.middleware.AuthenticationMiddleware",
                  "django_ai_relay.middleware.AIRelayMiddleware", ...]
    AI_RELAY = {"prefix": "/ai", "providers": {"openai": {"api_key": "env:OPENAI_API_KEY"}}}

Callers are the site's own users (``request.user``, from any authentication backend) holding
the ``django_ai_relay.use_relay`` permission, or relay API keys from ``AI_RELAY["api_keys"]``.
"""
