"""tokenkeeper's worker side: plain domain modules, the Celery app and its tasks."""
