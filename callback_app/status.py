"""``/status``: integrations for operators, behind basic auth; ``/status/<name>``: one of them; ``/metrics``.

The list is a page of the index (:mod:`workers.engine.overview`): ``?q=`` a name prefix, ``?status=``,
``?grant=`` and ``?provider=`` filters (combinable), 100 rows in name order, ``?after=`` / ``?before=``
a name for the next / previous page. The counts by status lead the page, the ones needing a person
linked, so those are a click away however many integrations there are.

An integration's own page has its buttons. The pages have no scripts: Refresh now is a form (POST,
with a token derived from the operator password so another site cannot submit it), Connect /
Reconnect is a signed authorization link (``/oauth/authorize/<name>?t=…``, default lifetime, for
the connected account) that the operator opens or hands on; it is made only there, when that page
is shown.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, Response, abort, redirect, render_template, request, url_for

from callback_app import health, parts
from callback_app.rows import rows_html
from workers.engine.journal import utc
from workers.engine.links import link_token
from workers.engine.overview import (
    NONE_PROVIDER,
    SEVERITY,
    IntegrationRow,
    Query,
    detail,
    duration,
    listing,
    parse_query,
    provider_title,
)
from workers.engine.spec import GRANT_TYPES
from workers.errors import NotFoundError, QueryError
from workers.ops.metrics import exposition
from workers.store import HISTORY_LENGTH, Status

blueprint = Blueprint("status", __name__)

REFRESH_TASK = "tokenkeeper.refresh_integration"
# The filters a list link carries on to the next page, as the query string names them.
FILTER_ARGS = ("q", "status", "grant", "provider")
# The statuses a person has to look at, in that order.
ATTENTION = (Status.NEEDS_REAUTH, Status.RETRYING)


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
    wanted = {arg: request.args.get(arg, "") for arg in FILTER_ARGS}
    problem = ""
    try:
        query = parse_query(
            prefix=wanted["q"],
            status=wanted["status"],
            grant=wanted["grant"],
            provider=wanted["provider"],
            after=request.args.get("after", ""),
            before=request.args.get("before", ""),
        )
    except QueryError as error:
        # The page again, unfiltered, with what was wrong above it.
        problem, wanted, query = str(error), dict.fromkeys(FILTER_ARGS, ""), Query()
    now = time.time()
    shown = listing(parts.runtime().store, query, now)
    index = shown.page
    statuses = index.counts("status")
    carried: dict[str, Any] = {arg: value for arg, value in wanted.items() if value}
    # Names have only letters, digits, _ and - (spec.py): a row's link is this path and the name as it is.
    path = url_for("status.integration", name="-")[:-1]
    body = render_template(
        "status.html",
        rows=shown.rows,
        rows_html=rows_html(shown.rows, path),
        index=index,
        wanted=wanted,
        statuses=sorted(statuses.items(), key=lambda item: (SEVERITY.get(item[0], 4), item[0])),
        attention=[(status, statuses[status]) for status in ATTENTION if statuses.get(status)],
        grants=[(grant, count) for grant, count in sorted(index.counts("grant").items()) if grant in GRANT_TYPES],
        providers=_provider_choices(index.counts("provider")),
        total=sum(statuses.values()),
        problem=problem,
        first_link=_list_link(carried),
        previous_link=_list_link({**carried, "before": index.names[0]}) if index.more_before else "",
        next_link=_list_link({**carried, "after": index.names[-1]}) if index.more_after else "",
        next_count=min(index.matching - index.position - len(index.names), len(index.names)),
    )
    return body, 400 if problem else 200


@blueprint.get("/status/<name>")
def integration(name: str) -> Any:
    now = time.time()
    shown = detail(parts.runtime().store, name, now)
    if shown is None:
        raise NotFoundError(f"There is no integration named {name!r}.")
    return render_template(
        "integration.html",
        item=shown,
        row=shown.row,
        queued=bool(request.args.get("queued")),
        history_length=HISTORY_LENGTH,
        duration=duration,
        utc=utc,
        form_token=_form_token(),
        connect_link=_connect_link(shown.row, now),
    )


def _list_link(params: dict[str, str]) -> str:
    # Relative to /status itself (url_for costs more than the rest of a link, and a page has several).
    return "?" + urlencode(params) if params else "?"


def _provider_choices(counts: dict[str, int]) -> list[tuple[str, str, int]]:
    """(filter value, label, count) of each provider that has integrations; those with none last."""
    named = sorted(
        ((provider, provider_title(provider) or provider, count) for provider, count in counts.items() if provider),
        key=lambda choice: choice[1].lower(),
    )
    unnamed = [(NONE_PROVIDER, "no preset", counts[""])] if counts.get("") else []
    return named + unnamed


def _connect_link(row: IntegrationRow, now: float) -> str:
    """A fresh signed link for an authorization code integration (made on each view; nothing is stored)."""
    if not row.can_authorize:
        return ""
    return url_for("oauth.authorize", name=row.name, t=link_token(parts.settings(), row.name, now=now))


@blueprint.post("/status/refresh/<name>")
def refresh_now(name: str) -> Any:
    if not hmac.compare_digest(request.form.get("token", ""), _form_token()):
        abort(400, "This form is out of date or did not come from the status page; reload the page.")
    if not parts.runtime().store.exists(name):
        abort(404, f"There is no integration named {name!r}.")
    settings = parts.settings()
    parts.celery().send_task(REFRESH_TASK, args=[name], queue=settings.queue)
    return redirect(url_for("status.integration", name=name, queued=1), 303)


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
