"""``create_app(settings=None)``: the Flask app, its extensions, blueprints and error pages."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from flask import Flask, Response

from config import Settings, load_settings, local_environ
from workers.ops import tracing

if TYPE_CHECKING:
    from celery import Celery

    from workers.engine.runtime import Runtime

# No scripts at all; styles only from our own static file.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
# Request bodies: the status page's forms carry one token.
MAX_REQUEST_BODY = 16 * 1024


def create_app(
    settings: Settings | None = None, *, runtime: Runtime | None = None, celery: Celery | None = None
) -> Flask:
    from workers.celery_app import create_celery
    from workers.engine.runtime import build_runtime

    settings = settings or load_settings(local_environ(os.environ))
    tracing.setup(settings)
    app = Flask(__name__)
    https = settings.public_url.startswith("https://")
    app.config.update(
        SESSION_COOKIE_SECURE=https,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        PREFERRED_URL_SCHEME="https" if https else "http",
        # No page takes more than a one-field form: anything bigger is a 413, never read into memory.
        MAX_CONTENT_LENGTH=MAX_REQUEST_BODY,
        MAX_FORM_MEMORY_SIZE=MAX_REQUEST_BODY,
        MAX_FORM_PARTS=20,
    )
    app.extensions["tokenkeeper"] = {
        "settings": settings,
        "runtime": runtime or build_runtime(settings),
        "celery": celery or create_celery(settings),
    }
    from callback_app import errors, health, oauth, status

    app.register_blueprint(health.blueprint)
    app.register_blueprint(oauth.blueprint)
    app.register_blueprint(status.blueprint)
    errors.register(app)
    app.after_request(_security_headers)
    return app


def _security_headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers.setdefault("Cache-Control", "no-store")
    return response
