"""The consent flow: ``/oauth/authorize/<name>?t=<link>`` out to the provider, ``/oauth/callback`` back.

The authorize step sets a cookie holding a random binding value; the state is stored under a
hash of state and binding, so a callback completes only in the browser that started it.
"""

from __future__ import annotations

import re
import secrets
import time
from typing import Any

from flask import Blueprint, redirect, render_template, request

from callback_app import parts
from workers.engine.authorization import STATE_TTL, Authorizations
from workers.ops import tracing
from workers.producer import send

blueprint = Blueprint("oauth", __name__)

# How long the callback page waits for the worker's code exchange.
EXCHANGE_WAIT = 30.0
COOKIE = "tk_oauth"
# A binding we made: 43 url-safe characters. Anything else in the cookie is ignored and replaced.
_BINDING = re.compile(r"[A-Za-z0-9_-]{43}")


def cookie_name() -> str:
    # Under https the __Host- prefix makes browsers refuse the cookie from a sibling subdomain or plain http.
    return f"__Host-{COOKIE}" if _https() else COOKIE


@blueprint.get("/oauth/authorize/<name>")
def authorize(name: str) -> Any:
    with tracing.serving("GET /oauth/authorize/<name>", request.headers.get) as span:
        span.describe(integration=name, grant_type="authorization_code")
        response = _authorize(name)
        span.outcome("redirected")
        return response


def _authorize(name: str) -> Any:
    present = request.cookies.get(cookie_name(), "")
    # Kept when present, so two tabs started from links in one browser both complete.
    binding = present if _BINDING.fullmatch(present) else secrets.token_urlsafe(32)
    url = Authorizations(parts.runtime()).begin(name, request.args.get("t"), binding)
    response = redirect(url, code=302)
    response.set_cookie(
        cookie_name(), binding, max_age=STATE_TTL, path="/", secure=_https(), httponly=True, samesite="Lax"
    )
    return response


@blueprint.get("/oauth/callback")
def callback() -> Any:
    with tracing.serving("GET /oauth/callback", request.headers.get) as span:
        authorizations = Authorizations(parts.runtime())
        name, exchange_id = authorizations.receive(request.args.to_dict(), request.cookies.get(cookie_name(), ""))
        span.describe(integration=name, grant_type="authorization_code")
        pending = send(parts.celery(), "tokenkeeper.complete_authorization", exchange_id)
        result = pending.get(timeout=EXCHANGE_WAIT, disable_sync_subtasks=False)
        span.finish(result)
    expires_at = result.get("expires_at")
    return render_template(
        "connected.html",
        name=name,
        scope=result.get("scope") or "",
        expires_in=int(float(expires_at) - time.time()) if expires_at else None,
        note=result.get("note") or "",
    )


def _https() -> bool:
    return parts.settings().public_url.startswith("https://")
