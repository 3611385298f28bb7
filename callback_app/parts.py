"""Access to what the factory put in ``app.extensions``."""

from __future__ import annotations

from typing import Any

from flask import current_app

from config import Settings


def settings() -> Settings:
    return current_app.extensions["tokenkeeper"]["settings"]


def runtime() -> Any:
    return current_app.extensions["tokenkeeper"]["runtime"]


def celery() -> Any:
    return current_app.extensions["tokenkeeper"]["celery"]
