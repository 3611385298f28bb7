"""``create_app(config=None)``: the Flask app, its extensions and blueprints."""

from __future__ import annotations

import os
from typing import Any

from flask import Flask

from config import Settings, load_settings


def create_app(settings: Settings | None = None, *, runtime: Any = None, celery: Any = None) -> Flask:
    from workers.celery_app import create_celery
    from workers.runtime import build_runtime

    settings = settings or load_settings(os.environ)
    app = Flask(__name__)
    app.extensions["tokenkeeper"] = {
        "settings": settings,
        "runtime": runtime or build_runtime(settings),
        "celery": celery or create_celery(settings),
    }
    from callback_app import health

    app.register_blueprint(health.blueprint)
    return app
