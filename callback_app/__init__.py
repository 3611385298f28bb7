"""The callback app: OAuth redirects, health and status, as a Flask factory."""

from callback_app.factory import create_app

__all__ = ["create_app"]
