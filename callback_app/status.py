"""``/status``: every integration for operators, behind basic auth; ``/metrics`` for Prometheus.

The page has no scripts: Refresh now is a form (POST, with a token derived from the
operator password so another site cannot submit it), Connect / Reconnect is a signed
authorization link (``/oauth/authorize/<name>?t=…``, default lifetime, for the connected
account) that the operator opens or hands on.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any

from flask import Blueprint, Response, abort, redirect, render_template, request, url_for

from callback_app import parts
from workers.links import link_token
from workers.metrics import exposition
from workers.overview import IntegrationRow, by_severity, duration, overview

blueprint = Blueprint("status", __name__)

REFRESH_TASK = "tokenkeeper.refresh_integration"
# Rows on one page: thousands of integrations stay readable, and the ones needing attention come first.
PAGE_ROWS = 500


@blueprint.before_request
def _require_operator() -> Any:
    if request.endpoint == "status.metrics":
        return None
    settings = parts.settings()
    if not settings.operator_password:
        abort(404, "The status page is off: set TOKENKEEPER_OPERATOR_PASSWORD to turn it on.")
    auth = request.authorization
    if (
        auth is None or auth.type != "basic"
        or not hmac.compare_digest((auth.username or "").encode(), settings.operator_user.encode())
        or not hmac.compare_digest((auth.password or "").encode(), settings.operator_password.encode())
    ):
        return Response("Operator credentials required.", 401,
                        {"WWW-Authenticate": 'Basic realm="tokenkeeper status", charset="UTF-8"'})
    return None


@blueprint.get("/status")
def page() -> Any:
    rows = by_severity(overview(parts.runtime().store, time.time()))
    counts = {status: sum(1 for row in rows if row.status == status) for status in {r.status for r in rows}}
    wanted = request.args.get("status", "")
    shown = [row for row in rows if row.status == wanted] if wanted else rows
    return render_template(
        "status.html", rows=shown[:PAGE_ROWS], total=len(rows), matching=len(shown), wanted=wanted,
        counts=counts, duration=duration, form_token=_form_token(), queued=request.args.get("queued", ""),
        connect_links=_connect_links(shown[:PAGE_ROWS]),
    )


def _connect_links(rows: list[IntegrationRow]) -> dict[str, str]:
    """A fresh signed link per authorization code row (made on each view; nothing is stored)."""
    settings, now = parts.settings(), time.time()
    return {row.name: url_for("oauth.authorize", name=row.name, t=link_token(settings, row.name, now=now))
            for row in rows if row.can_authorize}


@blueprint.post("/status/refresh/<name>")
def refresh_now(name: str) -> Any:
    if not hmac.compare_digest(request.form.get("token", ""), _form_token()):
        abort(400, "This form is out of date or did not come from the status page; reload the page.")
    if not parts.runtime().store.exists(name):
        abort(404, f"There is no integration named {name!r}.")
    settings = parts.settings()
    parts.celery().send_task(REFRESH_TASK, args=[name], queue=settings.queue)
    return redirect(url_for("status.page", queued=name), 303)


@blueprint.get("/metrics")
def metrics() -> Any:
    return Response(exposition(parts.runtime().store), mimetype="text/plain; version=0.0.4")


def _form_token() -> str:
    settings = parts.settings()
    return hmac.new(settings.operator_password.encode(), b"status-page-form:" + settings.operator_user.encode(),
                    hashlib.sha256).hexdigest()
