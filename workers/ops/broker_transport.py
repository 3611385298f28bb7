"""kombu's Redis transport, surviving a Redis restart with messages waiting in the worker.

When the broker connection drops, kombu closes the channel and tries to put the
worker's unacknowledged messages (our countdown refreshes) back on the queue. With
Redis down that cannot work, and in kombu 5.7 it fails with an AttributeError that
stops the whole worker ("Unrecoverable error"). Here the failure is logged and the
worker reconnects. Nothing is lost: the messages are still in Redis's unacked hash
(restored after ``visibility_timeout``), and the scheduler re-queues any refresh
still unfinished ``TOKENKEEPER_LOST_AFTER`` seconds after it could run.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from kombu.transport import redis as kombu_redis

log = logging.getLogger(__name__)


class QoS(kombu_redis.QoS):
    def restore_unacked_once(self, stderr: Any = None) -> Any:
        try:
            return super().restore_unacked_once(stderr)
        except (AttributeError, redis.ConnectionError, redis.TimeoutError) as exc:
            self._delivered.clear()
            log.warning(
                "could not hand back waiting messages while the broker is down (%s); "
                "they return after the visibility timeout, refreshes sooner",
                type(exc).__name__,
            )
            return None


class Channel(kombu_redis.Channel):
    QoS = QoS


class Transport(kombu_redis.Transport):
    Channel = Channel
