"""``/status``: every integration for operators, behind basic auth; ``/metrics`` for Prometheus.

The page has no scripts: Refresh now is a form (POST, with a token derived from the
operator password so another site cannot submit it), Connect / Reconnect is a signed
authorization link (``/oauth/authorize/<name>?t=…``, default lifetime, for the connected
account) that the operator opens or hands on.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any

from flask import Blueprint, Response, abort, redirect, render_template, request, url_for

from callback_app import health, parts
from workers.engine.links import link_token
from workers.engine.overview import IntegrationRow, by_severity, duration, overview
from workers.ops.metrics import exposition

blueprint = Blueprint("status", __name__)

REFRESH_TASK = "tokenkeeper.refresh_integration"
# Rows on one page: thousands of integrations stay readable, and the ones needing attention come first.
PAGE_ROWS = 500


@blueprint.before_request
def _require_operator() -> Any:
    settings = parts.settings()
    if request.endpoint == "status.metrics" and settings.metrics_public:
        return None  # TOKENKEEPER_METRICS_PUBLIC: a scraper on a private network, without the login
    if not settings.operator_password:
        abort(404, "The status page and metrics are off: set TOKENKEEPER_OPERATOR_PASSWORD to turn them on.")
    user, password = _basic_credentials(request.headers.get("Authorization", "")) or (b"", b"")
    # Both compared, as UTF-8 bytes, whatever the first one says: no early exit to time.
    user_ok = hmac.compare_digest(user, settings.operator_user.encode())
    password_ok = hmac.compare_digest(password, settings.operator_password.encode())
    if not (user_ok and password_ok):
        return Response(
            "Operator credentials required.",
            401,
            {"WWW-Authenticate": 'Basic realm="tokenkeeper status", charset="UTF-8"'},
        )
    return None


def _basic_credentials(header: str) -> tuple[bytes, bytes] | None:
    """User and password of a Basic ``Authorization`` header as bytes, or None when it is not one.

    Read here rather than by werkzeug, which raises on non-ASCII base64 input; the
    bytes are compared as they are, so a password that is not UTF-8 just does not match.
    """
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip().encode("ascii"), validate=True)
    except ValueError:  # binascii.Error and UnicodeEncodeError are ValueErrors
        return None
    user, colon, password = decoded.partition(b":")
    return (user, password) if colon else None


@blueprint.get("/status")
def page() -> Any:
    rows = by_severity(overview(parts.runtime().store, time.time()))
    counts = {status: sum(1 for row in rows if row.status == status) for status in {r.status for r in rows}}
    wanted = request.args.get("status", "")
    shown = [row for row in rows if row.status == wanted] if wanted else rows
    return render_template(
        "status.html",
        rows=shown[:PAGE_ROWS],
        total=len(rows),
        matching=len(shown),
        wanted=wanted,
        counts=counts,
        duration=duration,
        form_token=_form_token(),
        queued=request.args.get("queued", ""),
        connect_links=_connect_links(shown[:PAGE_ROWS]),
    )


def _connect_links(rows: list[IntegrationRow]) -> dict[str, str]:
    """A fresh signed link per authorization code row (made on each view; nothing is stored)."""
    settings, now = parts.settings(), time.time()
    return {
        row.name: url_for("oauth.authorize", name=row.name, t=link_token(settings, row.name, now=now))
        for row in rows
        if row.can_authorize
    }


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
    # The latest health answer: a scrape waits for a probe only when this process has none fresh.
    text = exposition(parts.runtime().store, lead=parts.settings().refresh_lead, health=health.current().checks)
    return Response(text, mimetype="text/plain; version=0.0.4")


def _form_token() -> str:
    settings = parts.settings()
    return hmac.new(
        settings.operator_password.encode(), b"status-page-form:" + settings.operator_user.encode(), hashlib.sha256
    ).hexdigest()
