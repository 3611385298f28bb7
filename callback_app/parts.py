"""Access to what the factory put in ``app.extensions``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import current_app

from config import Settings

if TYPE_CHECKING:
    from celery import Celery

    from workers.engine.runtime import Runtime


def settings() -> Settings:
    return current_app.extensions["tokenkeeper"]["settings"]


def runtime() -> Runtime:
    return current_app.extensions["tokenkeeper"]["runtime"]


def celery() -> Celery:
    return current_app.extensions["tokenkeeper"]["celery"]
