"""How worker and beat logs read: JSON objects when asked (TOKENKEEPER_LOG_FORMAT=json), and
without Celery's routine lines about the scheduling tick, which would bury the one line per refresh."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

# Structured fields our log calls pass in ``extra``; they become keys of their own.
FIELDS = ("integration", "outcome", "status", "duration", "lateness")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            if hasattr(record, name):
                data[name] = getattr(record, name)
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


# Tasks (and beat's entry) that run every few seconds: their "received", "succeeded" and "sending due
# task" lines say nothing the refresh lines do not.
ROUTINE = ("tokenkeeper.schedule_refreshes", "tokenkeeper.refresh_batch", "tokenkeeper-schedule-refreshes")


class RoutineFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.INFO or not record.name.startswith("celery"):
            return True
        message = record.getMessage()
        return not any(name in message for name in ROUTINE)


def configure(logger: logging.Logger, *, json_lines: bool, quiet_routine: bool) -> None:
    for handler in logger.handlers:
        if json_lines:
            handler.setFormatter(JsonFormatter())
        if quiet_routine and not any(isinstance(f, RoutineFilter) for f in handler.filters):
            handler.addFilter(RoutineFilter())
