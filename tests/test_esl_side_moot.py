"""EslSide's channel workers without a switch: operations that meet a channel already gone."""

from __future__ import annotations

from typing import Any

import gevent
import pytest

from esl_bridge import config
from esl_bridge.core import call as c
from esl_bridge.esl.control import EslCommandError
from esl_bridge.esl.orphans import GatewayIdentity
from esl_bridge.gateway.esl_side import ChannelOp, EslSide, channel_gone


class Sink:
    def __init__(self) -> None:
        self.failed: list[tuple[ChannelOp, str]] = []

    def operation_failed(self, op: ChannelOp, error: str) -> None:
        self.failed.append((op, error))

    def __getattr__(self, name: str) -> Any:  # the other reports are not expected here
        raise AssertionError(f"unexpected report {name}")


class Session:
    """A socket session whose `set` meets a channel that has just gone, or another error."""

    def __init__(self, reply: str) -> None:
        self.reply = reply
        self.done: list[str] = []

    def set_var(self, name: str, value: str) -> None:
        raise EslCommandError("execute set", self.reply)

    def pre_answer(self) -> None:
        self.done.append("pre_answer")


@pytest.mark.parametrize(
    ("reply", "reported"),
    [
        ("-ERR invalid session id [5e1f0000-0000-4000-8000-000000000001]", False),
        ("-ERR No such channel!", False),
        ("-ERR no reply", True),
    ],
)
def test_a_command_on_a_channel_that_just_went_is_not_a_call_failure(
    reply: str, reported: bool
) -> None:
    settings = config.from_text("[auth]\nopen_mode = 1\n", "<unit>")
    sink = Sink()
    side = EslSide(settings.esl, settings.socket, sink, identity=GatewayIdentity("unit", "0000"))
    session = Session(reply)
    side._sessions["u-1"] = session  # type: ignore[assignment]
    side.submit(c.SetChannelVar("call-1", "u-1", "rtp_autoflush", "true"))
    side.submit(c.PreAnswer("call-1", "u-1"))
    with gevent.Timeout(5):
        while session.done != ["pre_answer"]:
            gevent.sleep(0.01)
    # The next operation still ran, in order; only a real failure is reported.
    assert [op for op, _error in sink.failed] == (
        [c.SetChannelVar("call-1", "u-1", "rtp_autoflush", "true")] if reported else []
    )
    assert channel_gone(reply) is not reported


def test_an_operation_for_a_socket_session_that_has_ended_is_moot() -> None:
    settings = config.from_text("[auth]\nopen_mode = 1\n", "<unit>")
    sink = Sink()
    side = EslSide(settings.esl, settings.socket, sink, identity=GatewayIdentity("unit", "0000"))
    side._ended_sessions["gone"] = None  # its session loop has finished
    side.submit(c.PreAnswer("call-1", "gone"))
    side.submit(c.PreAnswer("call-2", "never-had-one"))
    with gevent.Timeout(5):
        while not sink.failed:
            gevent.sleep(0.01)
    # Only the channel that never had a socket session is a failure of its call.
    assert [op.call_id for op, _error in sink.failed] == ["call-2"]
