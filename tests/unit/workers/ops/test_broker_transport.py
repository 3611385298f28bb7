"""The kombu internals workers/ops/broker_transport.py relies on are there, as the workaround expects them.

The workaround overrides a private method of kombu's Redis QoS and clears a private attribute; a kombu release
that renames either would silently bring back the worker crash on a Redis restart. These tests fail first.
"""

from __future__ import annotations

import inspect
import logging
from collections import OrderedDict
from types import SimpleNamespace

import pytest
import redis
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual

from workers.ops import broker_transport


def test_restore_unacked_once_keeps_its_name_and_signature() -> None:
    """kombu's Redis QoS still has ``restore_unacked_once(self, stderr=None)``, the method the workaround wraps."""
    method = kombu_redis.QoS.restore_unacked_once
    assert list(inspect.signature(method).parameters) == ["self", "stderr"]
    assert inspect.signature(method).parameters["stderr"].default is None
    ours = inspect.signature(broker_transport.QoS.restore_unacked_once)
    assert list(ours.parameters) == ["self", "stderr"]


def test_closing_a_channel_goes_through_restore_unacked_once() -> None:
    """A closing channel hands back its messages through the QoS's ``restore_unacked_once``, so ours is called."""
    assert "self._qos.restore_unacked_once()" in inspect.getsource(virtual.Channel.close)


@pytest.mark.parametrize("failure", [AttributeError("'NoneType' object has no attribute 'x'"), redis.ConnectionError()])
def test_a_failed_hand_back_is_logged_and_forgotten_through_kombus_internals(
    failure: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    """kombu's ``restore_unacked_once`` reaches ``restore_unacked`` with the messages in ``_delivered``; when that
    fails as with Redis down, the override returns None, clears ``_delivered`` and logs a warning."""

    class Unreachable(broker_transport.QoS):
        def restore_unacked(self, client: object = None) -> None:
            raise failure

    qos = Unreachable(SimpleNamespace(do_restore=True), prefetch_count=1)
    assert isinstance(qos._delivered, OrderedDict)
    qos._delivered["tag"] = "message"
    with caplog.at_level(logging.WARNING, logger=broker_transport.__name__):
        assert qos.restore_unacked_once() is None
    assert not qos._delivered
    assert "could not hand back waiting messages" in caplog.text


def test_the_transport_plugs_our_qos_in_through_kombus_class_attributes() -> None:
    """kombu finds the channel class as ``Transport.Channel`` and the QoS as ``Channel.QoS``; ours are wired there."""
    assert kombu_redis.Transport.Channel is kombu_redis.Channel and kombu_redis.Channel.QoS is kombu_redis.QoS
    assert broker_transport.Transport.Channel is broker_transport.Channel
    assert broker_transport.Channel.QoS is broker_transport.QoS
    assert issubclass(broker_transport.QoS, kombu_redis.QoS)
