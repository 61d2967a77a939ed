"""A small Flask app that already has users and a login, with the relay added by AIRelay.

Run it:   python example_projects/flask_app/app.py        (http://127.0.0.1:5000, PORT to change)

Log in as ada / ada-password: the notes page asks the relay for a summary, streamed, with the
session cookie the app already uses; the relay's ledger records "ada". With no provider key in
the environment the default models are served by the offline mock provider.
"""

from __future__ import annotations

import logging
import os
import sys
from functools import wraps
from typing import Any

from flask import Flask, redirect, render_template_string, request, session, url_for

from asgi_ai_relay import Caller
from flask_ai_relay import AIRelay

USERS = {"ada": "ada-password", "grace": "grace-password"}  # a real app keeps hashes in its DB
PROVIDER_KEYS = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY", "gemini": "GEMINI_API_KEY", "deepseek": "DEEPSEEK_API_KEY"}
NOTES = ["Buy milk", "Ship the relay", "Call the plumber"]

relay = AIRelay()


@relay.caller_loader
def load_caller() -> Caller | None:
    """The user logged in by this app's own session; with flask-login: ``current_user``."""
    user = session.get("user")
    return Caller(id=user) if user in USERS else None


def login_required(view: Any) -> Any:
    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if session.get("user") not in USERS:
            return redirect(url_for("login", next=request.path))
        return view(*args, **kwargs)

    return wrapper


PAGE = """<!doctype html><title>Notes</title>
<p>Logged in as {{ user }} · <a href="{{ url_for('logout') }}">log out</a></p>
<ul>{% for note in notes %}<li>{{ note }}</li>{% endfor %}</ul>
<button id="go">Summarize with AI</button><pre id="out"></pre>
<script>
document.getElementById("go").onclick = async () => {
  const out = document.getElementById("out"); out.textContent = "";
  const response = await fetch("{{ relay_url }}", {method: "POST", headers: {"content-type": "application/json"},
    body: JSON.stringify({model: "gpt-4.1", stream: true, messages: [{role: "user", content: "Summarize: {{ notes|join('; ') }}"}]})});
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  for (let buffer = ""; ;) {
    const {value, done} = await reader.read(); if (done) break;
    const events = (buffer += value).split("\\n\\n"); buffer = events.pop();
    for (const e of events) if (e.startsWith("data: {")) out.textContent += JSON.parse(e.slice(6)).choices[0]?.delta?.content ?? "";
  }
};
</script>"""

LOGIN = """<!doctype html><title>Log in</title><form method="post">
<input name="username" placeholder="ada"> <input name="password" type="password" placeholder="ada-password">
<button>Log in</button></form>{% if error %}<p>{{ error }}</p>{% endif %}"""


def create_app() -> Flask:
    app = Flask(__name__)
    app.secret_key = os.environ.get("FLASK_SECRET_KEY", "dev-only-secret")
    providers = {name: {"api_key": f"env:{var}"} for name, var in PROVIDER_KEYS.items() if os.environ.get(var)}
    app.config["AI_RELAY"] = {"prefix": "/ai", "providers": providers, "storage": {"ledger": "sqlite:///flask-relay-usage.db"}}

    @app.route("/login", methods=["GET", "POST"])
    def login() -> Any:
        if request.method == "POST":
            name = request.form.get("username", "")
            if USERS.get(name) == request.form.get("password"):
                session["user"] = name
                return redirect(request.args.get("next") or url_for("notes"))
            return render_template_string(LOGIN, error="Wrong name or password."), 401
        return render_template_string(LOGIN, error=None)

    @app.get("/logout")
    def logout() -> Any:
        session.clear()
        return redirect(url_for("login"))

    @app.get("/")
    @login_required
    def notes() -> str:
        return render_template_string(PAGE, user=session["user"], notes=NOTES, relay_url="/ai/v1/chat/completions")

    relay.init_app(app)
    return app


app = create_app()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
    port = int(os.environ.get("PORT", "5000"))
    base = f"http://127.0.0.1:{port}"
    print(
        f"""
Notes (Flask) with asgi-ai-relay at {base}/ai - open {base}/ and log in as ada / ada-password, or:

  curl -c jar -d 'username=ada&password=ada-password' {base}/login
  curl -b jar {base}/ai/v1/chat/completions -H 'content-type: application/json' \\
       -d '{{"model": "gpt-4.1", "messages": [{{"role": "user", "content": "Hello"}}]}}'
""",
        file=sys.stderr,
        flush=True,
    )
    app.run(host="127.0.0.1", port=port, threaded=True)


if __name__ == "__main__":
    main()
