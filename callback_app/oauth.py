"""The consent flow: ``/oauth/authorize/<name>`` out to the provider, ``/oauth/callback`` back."""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, redirect, render_template, request

from callback_app import parts
from workers.authorization import Authorizations
from workers.producer import send

blueprint = Blueprint("oauth", __name__)

# How long the callback page waits for the worker's code exchange.
EXCHANGE_WAIT = 30.0


@blueprint.get("/oauth/authorize/<name>")
def authorize(name: str) -> Any:
    return redirect(Authorizations(parts.runtime()).begin(name), code=302)


@blueprint.get("/oauth/callback")
def callback() -> Any:
    authorizations = Authorizations(parts.runtime())
    name, exchange_id = authorizations.receive(request.args.to_dict())
    pending = send(parts.celery(), "tokenkeeper.complete_authorization", exchange_id)
    result = pending.get(timeout=EXCHANGE_WAIT, disable_sync_subtasks=False)
    expires_at = result.get("expires_at")
    return render_template(
        "connected.html",
        name=name,
        scope=result.get("scope") or "",
        expires_in=int(float(expires_at) - time.time()) if expires_at else None,
        note=result.get("note") or "",
    )
